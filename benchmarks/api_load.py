"""Benchmark: the HTTP API under load on loopback — GET profile or GET recommendations at a fixed rate, or both
at once with the heaviest user's recommendations hammered (`--route mixed`).

    .venv/bin/python benchmarks/api_load.py [--rate 1000] [--seconds 60] [--route profile|recommendations|mixed]

Builds a store from the Taobao slice (814 users) plus one taobao shopper with 75,000 views (taobao:999999999,
heavier than anyone in the slice), trains item-KNN, creates read keys, starts `huaxiang serve` (uvicorn, one
process) and drives it with the open-loop load generator of benchmarks/loadgen.py, in this process: requests are
*scheduled* at `--rate` per second over keep-alive connections, whatever the server's speed, and each latency
counts from the scheduled time (so a slow server cannot hide queueing). Users are drawn at random (seeded) from
the slice's users.

The server runs with its default per-key rate limit (2,000 requests/s per key, `--key-rate` to change it): the
offered rates here stay under it, so the figures are the service as shipped, limiter included, and never the
limiter's refusals — a 429 would count as an error (the mixed mode's hammering clients use a key of their own).

  --route profile          GET /v1/users/{id}/profile.          Target: p99 ≤ 2 ms at 1,000/s for 60 s, 0 errors.
  --route recommendations  GET /v1/users/{id}/recommendations.  Target: p99 ≤ 3 ms at 500/s for 30 s.
  --route mixed            GET profile at `--rate` (e.g. 500/s) while `--hammers` (4) clients ask, closed loop
                           (each its next request as soon as its answer is in), for the heavy shopper's
                           recommendations. Target: profile p99 ≤ 5 ms; the heavy requests' throughput and
                           latency are reported beside it.

Reports achieved rate, errors (non-200 or failed), p50 / p90 / p99 / max, also written to
benchmarks/out/latency/api_load_ROUTE_RATE.json. Server and load generator share this machine's cores.
"""
from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import uvloop

import loadgen
from machine import latency_result, save_latency, stamp
from served import create_key, serving

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SLICE = SHARED / "taobao_userbehavior_head" / "UserBehavior_head.csv.gz"
HEAVY = "taobao:999999999"
HEAVY_EVENTS = 75_000
RECOMMEND = "/recommendations?k=10&explain=true"


def write_heavy(path: Path) -> None:
    """One taobao shopper (999999999) with 75,000 views over 2,000 of the slice's items, 9 s apart from Nov 25."""
    with gzip.open(SLICE, "rt") as f:
        next(f)
        items = list(dict.fromkeys(line.split(",")[1] for line in f))[:2000]
    start = int(datetime(2017, 11, 25, tzinfo=timezone.utc).timestamp())
    path.write_text("user_id,item_id,category_id,behavior_type,timestamp\n" + "".join(
        f"999999999,{items[n % len(items)]},1,pv,{start + n * 9}\n" for n in range(HEAVY_EVENTS)))


async def mixed(port: int, key: str, heavy_key: str, paths: list[str], rate: float, seconds: float,
                connections: int, clients: int):
    """The profile load at `rate` while `clients` hammer the heavy shopper's recommendations (started first)."""
    stop = asyncio.Event()
    heavy = loadgen.get(f"/v1/users/{HEAVY}{RECOMMEND}", f"127.0.0.1:{port}", {"X-API-Key": heavy_key})
    hammering = asyncio.create_task(loadgen.hammer(port, heavy, clients, stop))
    await asyncio.sleep(1.0)  # the hammering is at full speed before the profile load starts
    profile = await drive(port, key, paths, rate, seconds, connections)
    stop.set()
    return profile, await hammering


async def drive(port: int, key: str, paths: list[str], rate: float, seconds: float, connections: int):
    """Open loop (benchmarks/loadgen.py): GET each of `paths` in turn with the key, `rate` a second for `seconds`;
    (latencies in ms from the scheduled time, statuses (0: failed), wall seconds)."""
    host = f"127.0.0.1:{port}"
    run = await loadgen.drive(port, [loadgen.get(p, host, {"X-API-Key": key}) for p in paths], rate, seconds,
                              connections)
    return run.latencies_ms, run.statuses, run.wall_s


def errors(statuses) -> int:
    return sum(n for status, n in statuses.items() if status != 200)


def build(db: str, cli: list[str], tmp: str) -> None:
    heavy = Path(tmp) / "heavy.csv"
    write_heavy(heavy)
    for step in (["ingest", str(SLICE), "--format", "taobao", "--namespace", "taobao"],
                 ["ingest", str(heavy), "--format", "taobao", "--namespace", "taobao"],
                 ["build"], ["train", "recommender", "--model", "itemknn"]):
        subprocess.run(cli + step + ["--db", db], check=True, capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=1000.0, help="offered GETs per second (mixed: profile GETs)")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--route", default="profile", choices=["profile", "recommendations", "mixed"])
    ap.add_argument("--connections", type=int, default=64, help="keep-alive connections of the open-loop load")
    ap.add_argument("--hammers", type=int, default=4, help="mixed: closed-loop clients on the heavy shopper")
    ap.add_argument("--key-rate", type=float, default=None,
                    help="the server's --key-rate (default: the server's own default, 2,000/s per key)")
    args = ap.parse_args()
    cli = [sys.executable, "-m", "huaxiang.cli"]
    options = [] if args.key_rate is None else ["--key-rate", f"{args.key_rate:g}"]
    key_rate = 2000.0 if args.key_rate is None else args.key_rate
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "api.duckdb")
        print("building the store (Taobao slice + one shopper of 75,000 events) …", flush=True)
        build(db, cli, tmp)
        key, heavy_key = create_key(cli, db), create_key(cli, db)
        import duckdb
        with duckdb.connect(db, read_only=True) as con:
            users = [u for (u,) in con.execute("SELECT user_id FROM profiles WHERE user_id <> ? ORDER BY user_id",
                                               [HEAVY]).fetchall()]
            heavy_events = con.execute("SELECT count(*) FROM events WHERE user_id = ?", [HEAVY]).fetchone()[0]
        with serving(cli, db, *options) as port:
            rng = np.random.default_rng(0)
            suffix = RECOMMEND if args.route == "recommendations" else "/profile"
            paths = [f"/v1/users/{users[int(i)]}{suffix}" for i in rng.integers(0, len(users), 5000)]
            uvloop.run(drive(port, key, paths, min(args.rate, 200), 2, args.connections))  # warm-up
            if args.route == "mixed":
                uvloop.run(drive(port, heavy_key, [f"/v1/users/{HEAVY}{RECOMMEND}"], 5, 1, 1))  # warm-up
                (lat, statuses, wall), hammered = uvloop.run(mixed(
                    port, key, heavy_key, paths, args.rate, args.seconds, args.connections, args.hammers))
                heavy, heavy_statuses, heavy_wall = hammered.latencies_ms, hammered.statuses, hammered.wall_s
            else:
                lat, statuses, wall = uvloop.run(drive(port, key, paths, args.rate, args.seconds, args.connections))
    what = f"GET {args.route}, {args.rate:g}/s offered for {args.seconds:g} s (from the scheduled time)"
    extra = {}
    if args.route == "mixed":
        what = (f"GET profile, {args.rate:g}/s offered for {args.seconds:g} s (from the scheduled time), while "
                f"{args.hammers} closed-loop clients ask for the recommendations of {HEAVY} ({heavy_events:,} "
                f"events)")
        extra["heavy_recommendations"] = {
            "user_id": HEAVY, "events": heavy_events, "clients": args.hammers, "requests": int(heavy.size),
            "per_s": heavy.size / heavy_wall, "errors": errors(heavy_statuses),
            "statuses": {str(s): n for s, n in sorted(heavy_statuses.items())},
            **{f"p{q}_ms": float(np.percentile(heavy, q)) for q in (50, 90, 99)}, "max_ms": float(heavy.max())}
    print(f"{what}: {len(lat):,} requests, achieved {len(lat) / wall:,.0f}/s, {errors(statuses)} errors "
          f"(statuses {dict(sorted(statuses.items()))}); server --key-rate {key_rate:g}/s per key; {stamp()}")
    if args.route == "mixed":
        h = extra["heavy_recommendations"]
        print(f"heavy recommendations ({args.hammers} clients, closed loop): {h['requests']:,} answered, "
              f"{h['per_s']:,.1f}/s, {h['errors']} errors; p50 {h['p50_ms']:.1f} ms, p90 {h['p90_ms']:.1f} ms, "
              f"p99 {h['p99_ms']:.1f} ms, max {h['max_ms']:.1f} ms")
    save_latency(latency_result("api_load", what, lat, offered_per_s=args.rate, achieved_per_s=len(lat) / wall,
                                errors=errors(statuses), statuses={str(s): n for s, n in sorted(statuses.items())},
                                key_rate_per_s=key_rate, cores=len(os.sched_getaffinity(0)), **extra),
                 f"api_load_{args.route}_{args.rate:g}")


if __name__ == "__main__":
    main()
