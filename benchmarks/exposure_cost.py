"""Benchmark: what recording exposures costs a recommendation — GET /v1/users/{id}/recommendations at a fixed rate
against `huaxiang serve` with exposures recorded (the default) and with `--no-exposures`, in one run, the
servers taking turns; a second server without (A/A) measures the noise floor the same way. Target: exposures
add <= 0.3 ms to the p99 (the pooled difference, with a 95% bootstrap interval over requests).

    .venv/bin/python benchmarks/exposure_cost.py [--rate 200] [--seconds 15] [--turns 3] [--writes 30]

The store, keys, users and the open-loop load are those of benchmarks/api_load.py (Taobao slice plus one heavy
shopper, item-KNN; latencies from the scheduled time). Each turn starts a fresh server of each kind, warms it, and
drives it for `--seconds`; the figures pool the turns of each kind, and the p99 added is also given turn by turn
(each turn's two servers ran back to back, so they saw about the same load from whatever else the machine runs:
the load average is printed). The exposures written are counted afterwards (every answer's items must be there).

Then the write itself, in this process on the same store: `--writes` times a second's exposures (`--rate` answers
of 10 items) stored as now (`store_lines`: the answers' records through a spool file, one statement) and as before
(a tuple per item made into Arrow columns in the writing thread, forgotten users looked up from Python, the table
streamed into the INSERT): the writing thread's CPU per write, its wall time alone, and its wall time while another
thread runs Python non-stop. Each time the writer takes the interpreter lock back (DuckDB does between the steps
of a statement, and while it scans Python objects) it must wait for the busy thread's switch interval (5 ms) and
then stops it: (busy wall - wall alone) / 5 ms counts those hand-offs, which are what a
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


def former_write(con, answers: list[tuple]) -> int:
    """The write as it was (for comparison): one tuple per shown item, made into Arrow columns in the writing thread,
    forgotten users looked up by their hashes in Python, the Arrow table streamed into the INSERT."""
    import hashlib

    import pyarrow as pa
    import pyarrow.compute as pc
    rows = [(rid, ts, user, item["item_id"], pos, item["score"], "recommendations", "itemknn", "1", None, None, 2.5)
            for rid, ts, user, items in answers for pos, item in enumerate(items, start=1)]
    names = ("request_id", "ts", "user_id", "item_id", "position", "score", "surface", "model", "version",
             "experiment", "variant", "latency_ms")
    kinds = (pa.string(), pa.timestamp("us"), pa.string(), pa.string(), pa.int32(), pa.float64(), pa.string(),
             pa.string(), pa.string(), pa.string(), pa.string(), pa.float64())
    table = pa.table({n: pa.array(v, type=k) for n, k, v in zip(names, kinds, zip(*rows))})
    users = {hashlib.sha256(u.encode()).hexdigest(): u for u in pc.unique(table["user_id"]).to_pylist()}
    gone = [users[h] for (h,) in con.execute(
        "SELECT id_hash FROM forgotten_users WHERE id_hash IN (SELECT unnest(?))", [list(users)]).fetchall()]
    if gone:
        table = table.filter(pc.invert(pc.is_in(table["user_id"], value_set=pa.array(gone, pa.string()))))
    table = table.append_column("propensity", pa.nulls(table.num_rows, pa.float64()))
    con.from_arrow(table.to_reader()).insert_into("exposures")
    return table.num_rows


def write_cost(db: str, users: list[str], rate: float, writes: int) -> dict:
    """The write of a second's exposures, now and as it was: CPU and wall per write, alone and beside a busy thread
    (what the request path made — a record per answer now, a tuple per item before — is made beforehand)."""
    from datetime import datetime

    from huaxiang import store
    from huaxiang.experiments.exposures import record, store_lines
    con = store.connect(db)
    rng = np.random.default_rng(1)

    def second() -> list[tuple]:
        return [(f"{rng.integers(1 << 62):032x}", datetime.now(), str(u),
                 [{"item_id": f"taobao:{i}", "score": 1.0 / (i + 1)} for i in rng.integers(0, 10**6, 10)])
                for u in rng.choice(users, int(rate))]

    def records(answers: list[tuple]) -> list[str]:
        return [record(rid, user, "recommendations", items, "itemknn", "1", latency_ms=2.5, ts=ts)
                for rid, ts, user, items in answers]

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
        for name, prepare, write in (("now", records, store_lines), ("before", lambda answers: answers, former_write)):
            cur = con.cursor()
            write(cur, prepare(second()))  # (warm)
            alone, beside = [], []
            for n in range(2 * writes):
                made = prepare(second())
                if n % 2:
                    busy.set()
                    time.sleep(0.01)
                wall, cpu = time.perf_counter(), time.thread_time()
                rows = write(cur, made)
                (beside if n % 2 else alone).append((time.perf_counter() - wall, time.thread_time() - cpu))
                busy.clear()
                time.sleep(0.02)
            a, b = np.median(alone, axis=0) * 1e3, np.median(beside, axis=0) * 1e3
            out[name] = {"rows": rows, "cpu_ms": float(a[1]), "wall_ms": float(a[0]),
                         "wall_beside_busy_thread_ms": float(b[0]), "hand_offs": float((b[0] - a[0]) / 5.0)}
    finally:
        stop.set()
        con.close()
    return out


def p99_difference_interval(a: np.ndarray, b: np.ndarray, resamples: int = 1000) -> list[float]:
    """A 95% bootstrap interval (percentile, seeded) of p99(a) - p99(b), requests resampled within each."""
    rng = np.random.default_rng(0)
    diffs = [np.percentile(rng.choice(a, a.size), 99) - np.percentile(rng.choice(b, b.size), 99)
             for _ in range(resamples)]
    return [float(x) for x in np.percentile(diffs, [2.5, 97.5])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--writes", type=int, default=30, help="writes timed per way of writing (0: none)")
    args = ap.parse_args()
    cli = [sys.executable, "-m", "huaxiang.cli"]
    kinds = {"with exposures": [], "without": ["--no-exposures"], "without, again": ["--no-exposures"]}
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
              **{k.replace(", ", "_").replace(" ", "_"): {"requests": int(v.size), "errors": failed[k],
                                       **{f"p{q}_ms": float(np.percentile(v, q)) for q in (50, 90, 99, 99.9)}}
                 for k, v in pooled.items()}}
    result["p99_added_ms"] = result["with_exposures"]["p99_ms"] - result["without"]["p99_ms"]
    result["p50_added_ms"] = result["with_exposures"]["p50_ms"] - result["without"]["p50_ms"]
    result["p99_added_ms_by_turn"] = by_turn
    result["p99_added_ms_median_of_turns"] = float(np.median(by_turn))
    result["p99_added_ms_ci95"] = p99_difference_interval(pooled["with exposures"], pooled["without"])
    # the noise floor: two servers of the same kind (A/A), measured the same way
    result["p99_aa_ms"] = float(np.percentile(pooled["without, again"], 99) - np.percentile(pooled["without"], 99))
    result["p99_aa_ms_ci95"] = p99_difference_interval(pooled["without, again"], pooled["without"])
    result["write"] = writes
    print(f"GET recommendations at {args.rate:g}/s, {args.turns} × {args.seconds:g} s each: with exposures p50 "
          f"{result['with_exposures']['p50_ms']:.2f} / p90 {result['with_exposures']['p90_ms']:.2f} / p99 "
          f"{result['with_exposures']['p99_ms']:.2f} ms; without {result['without']['p50_ms']:.2f} / "
          f"{result['without']['p90_ms']:.2f} / {result['without']['p99_ms']:.2f} ms; p99 added "
          f"{result['p99_added_ms']:+.2f} ms pooled, by turn {', '.join(f'{d:+.2f}' for d in by_turn)} (median "
          f"{result['p99_added_ms_median_of_turns']:+.2f}), 95% interval "
          f"[{result['p99_added_ms_ci95'][0]:+.2f}, {result['p99_added_ms_ci95'][1]:+.2f}] (target <= 0.3 ms); "
          f"A/A (two servers without): {result['p99_aa_ms']:+.2f} ms [{result['p99_aa_ms_ci95'][0]:+.2f}, "
          f"{result['p99_aa_ms_ci95'][1]:+.2f}]; {recorded:,} answers recorded; "
          f"errors {failed['with exposures']} / {failed['without']} / {failed['without, again']}; load average "
          f"{', '.join(f'{x:.1f}' for x in load)}")
    for name, w in writes.items():
        print(f"write of {w['rows']:,} rows ({name}): CPU {w['cpu_ms']:.2f} ms, wall {w['wall_ms']:.2f} ms alone, "
              f"{w['wall_beside_busy_thread_ms']:.2f} ms beside a busy Python thread (~{w['hand_offs']:.1f} hand-offs)")
    print(stamp())
    LATENCY_OUT.mkdir(parents=True, exist_ok=True)
    (LATENCY_OUT / "exposure_cost.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {LATENCY_OUT / 'exposure_cost.json'}")
    if any(failed.values()):
        sys.exit("some requests failed: the figures are not comparable")


if __name__ == "__main__":
    main()
