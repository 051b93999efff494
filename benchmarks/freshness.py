"""Benchmark: freshness — from an event entering the Redis stream to the profile reflecting it.

    .venv/bin/python benchmarks/freshness.py [--events 2000] [--rate 200]

Starts Debian's redis-server on a free loopback port (`huaxiang.stream.local_redis`), builds a store from the Taobao slice (814 users), runs the
consumer (`huaxiang.stream.consume`, as `huaxiang consume` does) in a thread, and a producer that XADDs single
events at `--rate` per second for existing users. An event's freshness = the moment its batch's profiles are
refreshed and committed (after the acknowledgement) minus the time Redis stamped into its entry id (ms).
Target: p99 ≤ 100 ms. Writes benchmarks/out/latency/freshness.json.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from machine import latency_result, save_latency, stamp

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=200.0, help="events per second")
    args = ap.parse_args()
    import redis
    from huaxiang.config import load_config
    from huaxiang.ingest import ingest_file
    from huaxiang.profile.build import build_profiles
    from huaxiang.store import connect
    from huaxiang.stream import RedisSource, consume, local_redis
    with tempfile.TemporaryDirectory() as tmp, local_redis(tmp) as url:
        r = redis.Redis.from_url(url)
        con = connect(str(Path(tmp) / "live.duckdb"))
        ingest_file(con, str(SHARED / "taobao_userbehavior_head" / "UserBehavior_head.csv.gz"), "taobao",
                    namespace="taobao")
        build_profiles(con, load_config())
        users = [u for (u,) in con.execute("SELECT user_id FROM profiles ORDER BY user_id").fetchall()]
        lags: list[float] = []

        def done(report, messages):
            now = time.time() * 1000
            lags.extend(now - int(m.id.split("-")[0]) for m in messages)

        source = RedisSource(url, "fresh")
        consumer = threading.Thread(target=consume, kwargs=dict(
            con=con, cfg=load_config(), source=source, batch=500, block_ms=5, max_messages=args.events,
            on_batch=done))
        consumer.start()
        time.sleep(2)  # the consumer compiles its refresh query first
        rng = np.random.default_rng(0)
        gap = 1 / args.rate
        start = time.perf_counter()
        for n in range(args.events):
            r.xadd("fresh", {"event": json.dumps({"user_id": users[int(rng.integers(len(users)))],
                                                  "item_id": f"taobao:{int(rng.integers(1, 10**6))}",
                                                  "type": "view", "ts": "2017-12-03T15:00:00"})})
            time.sleep(max(0.0, start + (n + 1) * gap - time.perf_counter()))
        consumer.join()
    what = f"freshness: Redis entry to refreshed profile, {args.rate:g} events/s, store of {len(users)} users"
    print(f"{what}; {len(lags):,} events; {stamp()}; target p99 <= 100 ms")
    save_latency(latency_result("freshness", what, lags, rate_per_s=args.rate), "freshness")


if __name__ == "__main__":
    main()
