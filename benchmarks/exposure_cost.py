"""Benchmark: what recording exposures costs a recommendation — GET /v1/users/{id}/recommendations at a fixed rate
against `huaxiang serve` with exposures recorded (the default) and with `--no-exposures`, in one run, the two
servers taking turns. Target: exposures add <= 0.3 ms to the p99.

    .venv/bin/python benchmarks/exposure_cost.py [--rate 200] [--seconds 20] [--turns 2]

The store, keys, users and the open-loop load are those of benchmarks/api_load.py (Taobao slice plus one heavy
shopper, item-KNN; latencies from the scheduled time). Each turn starts a fresh server of each kind, warms it, and
drives it for `--seconds`; the figures pool the turns of each kind. The exposures written are counted afterwards
(every answer's items must be there). Writes benchmarks/out/latency/exposure_cost.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import uvloop

from api_load import HEAVY, RECOMMEND, build, drive, errors
from machine import LATENCY_OUT, stamp
from served import create_key, serving


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--turns", type=int, default=2)
    ap.add_argument("--connections", type=int, default=64)
    args = ap.parse_args()
    cli = [sys.executable, "-m", "huaxiang.cli"]
    kinds = {"with exposures": [], "without": ["--no-exposures"]}
    lat = {k: [] for k in kinds}
    failed = {k: 0 for k in kinds}
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
                print(f"turn {turn + 1}, {kind}: p50 {np.percentile(ms, 50):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms"
                      f", {errors(statuses)} errors", flush=True)
        with duckdb.connect(db, read_only=True) as con:
            recorded = con.execute("SELECT count(DISTINCT request_id) FROM exposures").fetchone()[0]
    pooled = {k: np.concatenate(v) for k, v in lat.items()}
    result = {"benchmark": "exposure_cost", "machine": stamp(), "rate_per_s": args.rate, "seconds": args.seconds,
              "turns": args.turns, "answers_recorded": int(recorded),
              **{k.replace(" ", "_"): {"requests": int(v.size), "errors": failed[k],
                                       **{f"p{q}_ms": float(np.percentile(v, q)) for q in (50, 90, 99)}}
                 for k, v in pooled.items()}}
    result["p99_added_ms"] = result["with_exposures"]["p99_ms"] - result["without"]["p99_ms"]
    result["p50_added_ms"] = result["with_exposures"]["p50_ms"] - result["without"]["p50_ms"]
    print(f"GET recommendations at {args.rate:g}/s, {args.turns} × {args.seconds:g} s each: with exposures p50 "
          f"{result['with_exposures']['p50_ms']:.2f} / p99 {result['with_exposures']['p99_ms']:.2f} ms; without "
          f"{result['without']['p50_ms']:.2f} / {result['without']['p99_ms']:.2f} ms; p99 added "
          f"{result['p99_added_ms']:+.2f} ms (target <= 0.3 ms); {recorded:,} answers recorded; {stamp()}")
    LATENCY_OUT.mkdir(parents=True, exist_ok=True)
    (LATENCY_OUT / "exposure_cost.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {LATENCY_OUT / 'exposure_cost.json'}")


if __name__ == "__main__":
    main()
