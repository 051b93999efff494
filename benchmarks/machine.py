"""What every benchmark prints beside its figures: the machine, the Python and the date; and the result file a
latency benchmark writes (benchmarks/out/latency/NAME.json, read by `huaxiang report`)."""
from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

LATENCY_OUT = Path(__file__).resolve().parent / "out" / "latency"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def stamp(device: str | None = None) -> str:
    """e.g. "CPU (AMD EPYC, 2 cores); Python 3.11.7; 2026-11-24 21:58 UTC"."""
    usable = len(os.sched_getaffinity(0))
    pinned = f", this run pinned to {usable}" if usable < (os.cpu_count() or usable) else ""
    return (f"{device or f'CPU ({cpu_name()}, {os.cpu_count()} cores{pinned})'}; Python {platform.python_version()}; "
            f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")


def latency_result(benchmark: str, what: str, ms, **extra) -> dict:
    """One latency run: what was measured, its p50 / p90 / p99 / max in milliseconds, the machine and date, and any
    `extra` figures (e.g. achieved_per_s, errors)."""
    import numpy as np
    ms = np.asarray(ms, float)
    return {"benchmark": benchmark, "what": what, "machine": stamp(), "samples": int(ms.size),
            **{f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 90, 99)}, "max_ms": float(ms.max()), **extra}


def save_latency(result: dict, name: str, folder: Path = LATENCY_OUT) -> Path:
    """Writes `result` to folder/NAME.json and prints its percentiles."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(result, indent=1))
    print(", ".join(f"{k.removesuffix('_ms')} {result[k]:.2f} ms" for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms"))
          + f"; wrote {path}")
    return path
