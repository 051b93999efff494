"""Benchmark: publishing profiles to Redis — time, Redis memory per profile, and a Spark-built Parquet output
published and served.

    .venv/bin/python benchmarks/publish.py [--events 3e5] [--users 3e4] [--parts store,spark] [--train]
    .venv/bin/python benchmarks/publish.py --events 1e7 --users 1e6 --parts store --name publish_1m
    .venv/bin/python benchmarks/publish.py --events 1e7 --users 1e6 --parts store --publish-workers 2 --name publish_1m_w2
    .venv/bin/python benchmarks/publish.py --events 1e7 --users 1e6 --parts spark --name publish_1m_spark

Synthetic logs (`synthetic.py`, exactly `--users` distinct users) are ingested into a store and built (DuckDB), once
per size under `--workdir` (reused by later runs). Then, against a throwaway redis-server on loopback
(`--save "" --appendonly no`):

  store   `huaxiang publish --to redis://…/0 --db STORE --json`: wall time, users/s, the peak resident memory of the
          publish process tree; Redis memory per profile two ways — `MEMORY USAGE` (SAMPLES 0: every field) of
          `--sample` (1,000) user hashes drawn with ZRANDMEMBER, with the sizes of their doc/ctx/week fields, and
          the `INFO memory` used_memory delta divided by users (which also counts the id index, metadata and
          any model blobs); then the same publish again, with nothing changed (it should write nothing).
  spark   the store exported as Parquet (`huaxiang export`), built by `huaxiang build --engine spark --input …
          --output OUT` (Spark local[2]), then `huaxiang publish --to redis://…/1 --input OUT --json`, timed the
          same way. Served: `huaxiang serve --online redis://…/1` answers GET profile for `--check` (50) sampled
          users; their docs are compared byte for byte with the store route's (the two engines' floating-point
          sums may differ in the last bits, so "equal" is a strict count).

`--train` also trains item-KNN into the store first, so that the store route publishes a model too.
The default size takes about 3 minutes on 2 cores, most of it Spark's start-up; the stores stay under --workdir.
Goal (issue 20): 1M users (10M events) published in ≤ 60 s. Prints the figures with the machine and date; writes
benchmarks/out/memory/NAME.json (`--name`, default publish).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import stamp  # noqa: E402
from online_served import CLI, cores, online_key, online_server, quote_id  # noqa: E402
from scale import run_measured  # noqa: E402



def prepare(workdir: Path, events: int, users: int, memory_limit: str, train: bool) -> tuple[Path, dict]:
    """The synthetic store of this size (made once, then reused): (its path, the times of what was done now)."""
    d = workdir / f"{events}_{users}"
    store = d / "store.duckdb"
    done = d / "ready.json"
    timings: dict = {}
    if done.exists() and (not train or Path(f"{store}.models").exists()):
        print(f"reusing {store}", flush=True)
        return store, json.loads(done.read_text())
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    from synthetic import generate
    t = time.perf_counter()
    print(f"generating {events:,} events of {users:,} users …", flush=True)
    ev, items = generate(events, str(d / "csv"), seed=0, n_users=users)
    timings["generate_s"] = time.perf_counter() - t
    from huaxiang.config import load_config
    from huaxiang.ingest import ingest_file
    from huaxiang.profile.build import build_profiles
    from huaxiang.store import connect
    con = connect(str(store))
    con.execute(f"SET temp_directory = '{d / 'tmp'}'")
    con.execute(f"SET memory_limit = '{memory_limit}'")
    print("ingesting …", flush=True)
    t = time.perf_counter()
    ingest_file(con, items, "csv", table="items")
    ingest_file(con, ev, "csv", table="events")
    timings["ingest_s"] = time.perf_counter() - t
    print("building profiles …", flush=True)
    t = time.perf_counter()
    build_profiles(con, load_config())
    timings["build_s"] = time.perf_counter() - t
    timings["profiles"] = con.execute("SELECT count(*) FROM profiles").fetchone()[0]
    con.close()
    if train:
        print("training item-KNN …", flush=True)
        t = time.perf_counter()
        run_measured(CLI + ["train", "recommender", "--model", "itemknn", "--db", str(store)])
        timings["train_s"] = time.perf_counter() - t
    shutil.rmtree(d / "csv")
    done.write_text(json.dumps(timings))
    return store, timings


def used_memory(r) -> int:
    return int(r.info("memory")["used_memory"])


def sampled_memory(r, sample: int) -> dict:
    """MEMORY USAGE and field sizes of up to `sample` user hashes per served tenant, drawn with ZRANDMEMBER."""
    from huaxiang.online.layout import current, ids_key, user_key
    keys = []
    for tenant, version in current(r).items():
        ids = r.zrandmember(ids_key(tenant, version), sample) or []
        keys += [user_key(tenant, version, u.decode("utf-8", "surrogatepass")) for u in ids]
    if not keys:
        return {"sampled": 0}
    with r.pipeline(transaction=False) as p:
        for k in keys:
            p.memory_usage(k, samples=0)
            for field in ("doc", "ctx", "week"):
                p.hstrlen(k, field)
        raw = p.execute()
    usage = raw[0::4]
    out = {"sampled": len(keys), "memory_usage_mean_bytes": sum(usage) / len(usage),
           "memory_usage_max_bytes": max(usage)}
    for i, field in enumerate(("doc", "ctx", "week"), start=1):
        out[f"{field}_mean_bytes"] = sum(raw[i::4]) / len(keys)
    return out


def timed_publish(url: str, *source: str) -> dict:
    """`huaxiang publish --to URL SOURCE --json` as its own process: its report, wall time and peak tree RSS."""
    wall, peak, said = run_measured(CLI + ["publish", "--to", url, *source, "--json"])
    start = said.find("{")
    report = json.loads(said[start:]) if start >= 0 else {}
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(peak, 1), "report": report}


def publish_measured(r, url: str, users: int, sample: int, *source: str) -> dict:
    before = used_memory(r)
    first = timed_publish(url, *source)
    delta = used_memory(r) - before
    inside = first["report"].get("seconds")
    row = {**first, "users": users, "users_per_s": round(users / first["wall_s"], 1), "publish_s": inside,
           "used_memory_delta_bytes": delta, "used_memory_per_user_bytes": round(delta / max(users, 1), 1),
           **sampled_memory(r, sample)}
    again = timed_publish(url, *source)
    row["republish_unchanged"] = {"wall_s": again["wall_s"], "report": again["report"],
                                  "used_memory_delta_bytes": used_memory(r) - before - delta}
    return row


def print_row(label: str, row: dict) -> None:
    print(f"{label}: {row['users']:,} users in {row['wall_s']:.1f} s wall ({row['users_per_s']:,.0f} users/s; "
          f"{row['publish_s'] or float('nan'):.1f} s of it publishing, after start-up), peak RSS "
          f"{row['peak_rss_mib']:,.0f} MiB; Redis per profile: MEMORY USAGE "
          f"{row.get('memory_usage_mean_bytes', 0):,.0f} B (doc {row.get('doc_mean_bytes', 0):,.0f}, ctx "
          f"{row.get('ctx_mean_bytes', 0):,.0f}, week {row.get('week_mean_bytes', 0):,.0f}), used_memory delta / "
          f"users {row['used_memory_per_user_bytes']:,.0f} B; re-run unchanged "
          f"{row['republish_unchanged']['wall_s']:.1f} s", flush=True)


def served_check(url: str, users: list[str], other_url: str | None) -> dict:
    """GET profile from an online worker for each of `users`: how many answered 200, and how many docs equal
    those under `other_url` byte for byte."""
    import http.client

    from huaxiang.online.layout import connect, current, user_key
    from huaxiang.schema import tenant_of
    key = online_key(url)
    ok, equal, compared = 0, 0, 0
    other = connect(other_url) if other_url else None
    versions = current(other) if other is not None else {}
    with online_server(url, 1) as (port, _):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for u in users:
            conn.request("GET", f"/v1/users/{quote_id(u)}/profile", headers={"X-API-Key": key})
            resp = conn.getresponse()
            body = resp.read()
            ok += resp.status == 200
            if other is not None and resp.status == 200 and tenant_of(u) in versions:
                theirs = other.hget(user_key(tenant_of(u), versions[tenant_of(u)], u), "doc")
                compared += 1
                equal += theirs == body
        conn.close()
    return {"checked": len(users), "answered_200": ok, "compared_with_store_route": compared,
            "docs_equal": equal}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=lambda s: int(float(s)), default=300_000)
    ap.add_argument("--users", type=lambda s: int(float(s)), default=30_000, help="distinct users (synthetic --users)")
    ap.add_argument("--parts", default="store,spark", help="store, spark or both (default: %(default)s)")
    ap.add_argument("--train", action="store_true", help="train item-KNN into the store first (a model to publish)")
    ap.add_argument("--publish-workers", type=int, default=None,
                    help="`huaxiang publish --workers N` (render processes; default: its own default)")
    ap.add_argument("--sample", type=int, default=1000, help="user hashes measured with MEMORY USAGE")
    ap.add_argument("--check", type=int, default=50, help="users whose profile is read from a worker afterwards")
    ap.add_argument("--workdir", default="/tmp/huaxiang-publish", help="synthetic stores, kept for later runs")
    ap.add_argument("--memory-limit", default="4GB", help="DuckDB memory cap while ingesting and building")
    ap.add_argument("--name", default="publish", help="result file name under benchmarks/out/memory/")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "out"),
                    help="results folder (default: benchmarks/out; a debug run can write elsewhere)")
    args = ap.parse_args()
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts <= {"store", "spark"}:
        ap.error(f"--parts takes store and/or spark, not {args.parts!r}")
    import numpy as np
    import redis
    from huaxiang.stream import local_redis
    print(f"publish benchmark: {args.events:,} events, {args.users:,} users; {stamp()}", flush=True)
    workdir = Path(args.workdir)
    store, prep = prepare(workdir, args.events, args.users, args.memory_limit, args.train)
    import duckdb
    with duckdb.connect(str(store), read_only=True) as con:
        n_users = con.execute("SELECT count(*) FROM profiles").fetchone()[0]
        ids = [u for (u,) in con.execute(f"SELECT user_id FROM profiles USING SAMPLE reservoir({int(args.check)} "
                                         "ROWS) REPEATABLE (1)").fetchall()]
    result = {"benchmark": "publish", "machine": stamp(), "cores": cores(), "events": args.events,
              "users": n_users, "prepare": prep, "redis_server": None}
    extra = ["--workers", str(args.publish_workers)] if args.publish_workers else []
    result["publish_workers"] = args.publish_workers
    redis_dir = workdir / "redis"
    shutil.rmtree(redis_dir, ignore_errors=True)
    redis_dir.mkdir(parents=True)
    with local_redis(str(redis_dir)) as url:
        r = redis.Redis.from_url(url)
        result["redis_server"] = r.info("server")["redis_version"]
        if "store" in parts:
            row = publish_measured(r, url, n_users, args.sample, "--db", str(store), *extra)
            print_row("publish --db", row)
            row["served"] = served_check(url, ids, None)
            print(f"served: {row['served']['answered_200']}/{row['served']['checked']} profiles answered 200 by "
                  "`huaxiang serve --online`", flush=True)
            result["store"] = row
        if "spark" in parts:
            d = store.parent
            parquet, out = d / "parquet", d / "out_spark"
            if not (parquet / "events").exists():
                print("exporting Parquet …", flush=True)
                run_measured(CLI + ["export", str(parquet), "--db", str(store)])
            shutil.rmtree(out, ignore_errors=True)
            print("building on Spark local[2] …", flush=True)
            wall, peak, _ = run_measured(CLI + ["build", "--engine", "spark", "--input", str(parquet),
                                                "--output", str(out)])
            spark = {"build_wall_s": round(wall, 1), "build_peak_rss_mib": round(peak, 1)}
            print(f"spark build: {wall:.1f} s, peak {peak:,.0f} MiB", flush=True)
            url1 = url.rsplit("/", 1)[0] + "/1"
            r1 = redis.Redis.from_url(url1)
            spark.update(publish_measured(r1, url1, n_users, args.sample, "--input", str(out), *extra))
            print_row("publish --input (Spark output)", spark)
            spark["served"] = served_check(url1, ids, url if "store" in parts else None)
            s = spark["served"]
            print(f"served from the Spark output: {s['answered_200']}/{s['checked']} profiles answered 200"
                  + (f"; {s['docs_equal']}/{s['compared_with_store_route']} docs byte-equal to the store route's"
                     if s["compared_with_store_route"] else ""), flush=True)
            result["spark"] = spark
        result["redis_used_memory_end_bytes"] = used_memory(r)
    if "store" in parts:
        row = result["store"]
        per_million = row["wall_s"] * 1e6 / max(n_users, 1)
        result["seconds_per_million_users"] = round(per_million, 1)
        print(f"publish: {row['wall_s']:.1f} s for {n_users:,} users, {per_million:.0f} s per 1M users at this rate "
              f"(goal: 1M users in ≤ 60 s); "
              f"{float(np.mean([row['memory_usage_mean_bytes'], row['used_memory_per_user_bytes']])):,.0f} B a "
              f"profile in Redis (mean of the two measures); {stamp()}")
    folder = Path(args.out) / "memory"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{args.name}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
