"""What every benchmark prints beside its figures: the machine, the Python and the date."""
from __future__ import annotations

import os
import platform
from datetime import datetime, timezone


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
