"""Benchmark: generate synthetic logs, ingest them into a fresh DuckDB store, build the profiles.

    .venv/bin/python benchmarks/ingest_profile.py --sizes 1000000,10000000

For each size, each phase (generate, ingest, profile) runs in a fresh Python process, so that its
peak memory (the process's peak resident set size, `ru_maxrss`, which includes DuckDB's native
memory) is measured on its own. DuckDB is capped with `SET memory_limit` (default 3GiB; the target
is a peak of at most 4 GiB per phase) and spills to a temp_directory under the work folder.

Prints a Markdown table (with the machine and the date) and writes the results as JSON to
benchmarks/out/ingest_profile.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone

from machine import cpu_name

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")
PHASES = ("generate", "ingest", "profile")


# ---------------------------------------------------------------- run inside the child process
def peak_mib() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def paths(workdir: str, size: int) -> dict[str, str]:
    d = os.path.join(workdir, str(size))
    return {"dir": d, "events": os.path.join(d, "events.csv"), "items": os.path.join(d, "items.csv"),
            "db": os.path.join(d, "store.duckdb"), "tmp": os.path.join(d, "duckdb_tmp")}


def open_store(p: dict[str, str], memory_limit: str, fresh: bool):
    from huaxiang.store import connect
    if fresh:
        for f in (p["db"], p["db"] + ".wal"):
            if os.path.exists(f):
                os.remove(f)
    shutil.rmtree(p["tmp"], ignore_errors=True)
    con = connect(p["db"])
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute(f"SET temp_directory = '{p['tmp']}'")
    return con


def phase_generate(size: int, p: dict[str, str], args) -> list[dict]:
    sys.path.insert(0, HERE)
    from synthetic import generate
    t = time.perf_counter()
    generate(size, p["dir"], seed=args.seed)
    wall = time.perf_counter() - t
    mib = (os.path.getsize(p["events"]) + os.path.getsize(p["items"])) / 2**20
    return [{"phase": "generate", "wall_s": wall, "events_per_s": size / wall, "peak_mib": peak_mib(),
             "note": f"CSV {mib:,.0f} MiB"}]


def phase_ingest(size: int, p: dict[str, str], args) -> list[dict]:
    from huaxiang.ingest.pipeline import ingest_file
    con = open_store(p, args.memory_limit, fresh=True)
    rows = []
    for table in ("items", "events"):
        t = time.perf_counter()
        report = ingest_file(con, p[table], "csv", table=table)
        wall = time.perf_counter() - t
        rows.append({"phase": f"ingest {table}", "wall_s": wall, "rows": report.rows_read,
                     "events_per_s": report.rows_read / wall if table == "events" else None,
                     "peak_mib": peak_mib(),
                     "note": f"{report.rows_read:,} rows read, {report.added.get(table, 0):,} added, "
                             f"{report.quarantined:,} quarantined"})
    con.execute("CHECKPOINT")
    con.close()
    rows[-1]["note"] += f"; store {os.path.getsize(p['db']) / 2**20:,.0f} MiB"
    return rows


def phase_profile(size: int, p: dict[str, str], args) -> list[dict]:
    try:
        from huaxiang.config import load_config
        from huaxiang.profile.build import build_profiles
    except ImportError as exc:  # the profile module is not written yet
        return [{"phase": "build profiles", "status": "not available", "note": f"{exc}"}]
    con = open_store(p, args.memory_limit, fresh=False)
    t = time.perf_counter()
    report = build_profiles(con, load_config())
    wall = time.perf_counter() - t
    n_events = con.execute("SELECT count(*) FROM events").fetchone()[0]
    con.close()
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in getattr(report, "seconds", {}).items())
    return [{"phase": "build profiles", "wall_s": wall, "events_per_s": n_events / wall, "peak_mib": peak_mib(),
             "note": f"{report.users:,} users" + (f"; {stages}" if stages else "")}]


def child(args) -> None:
    """Runs one phase and writes its result rows as JSON to args.result_file."""
    p = paths(args.workdir, args.size)
    os.makedirs(p["dir"], exist_ok=True)
    run = {"generate": phase_generate, "ingest": phase_ingest, "profile": phase_profile}[args.phase]
    try:
        rows = run(args.size, p, args)
    except Exception as exc:
        traceback.print_exc()
        rows = [{"phase": args.phase, "status": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                 "peak_mib": peak_mib()}]
    with open(args.result_file, "w") as f:
        json.dump(rows, f)


# ---------------------------------------------------------------- the driver
def machine() -> dict:
    info = {"cpu": cpu_name(), "cores": os.cpu_count(), "ram_gib": None}
    try:
        with open("/proc/meminfo") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemTotal"))
        info["ram_gib"] = round(kib / 2**20, 1)
    except (OSError, StopIteration):
        pass
    import duckdb
    import pyarrow
    info.update(python=platform.python_version(), duckdb=duckdb.__version__, pyarrow=pyarrow.__version__,
                os=platform.platform())
    return info


def run_phase(phase: str, size: int, args) -> list[dict]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_file = f.name
    cmd = [sys.executable, os.path.abspath(__file__), "--phase", phase, "--size", str(size),
           "--workdir", args.workdir, "--memory-limit", args.memory_limit, "--seed", str(args.seed),
           "--result-file", result_file]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd)
    try:
        rc = proc.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        rc = None
    wall = time.perf_counter() - t
    try:
        with open(result_file) as f:
            rows = json.load(f)
    except (OSError, ValueError):
        status = f"timed out after {args.timeout} s" if rc is None else f"process died (exit code {rc})"
        rows = [{"phase": phase, "status": status, "wall_s": wall}]
    finally:
        os.remove(result_file)
    for row in rows:
        row.setdefault("status", "ok")
        row["size"] = size
        row["process_wall_s"] = wall  # including interpreter start-up and imports
    return rows


def fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def markdown(results: list[dict], info: dict, args) -> str:
    lines = [f"Machine: {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB RAM "
             f"(Python {info['python']}, DuckDB {info['duckdb']}, pyarrow {info['pyarrow']})  ",
             f"Date: {info['date']}  ",
             f"DuckDB: SET memory_limit = '{args.memory_limit}', temp_directory under {args.workdir}; "
             "peak = peak RSS of the phase's own process",
             "",
             "| events | phase | status | wall (s) | events/s | peak RSS (MiB) | notes |",
             "|---:|---|---|---:|---:|---:|---|"]
    for r in results:
        lines.append(f"| {r['size']:,} | {r['phase']} | {r['status']} | {fmt(r.get('wall_s'), '.1f')} | "
                     f"{fmt(r.get('events_per_s'), ',.0f')} | {fmt(r.get('peak_mib'), ',.0f')} | {r.get('note', '')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000000,10000000",
                    help="comma-separated event counts (default: %(default)s)")
    ap.add_argument("--workdir", default=os.path.join(OUT, "work"),
                    help="where data, stores and DuckDB spill files go (default: %(default)s)")
    ap.add_argument("--phases", default=",".join(PHASES),
                    help="which phases to run (default: %(default)s); without generate, existing data is reused")
    ap.add_argument("--memory-limit", default="3GiB", help="DuckDB memory_limit (default: %(default)s)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per phase (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=os.path.join(OUT, "ingest_profile.json"), help="(default: %(default)s)")
    ap.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)  # internal: run one phase
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--result-file", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.workdir = os.path.abspath(args.workdir)
    if args.phase:
        return child(args)

    sizes = [int(float(s)) for s in args.sizes.split(",") if s.strip()]
    phases = [s.strip() for s in args.phases.split(",") if s.strip()]
    unknown = set(phases) - set(PHASES)
    if unknown:
        ap.error(f"--phases: unknown {sorted(unknown)} (expected {', '.join(PHASES)})")
    info = machine()
    info["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"DuckDB memory_limit = {args.memory_limit}, spilling to {args.workdir}/<size>/duckdb_tmp", flush=True)
    results = []
    for size in sizes:
        for phase in PHASES:
            if phase not in phases:
                continue
            print(f"== {size:,} events: {phase}", flush=True)
            rows = run_phase(phase, size, args)
            results += rows
            for r in rows:
                print(f"   {r['phase']}: {r['status']}, {fmt(r.get('wall_s'), '.1f')} s, "
                      f"peak {fmt(r.get('peak_mib'), ',.0f')} MiB {r.get('note', '')}", flush=True)
            if any(r["status"] != "ok" for r in rows) and phase != "profile":
                break  # no point ingesting data that is not there, or profiling a store that is not
    print()
    print(markdown(results, info, args))
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"machine": info, "memory_limit": args.memory_limit, "results": results}, f, indent=2)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
