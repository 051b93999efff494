"""Benchmark: scaling with workers — the online mode (Redis, stateless workers) with 1 and 2 workers against today's
embedded single process, in one run on one store.

    .venv/bin/python benchmarks/online_scale.py [--workers 1,2] [--seconds 8] [--store DB]
                                                [--profile-rates 500,1000,…] [--rec-rates 100,200,…]

Builds the demo store (`huaxiang demo`: 30,550 users of seven tenants, item-KNN), or copies `--store`, creates keys,
starts a throwaway redis-server on loopback and publishes the store to it (`huaxiang publish`). Then, one
configuration at a time, in this order:

  embedded   `huaxiang serve --db STORE` (one process, today's mode)
  online N   `huaxiang serve --online redis://… --workers N`, for each N of `--workers`

and for each: an open-loop load (`loadgen.py`, as in api_load.py and feast_peer.py: requests scheduled at a fixed
rate over 64 keep-alive connections, latency counted from the scheduled time, users drawn at random, seeded) steps
the offered rate up, `--seconds` per step, first for GET /v1/users/{id}/profile, then for GET
…/recommendations?k=10&explain=true. Each step is judged three ways, each needing no failed or non-200 request and
an achieved rate ≥ 95% of the offered one:

  p99       p99 ≤ `--p99-ms` (5 ms) — the issue's criterion
  p90       p90 ≤ `--p99-ms` — the same bound on p90, which one stall of this shared VM (100–800 ms now and
            then) does not decide on its own
  keeps up  p50 ≤ `--p99-ms` — the server is not saturated (no queue building up)

The ladder goes on while a step keeps up (a step that does not is run once more; a second miss ends it). For each
criterion the figure is the highest rate whose step met it. Last, GET profile at `--fixed-rate` (2,000/s) for
`--fixed-seconds` (20): its p50/p99 against the goal p99 ≤ 2 ms.

Every server runs with `--key-rate 100000` (the per-key limiter on, as shipped, but far above the offered rates).
The load generator, redis-server and the workers share this machine's cores: on 2 cores, 2 workers compete with
the generator and Redis, so read the ratios, not only the absolute rates.

Prints each step, the table and the machine; writes benchmarks/out/latency/online_scale.json (its percentiles are
the headline: profile at the fixed rate with the most workers; every step of every configuration is in `configs`).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import latency_result, save_latency, stamp  # noqa: E402
from online_served import (cores, embedded_server, store_copy, online_key, online_server, publish,  # noqa: E402
                           quote_id, store_key)

import loadgen  # noqa: E402

RECOMMEND = "/recommendations?k=10&explain=true"
KEY_RATE = "100000"


def ints(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


CRITERIA = ("p99", "p90", "keeps_up")


def step(port: int, requests: list[bytes], rate: float, seconds: float, connections: int, bound_ms: float) -> dict:
    run = uvloop.run(loadgen.drive(port, requests, rate, seconds, connections))
    row = run.summary()
    ok = run.errors == 0 and run.achieved_per_s >= 0.95 * rate
    row["held"] = {"p99": ok and row["p99_ms"] <= bound_ms, "p90": ok and row["p90_ms"] <= bound_ms,
                   "keeps_up": ok and row["p50_ms"] <= bound_ms}
    return row


def ladder(port: int, requests: list[bytes], rates: list[int], args, label: str,
           deadline: float) -> tuple[dict[str, float], list[dict]]:
    """Steps the rate up while it keeps up (a miss is run once more); ({criterion: the highest rate whose step
    met it (0: none)}, every step run)."""
    best, rows = {c: 0.0 for c in CRITERIA}, []
    for rate in rates:
        for attempt in (1, 2):
            if time.monotonic() > deadline:
                print(f"  {label}: out of time (--max-minutes), stopping here", flush=True)
                return best, rows
            row = step(port, requests, rate, args.seconds, args.connections, args.p99_ms)
            row["attempt"] = attempt
            rows.append(row)
            met = [c for c in CRITERIA if row["held"][c]]
            for c in met:
                best[c] = max(best[c], float(rate))
            print(f"  {label:34s} {rate:>6,}/s  achieved {row['achieved_per_s']:>7,.0f}/s  p50 {row['p50_ms']:7.2f}"
                  f"  p90 {row['p90_ms']:7.2f}  p99 {row['p99_ms']:8.2f}  max {row['max_ms']:8.1f} ms  errors "
                  f"{row['errors']:>4}  met: {', '.join(met) or '–'}", flush=True)
            if row["held"]["keeps_up"]:
                break
        else:
            return best, rows
    return best, rows


def measure(port: int, key: str, users: list[str], args, label: str, deadline: float) -> dict:
    rng = np.random.default_rng(args.seed)
    pick = rng.integers(0, len(users), 20_000)
    host, headers = f"127.0.0.1:{port}", {"X-API-Key": key}
    profile = [loadgen.get(f"/v1/users/{quote_id(users[int(i)])}/profile", host, headers) for i in pick]
    recommend = [loadgen.get(f"/v1/users/{quote_id(users[int(i)])}{RECOMMEND}", host, headers) for i in pick]
    # warm-up, discarded: every worker's first requests load what it reads lazily (the recommender, the key table)
    for requests in (profile, recommend):
        uvloop.run(loadgen.drive(port, requests[::-1], 100, 3, args.connections))
    out = {}
    out["profile_max_per_s"], out["profile_steps"] = ladder(port, profile, args.profile_rates, args,
                                                            f"{label}: profile", deadline)
    out["recommendations_max_per_s"], out["recommendations_steps"] = ladder(
        port, recommend, args.rec_rates, args, f"{label}: recommendations", deadline)
    print(f"  {label}: highest rates " + "; ".join(
        f"{what} {c} {out[f'{what}_max_per_s'][c]:,.0f}/s" for what in ("profile", "recommendations")
        for c in CRITERIA), flush=True)
    run = uvloop.run(loadgen.drive(port, profile, args.fixed_rate, args.fixed_seconds, args.connections))
    s = run.summary()
    out["fixed"] = latency_result("online_scale", f"{label}: GET profile at {args.fixed_rate:g}/s for "
                                  f"{args.fixed_seconds:g} s", run.latencies_ms, offered_per_s=args.fixed_rate,
                                  achieved_per_s=run.achieved_per_s, errors=run.errors, statuses=s["statuses"],
                                  retries=run.retries, mean_response_bytes=s["mean_response_bytes"])
    f = out["fixed"]
    print(f"  {label:28s} profile at {args.fixed_rate:g}/s: p50 {f['p50_ms']:.2f} ms, p99 {f['p99_ms']:.2f} ms, "
          f"achieved {f['achieved_per_s']:,.0f}/s, {run.errors} errors", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,2", help="worker counts of the online mode (default: %(default)s)")
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds per step (default: %(default)s)")
    ap.add_argument("--profile-rates", type=ints, default=ints("500,1000,1500,2000,2500,3000,4000,5000,6000"))
    ap.add_argument("--rec-rates", type=ints, default=ints("100,200,300,400,500,600,800,1000,1200,1600,2000"))
    ap.add_argument("--p99-ms", type=float, default=5.0, help="a step holds with p99 at most this (default: 5)")
    ap.add_argument("--fixed-rate", type=float, default=2000.0, help="GET profile at this rate, each configuration")
    ap.add_argument("--fixed-seconds", type=float, default=20.0)
    ap.add_argument("--connections", type=int, default=64, help="keep-alive connections of the load generator")
    ap.add_argument("--no-embedded", action="store_true", help="skip the embedded single process")
    ap.add_argument("--store", help="use a copy of this store (default: build the demo store, ~1-2 min)")
    ap.add_argument("--max-minutes", type=float, default=20.0, help="stop stepping after this long (bound)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "out"),
                    help="results folder (default: benchmarks/out; a debug run can write elsewhere)")
    args = ap.parse_args()
    workers = ints(args.workers)
    from huaxiang.stream import local_redis
    deadline = time.monotonic() + args.max_minutes * 60
    configs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "store.duckdb")
        store_copy(args.store, db)
        import duckdb
        with duckdb.connect(db, read_only=True) as con:
            users = [u for (u,) in con.execute("SELECT user_id FROM profiles ORDER BY user_id").fetchall()]
        with local_redis(tmp) as url:
            report = publish(url, "--db", db)
            print(f"published {len(users):,} users in {report['wall_s']:.1f} s; {stamp()}", flush=True)
            if not args.no_embedded:
                key = store_key(db)
                with embedded_server(db, "--key-rate", KEY_RATE, log=Path(tmp) / "embedded.log") as (port, _):
                    configs["embedded"] = measure(port, key, users, args, "embedded, 1 process", deadline)
            key = online_key(url)
            for n in workers:
                with online_server(url, n, "--key-rate", KEY_RATE, log=Path(tmp) / f"online{n}.log") as (port, _):
                    configs[f"online_{n}"] = measure(port, key, users, args, f"online, {n} worker(s)", deadline)
    print(f"\nscaling with workers; {len(users):,} users (demo store); {args.seconds:g} s a step; p99 ≤ "
          f"{args.p99_ms:g} ms; {stamp()}")
    print("| configuration | profile: highest rate, p99 / p90 ≤ bound / keeps up | recommendations: the same | "
          f"profile at {args.fixed_rate:g}/s: p50 / p99 |\n|---|---:|---:|---:|")
    for name, c in configs.items():
        f = c["fixed"]
        cells = [" / ".join(f"{c[f'{what}_max_per_s'][k]:,.0f}" for k in CRITERIA) for what in ("profile",
                                                                                               "recommendations")]
        print(f"| {name} | {cells[0]} | {cells[1]} | {f['p50_ms']:.2f} / {f['p99_ms']:.2f} ms |")
    base = configs.get("embedded", {}).get("recommendations_max_per_s", {})
    ratios = {name: {k: c["recommendations_max_per_s"][k] / base[k] for k in CRITERIA if base.get(k)}
              for name, c in configs.items() if name != "embedded"}
    for name, r in ratios.items():
        print(f"recommendations, {name} / embedded: " + ", ".join(f"{k} {v:.2f}×" for k, v in r.items())
              + " (goal ≥ 2×)")
    head = configs[f"online_{max(workers)}"]["fixed"] if workers else configs["embedded"]["fixed"]
    result = {**head, "benchmark": "online_scale",
              "what": f"GET profile at {args.fixed_rate:g}/s, online mode with {max(workers) if workers else 0} "
                      f"worker(s) (headline; every configuration's ladders in `configs`)",
              "store_users": len(users), "seconds_per_step": args.seconds, "p99_target_ms": args.p99_ms,
              "connections": args.connections, "cores": cores(), "key_rate_per_s": float(KEY_RATE),
              "recommendations_ratio_to_embedded": ratios, "publish": report, "configs": configs}
    save_latency(result, "online_scale", Path(args.out) / "latency")


if __name__ == "__main__":
    main()
