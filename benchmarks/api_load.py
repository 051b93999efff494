"""Benchmark: the HTTP API under load on loopback — GET profile and GET recommendations at a fixed rate.

    .venv/bin/python benchmarks/api_load.py [--rate 1000] [--seconds 60] [--route profile|recommendations]

Builds a store from the Taobao slice (814 users), trains item-KNN, creates a read key, starts `huaxiang serve`
(uvicorn, one process) and drives it with an open-loop load generator in this process: requests are *scheduled*
at `--rate` per second over keep-alive connections, whatever the server's speed, and each latency counts from the
scheduled time (so a slow server cannot hide queueing). Users are drawn at random (seeded). Reports achieved
rate, errors (non-200 or failed), p50 / p90 / p99 / max, also written to
benchmarks/out/latency/api_load_ROUTE_RATE.json. Targets: profile p99 ≤ 5 ms at 1,000/s for 60 s with zero
errors; recommendations p99 ≤ 10 ms. Server and load generator share this machine's cores.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import uvloop

from machine import latency_result, save_latency, stamp
from served import create_key, serving

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


async def one(reader, writer, path: str, host: str, key: str) -> int:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {key}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    await reader.readexactly(length)
    return status


async def drive(port: int, key: str, paths: list[str], rate: float, seconds: float, connections: int):
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    lat, errors = [], 0
    start = time.perf_counter()
    n = int(rate * seconds)

    async def request(i: int, due: float):
        nonlocal errors
        conn = await pool.get()
        try:
            status = await one(*conn, paths[i % len(paths)], f"127.0.0.1:{port}", key)
            if status != 200:
                errors += 1
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            conn = await asyncio.open_connection("127.0.0.1", port)
        finally:
            pool.put_nowait(conn)
        lat.append((time.perf_counter() - due) * 1000)

    tasks = []
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(request(i, due)))
    await asyncio.gather(*tasks)
    return np.array(lat), errors, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--route", default="profile", choices=["profile", "recommendations"])
    ap.add_argument("--connections", type=int, default=64)
    args = ap.parse_args()
    cli = [sys.executable, "-m", "huaxiang.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "api.duckdb")
        for step in (["ingest", str(SHARED / "taobao_userbehavior_head" / "UserBehavior_head.csv.gz"), "--format",
                      "taobao", "--namespace", "taobao"], ["build"], ["train", "recommender", "--model", "itemknn"]):
            subprocess.run(cli + step + ["--db", db], check=True, capture_output=True)
        key = create_key(cli, db)
        import duckdb
        con = duckdb.connect(db, read_only=True)
        users = [u for (u,) in con.execute("SELECT user_id FROM profiles ORDER BY user_id").fetchall()]
        con.close()
        with serving(cli, db) as port:
            rng = np.random.default_rng(0)
            suffix = "/profile" if args.route == "profile" else "/recommendations?k=10&explain=true"
            paths = [f"/v1/users/{users[int(i)]}{suffix}" for i in rng.integers(0, len(users), 5000)]
            uvloop.run(drive(port, key, paths, min(args.rate, 200), 2, args.connections))  # warm-up
            lat, errors, wall = uvloop.run(drive(port, key, paths, args.rate, args.seconds, args.connections))
    what = f"GET {args.route}, {args.rate:g}/s offered for {args.seconds:g} s (from the scheduled time)"
    print(f"{what}: {len(lat):,} requests, achieved {len(lat) / wall:,.0f}/s, {errors} errors; {stamp()}")
    save_latency(latency_result("api_load", what, lat, offered_per_s=args.rate, achieved_per_s=len(lat) / wall,
                                errors=errors, cores=len(os.sched_getaffinity(0))),
                 f"api_load_{args.route}_{args.rate:g}")


if __name__ == "__main__":
    main()
