"""Benchmark: what recording exposures costs a recommendation — GET /v1/users/{id}/recommendations at a fixed rate
against `huaxiang serve` with exposures recorded (the default) and with `--no-exposures`, in one run, the two
servers taking turns. Target: exposures add <= 0.3 ms to the p99.

    .venv/bin/python benchmarks/exposure_cost.py [--rate 200] [--seconds 15] [--turns 3] [--writes 30]

The store, keys, users and the open-loop load are those of benchmarks/api_load.py (Taobao slice plus one heavy
shopper, item-KNN; latencies from the scheduled time). Each turn starts a fresh server of each kind, warms it, and
drives it for `--seconds`; the figures pool the turns of each kind, and the p99 added is also given turn by turn
(each turn's two servers ran back to back, so they saw about the same load from whatever else the machine runs:
the load average is printed). The exposures written are counted afterwards (every answer's items must be there).

Then the write itself, in this process on the same store: `--writes` times a second's exposures (`--rate` answers
of 10 items) stored by `store_rows` as it is now, and by the statements it ran before (forgotten users filtered in
SQL — a SHA-256 of every row — the result fetched back into Arrow, then inserted): the writing thread's CPU per
write, its wall time alone, and its wall time while another thread runs Python non-stop. DuckDB takes the
interpreter lock back between the steps of each statement, and each time it must wait for the busy thread's
switch interval (5 ms) and then stops it: (busy wall - wall alone) / 5 ms counts those hand-offs, which are what a
request thread served during a write suffers. Medians. Writes benchmarks/out/latency/exposure_cost.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import uvloop

from api_load import HEAVY, RECOMMEND, build, drive, errors
from machine import LATENCY_OUT, stamp
from served import create_key, serving


def former_store_rows(con, rows) -> int:
    """The write as it was (for comparison): the forgotten users' rows filtered out in SQL, fetched back, inserted."""
    from huaxiang.experiments.exposures import table_of
    kept = con.from_arrow(table_of(rows)).filter(
        "user_id IS NULL OR sha256(user_id) NOT IN (SELECT id_hash FROM forgotten_users)").fetch_arrow_table()
    if kept.num_rows:
        con.from_arrow(kept).insert_into("exposures")
    return kept.num_rows


def write_cost(db: str, users: list[str], rate: float, writes: int) -> dict:
    """The write of a second's exposures, now and as it was: CPU and wall per write, alone and beside a busy thread."""
    from huaxiang import store
    from huaxiang.experiments.exposures import rows_of, store_rows
    con = store.connect(db)
    rng = np.random.default_rng(1)

    def second() -> list[tuple]:
        rows = []
        for n, u in enumerate(rng.choice(users, int(rate))):
            rows += rows_of(f"{rng.integers(1 << 62):032x}", str(u), "recommendations",
                            [{"item_id": f"taobao:{i}", "score": 1.0 / (i + 1)} for i in rng.integers(0, 10**6, 10)],
                            "itemknn", "1", latency_ms=2.5)
        return rows

    busy, stop = threading.Event(), threading.Event()

    def spin():
        while not stop.is_set():
            if busy.is_set():
                sum(range(1000))
            else:
                time.sleep(0.001)
    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    out = {}
    try:
        for name, write in (("now", store_rows), ("before", former_store_rows)):
            cur = con.cursor()
            write(cur, second())  # (warm)
            alone, beside = [], []
            for n in range(2 * writes):
                rows = second()
                if n % 2:
                    busy.set()
                    time.sleep(0.01)
                wall, cpu = time.perf_counter(), time.thread_time()
                write(cur, rows)
                (beside if n % 2 else alone).append((time.perf_counter() - wall, time.thread_time() - cpu))
                busy.clear()
                time.sleep(0.02)
            a, b = np.median(alone, axis=0) * 1e3, np.median(beside, axis=0) * 1e3
            out[name] = {"rows": len(rows), "cpu_ms": float(a[1]), "wall_ms": float(a[0]),
                         "wall_beside_busy_thread_ms": float(b[0]), "hand_offs": float((b[0] - a[0]) / 5.0)}
    finally:
        stop.set()
        con.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--writes", type=int, default=30, help="writes timed per way of writing (0: none)")
    args = ap.parse_args()
    cli = [sys.executable, "-m", "huaxiang.cli"]
    kinds = {"with exposures": [], "without": ["--no-exposures"]}
    lat = {k: [] for k in kinds}
    failed = {k: 0 for k in kinds}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "api.duckdb")
        print("building the store …", flush=True)
        build(db, cli, tmp)
        key = create_key(cli, db)
        import duckdb
        with duckdb.connect(db, read_only=True) as con:
            users = [u for (u,) in con.execute("SELECT user_id FROM profiles WHERE user_id <> ? ORDER BY user_id",
                                               [HEAVY]).fetchall()]
        rng = np.random.default_rng(0)
        paths = [f"/v1/users/{users[int(i)]}{RECOMMEND}" for i in rng.integers(0, len(users), 5000)]
        for turn in range(args.turns):
            for kind, options in kinds.items():
                with serving(cli, db, *options) as port:
                    uvloop.run(drive(port, key, paths, 200, 2, args.connections))  # warm-up
                    ms, statuses, _ = uvloop.run(drive(port, key, paths, args.rate, args.seconds, args.connections))
                lat[kind].append(ms)
                failed[kind] += errors(statuses)
                print(f"turn {turn + 1}, {kind}: p50 {np.percentile(ms, 50):.2f} ms, p90 {np.percentile(ms, 90):.2f} ms"
                      f", p99 {np.percentile(ms, 99):.2f} ms, {errors(statuses)} errors", flush=True)
            load.append(os.getloadavg()[0])
        with duckdb.connect(db, read_only=True) as con:
            recorded = con.execute("SELECT count(DISTINCT request_id) FROM exposures").fetchone()[0]
        writes = write_cost(db, users, args.rate, args.writes) if args.writes else {}
    pooled = {k: np.concatenate(v) for k, v in lat.items()}
    by_turn = [float(np.percentile(w, 99) - np.percentile(wo, 99)) for w, wo in zip(lat["with exposures"],
                                                                                    lat["without"])]
    result = {"benchmark": "exposure_cost", "machine": stamp(), "load_average_1min": load,
              "rate_per_s": args.rate, "seconds": args.seconds, "turns": args.turns,
              "answers_recorded": int(recorded),
              **{k.replace(" ", "_"): {"requests": int(v.size), "errors": failed[k],
                                       **{f"p{q}_ms": float(np.percentile(v, q)) for q in (50, 90, 99)}}
                 for k, v in pooled.items()}}
    result["p99_added_ms"] = result["with_exposures"]["p99_ms"] - result["without"]["p99_ms"]
    result["p50_added_ms"] = result["with_exposures"]["p50_ms"] - result["without"]["p50_ms"]
    result["p99_added_ms_by_turn"] = by_turn
    result["p99_added_ms_median_of_turns"] = float(np.median(by_turn))
    result["write"] = writes
    print(f"GET recommendations at {args.rate:g}/s, {args.turns} × {args.seconds:g} s each: with exposures p50 "
          f"{result['with_exposures']['p50_ms']:.2f} / p90 {result['with_exposures']['p90_ms']:.2f} / p99 "
          f"{result['with_exposures']['p99_ms']:.2f} ms; without {result['without']['p50_ms']:.2f} / "
          f"{result['without']['p90_ms']:.2f} / {result['without']['p99_ms']:.2f} ms; p99 added "
          f"{result['p99_added_ms']:+.2f} ms pooled, by turn {', '.join(f'{d:+.2f}' for d in by_turn)} (median "
          f"{result['p99_added_ms_median_of_turns']:+.2f}; target <= 0.3 ms); {recorded:,} answers recorded; "
          f"errors {failed['with exposures']} / {failed['without']}; load average "
          f"{', '.join(f'{x:.1f}' for x in load)}")
    for name, w in writes.items():
        print(f"write of {w['rows']:,} rows ({name}): CPU {w['cpu_ms']:.2f} ms, wall {w['wall_ms']:.2f} ms alone, "
              f"{w['wall_beside_busy_thread_ms']:.2f} ms beside a busy Python thread (~{w['hand_offs']:.1f} hand-offs)")
    print(stamp())
    LATENCY_OUT.mkdir(parents=True, exist_ok=True)
    (LATENCY_OUT / "exposure_cost.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {LATENCY_OUT / 'exposure_cost.json'}")
    if failed["with exposures"] or failed["without"]:
        sys.exit("some requests failed: the figures are not comparable")


if __name__ == "__main__":
    main()
