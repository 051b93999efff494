"""Benchmark: the profile build from Parquet on DuckDB and on Spark local[2], at growing sizes.

    .venv/bin/python benchmarks/scale.py [--sizes 1000000 10000000 50000000] [--engines duckdb spark]
                                         [--workdir /tmp/huaxiang-scale] [--memory-limit 4GB]
                                         [--build-args "--scores all"] [--name scale_scores]

For each size: synthetic events (`synthetic.py`, the spine benchmark's generator) are ingested into a store once
and exported as Parquet partitioned by day (`huaxiang export`); then `huaxiang build --engine E --input … --output
…` (plus --build-args) runs as its own process per engine, and the figures are its wall time, events per second
and peak memory — the resident memory of the whole process tree summed (for Spark: the Python driver, the JVM and
its Python workers), sampled every 0.2 s. Prints a Markdown table, writes benchmarks/out/NAME.json and NAME.png.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from machine import stamp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def tree_rss_mib(pid: int) -> float:
    """Resident memory of `pid` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(d.name))
            rss[int(d.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(children.get(p, []))
    return total / 2**20


def run_measured(cmd: list[str]) -> tuple[float, float, str]:
    """Runs `cmd`; returns (wall seconds, peak tree RSS MiB, stderr tail)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0.0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss_mib(proc.pid))
            time.sleep(0.2)
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t
    th.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {err.strip().splitlines()[-1] if err.strip() else proc.returncode}")
    return wall, peak[0], out.strip()


def prepare(size: int, workdir: Path) -> Path:
    """Synthetic CSV → store → Parquet (once per size; reused by later runs)."""
    d = workdir / str(size)
    parquet = d / "parquet"
    if (parquet / "events").exists():
        return parquet
    sys.path.insert(0, str(HERE))
    from synthetic import generate
    from huaxiang.ingest import ingest_file
    from huaxiang.scale import export
    from huaxiang.store import connect
    print(f"  preparing {size:,} events …", flush=True)
    events, items = generate(size, str(d), seed=0)
    con = connect(str(d / "store.duckdb"))
    con.execute(f"SET temp_directory = '{d / 'tmp'}'")
    con.execute("SET memory_limit = '6GB'")
    ingest_file(con, items, "csv", table="items")
    ingest_file(con, events, "csv", table="events")
    export(con, str(parquet))
    con.close()
    for f in (events, items, d / "store.duckdb"):
        os.remove(f)
    return parquet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000, 50_000_000])
    ap.add_argument("--engines", nargs="+", default=["duckdb", "spark"])
    ap.add_argument("--workdir", default="/tmp/huaxiang-scale")
    ap.add_argument("--memory-limit", default=None, help="DuckDB engine's memory cap (it spills beyond)")
    ap.add_argument("--build-args", default="", help="more options for each build, e.g. \"--scores all\"")
    ap.add_argument("--name", default="scale", help="name of the result files in benchmarks/out/")
    args = ap.parse_args()
    workdir = Path(args.workdir)
    rows = []
    print(f"scale benchmark {args.build_args}; {stamp()}", flush=True)
    for size in args.sizes:
        parquet = prepare(size, workdir)
        for engine in args.engines:
            out = workdir / str(size) / f"out_{engine}"
            subprocess.run(["rm", "-rf", str(out)], check=True)
            cmd = [sys.executable, "-m", "huaxiang.cli", "build", "--engine", engine, "--input", str(parquet),
                   "--output", str(out)] + (["--memory-limit", args.memory_limit] if args.memory_limit and
                                           engine == "duckdb" else []) + args.build_args.split()
            try:
                wall, peak, said = run_measured(cmd)
                row = {"size": size, "engine": engine, "wall_s": wall, "events_per_s": size / wall,
                       "peak_mib": peak, "note": said.splitlines()[-1] if said else ""}
            except RuntimeError as exc:
                row = {"size": size, "engine": engine, "note": str(exc)[:200]}
            rows.append(row)
            print(f"  {size:>11,} {engine:7s} {row.get('wall_s', float('nan')):8.1f} s "
                  f"{row.get('events_per_s', float('nan')):>10,.0f} ev/s {row.get('peak_mib', float('nan')):8,.0f} MiB",
                  flush=True)
    print("\n| events | engine | wall | events/s | peak memory (process tree) |\n|---:|---|---:|---:|---:|")
    for r in rows:
        if "wall_s" in r:
            print(f"| {r['size']:,} | {r['engine']} | {r['wall_s']:.1f} s | {r['events_per_s']:,.0f} | "
                  f"{r['peak_mib']:,.0f} MiB |")
        else:
            print(f"| {r['size']:,} | {r['engine']} | failed: {r['note']} | | |")
    (HERE / "out").mkdir(exist_ok=True)
    (HERE / "out" / f"{args.name}.json").write_text(json.dumps({"machine": stamp(), "build_args": args.build_args,
                                                                "rows": rows}, indent=1))
    plot(rows, HERE / "out" / f"{args.name}.png")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for engine in sorted({r["engine"] for r in rows}):
        done = [r for r in rows if r["engine"] == engine and "wall_s" in r]
        a.plot([r["size"] for r in done], [r["wall_s"] for r in done], "o-", label=engine)
        b.plot([r["size"] for r in done], [r["peak_mib"] for r in done], "o-", label=engine)
    for ax, what in ((a, "wall time (s)"), (b, "peak memory (MiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("events")
        ax.set_ylabel(what)
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"huaxiang build from Parquet — {stamp()}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
