"""Benchmark: how fast `huaxiang serve` answers its web pages, against the JSON profile in the same run.

    .venv/bin/python benchmarks/pages.py [--requests 500]

Builds the demo store (`huaxiang demo`: the bundled real slices, scores and an item-KNN recommender), starts
`huaxiang serve` on a loopback port, and asks — one request at a time over one keep-alive connection, after 50
warm-up requests — for users drawn at random (seeded) from everyone with a profile:
  GET /v1/users/{id}/profile   the JSON document (the baseline: a dictionary lookup)
  GET /ui/users/{id}           the whole profile page (scores, recommendations with reasons, charts, timeline)
  GET /ui/users/{id}?q=WORD    the page with an item search re-ranked for the user (words drawn from titles)
  GET /ui/segments             the segments overview
Prints p50 / p90 / p99 per route, the page's size and the page/JSON ratio at p50, with the machine and date;
writes benchmarks/out/latency/pages_*.json.
"""
from __future__ import annotations

import argparse
import http.client
import os
import random
import subprocess
import sys
import tempfile
import time
from urllib.parse import quote

import numpy as np

from machine import latency_result, save_latency, stamp
from served import create_key, serving


def timed(conn: http.client.HTTPConnection, path: str, key: str) -> tuple[float, int]:
    t = time.perf_counter()
    conn.request("GET", path, headers={"X-API-Key": key})
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 200, (path, resp.status, body[:200])
    return (time.perf_counter() - t) * 1000, len(body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import duckdb
    hx = [sys.executable, "-m", "huaxiang.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "demo.duckdb")
        print("building the demo store …", flush=True)
        subprocess.run([*hx, "demo", "--db", db, "--show", "0"], check=True, capture_output=True)
        key = create_key(hx, db)
        with duckdb.connect(db, read_only=True) as con:
            users = [u for (u,) in con.execute("SELECT user_id FROM profiles ORDER BY user_id").fetchall()]
        with serving(hx, db) as port:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            rng = random.Random(args.seed)
            words = ["bag", "lipstick", "cream", "christmas", "hair", "card", "candle", "mask", "heart", "set"]
            routes = {"pages_profile_json": ("GET /v1/users/{id}/profile",
                                             lambda u: f"/v1/users/{quote(u, safe='')}/profile"),
                      "pages_profile_page": ("GET /ui/users/{id}", lambda u: f"/ui/users/{quote(u, safe='')}"),
                      "pages_profile_search": ("GET /ui/users/{id}?q=WORD",
                                               lambda u: f"/ui/users/{quote(u, safe='')}?q={rng.choice(words)}"),
                      "pages_segments_page": ("GET /ui/segments", lambda u: "/ui/segments")}
            for _, path in routes.values():
                for u in rng.sample(users, 50):
                    timed(conn, path(u), key)
            results = {}
            for name, (what, path) in routes.items():
                runs = [timed(conn, path(u), key) for u in rng.sample(users, args.requests)]
                ms, size = zip(*runs)
                results[name] = latency_result(name, f"{what} ({len(users):,} users in the store, one request at a "
                                               "time, keep-alive)", ms,
                                               mean_bytes=float(np.mean(size)))
                save_latency(results[name], name)
    base, page = results["pages_profile_json"]["p50_ms"], results["pages_profile_page"]["p50_ms"]
    print(f"profile page p50 {page:.1f} ms = {page / base:.1f}× the JSON profile's {base:.2f} ms "
          f"({results['pages_profile_page']['mean_bytes'] / 1024:.0f} kB a page); {stamp()}")


if __name__ == "__main__":
    main()
