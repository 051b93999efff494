"""Benchmark: freshness — from an event entering the system to its user's profile reflecting it.

    .venv/bin/python benchmarks/freshness.py [--events 2000] [--rate 200] [--online [--probe-every 5] [--poll-ms 10]]

In-process (always; today's path): starts Debian's redis-server on a free loopback port
(`huaxiang.stream.local_redis`), builds a store from the Taobao slice (814 users), runs the consumer
(`huaxiang.stream.consume`, as `huaxiang consume` does) in a thread, and a producer that XADDs single events at
`--rate` per second for existing users. An event's freshness = the moment its batch's profiles are refreshed and
committed (after the acknowledgement) minus the time Redis stamped into its entry id (ms).
Writes benchmarks/out/latency/freshness.json.

`--online` (then, in the same run, as the in-process path's peer): the same store published to a fresh
redis-server (`huaxiang publish`), two online servers in their own processes (`huaxiang serve --online … --workers
1`, A and B) and the one writer (`huaxiang consume --db … --publish …`). Single events are POSTed to A's
/v1/events at `--rate` per second (A appends them to the stream and answers 202); every `--probe-every`-th one is a
probe, for a user that only probes touch, and B's GET /v1/users/{id}/profile is polled every `--poll-ms` from the
probe's 202 on until the user's `n_events` counts it. A probe's freshness = the answer that shows it minus the moment
its POST was sent (so it includes the POST, the writer's ingest and live patch — `n_events` is a live field, see
docs/deployment.md — and up to one poll interval; the writer's refresh rounds run beside it, every
`--refresh-every` seconds). Only probes are polled (the polling is load on B and the machine). Writes
benchmarks/out/latency/freshness_online.json, with the in-process figures of the same run beside it.

Target: p99 ≤ 100 ms; the online path must not be slower than the in-process one.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from machine import latency_result, save_latency, stamp

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def build_store(path: str):
    """The Taobao slice ingested and built into a store at `path`: (open connection, its users)."""
    from huaxiang.config import load_config
    from huaxiang.ingest import ingest_file
    from huaxiang.profile.build import build_profiles
    from huaxiang.store import connect
    con = connect(path)
    ingest_file(con, str(SHARED / "taobao_userbehavior_head" / "UserBehavior_head.csv.gz"), "taobao",
                namespace="taobao")
    build_profiles(con, load_config())
    users = [u for (u,) in con.execute("SELECT user_id FROM profiles ORDER BY user_id").fetchall()]
    return con, users


def in_process(args) -> tuple[list[float], int]:
    """Today's path: (each event's freshness in ms, users in the store)."""
    import redis
    from huaxiang.config import load_config
    from huaxiang.stream import RedisSource, consume, local_redis
    with tempfile.TemporaryDirectory() as tmp, local_redis(tmp) as url:
        r = redis.Redis.from_url(url)
        con, users = build_store(str(Path(tmp) / "live.duckdb"))
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
        con.close()
    return lags, len(users)


def event(n: int, user: str, rng) -> dict:
    return {"event_id": f"fresh-{n}", "user_id": user, "item_id": f"taobao:{int(rng.integers(1, 10**6))}",
            "type": "view", "ts": "2017-12-03T15:00:00"}


async def drive_online(port_a: int, port_b: int, write_key: str, read_key: str, users: list[str], args) -> dict:
    """Events POSTed to A at `args.rate`; probes polled on B. Returns the probes' freshness and the counts."""
    from online_served import Pool, quote_id
    post, get = await Pool(port_a, 8).open(), await Pool(port_b, 16).open()
    wh, rh = {"X-API-Key": write_key}, {"X-API-Key": read_key}
    probe_users, background = users[::2], users[1::2]
    counts: dict[str, int] = {}
    for u in probe_users:  # each probe user's n_events as B serves it now
        status, body = await get.request("GET", f"/v1/users/{quote_id(u)}/profile", rh)
        if status != 200:
            raise RuntimeError(f"B answered {status} for the profile of {u}: {body[:200]!r}")
        counts[u] = json.loads(body)["n_events"]
    rng = np.random.default_rng(0)
    lags, post_ms, polls = [], [], [0]
    failed = {"post": 0, "lost": 0, "get": 0}
    tasks: set[asyncio.Task] = set()

    async def send(n: int, user: str) -> tuple[int, float]:
        t = time.perf_counter()
        status, _ = await post.request("POST", "/v1/events", wh, json.dumps({"events": [event(n, user, rng)]}).encode())
        post_ms.append((time.perf_counter() - t) * 1000)
        if status != 202:
            failed["post"] += 1
        return status, t

    async def probe(n: int, user: str, expected: int, sink: list | None) -> None:
        status, t0 = await send(n, user)
        if status != 202:
            counts[user] -= 1  # not in the stream: the user's count stays
        else:
            while True:
                s, body = await get.request("GET", f"/v1/users/{quote_id(user)}/profile", rh)
                polls[0] += 1
                if s == 200 and json.loads(body)["n_events"] >= expected:
                    if sink is not None:
                        sink.append((time.perf_counter() - t0) * 1000)
                    break
                if s != 200:
                    failed["get"] += 1
                if time.perf_counter() - t0 > args.timeout:
                    failed["lost"] += 1
                    break
                await asyncio.sleep(args.poll_ms / 1000)
        free.append(user)

    def spawn(coro) -> None:
        task = asyncio.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    free = list(probe_users)
    # warm-up (not counted): the writer's first batch compiles its queries; wait until a probe is visible
    warm = free.pop()
    counts[warm] += 1
    await probe(-1, warm, counts[warm], None)
    if failed["lost"] or failed["post"]:
        raise RuntimeError(f"the warm-up event never became visible on B within {args.timeout:g} s ({failed})")
    post_ms.clear()
    sent = probes = 0
    gap = 1 / args.rate
    start = time.perf_counter()
    for n in range(args.events):
        delay = start + n * gap - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if n % args.probe_every == 0 and free:
            user = free.pop(int(rng.integers(len(free))))
            counts[user] += 1
            probes += 1
            spawn(probe(n, user, counts[user], lags))
        else:
            spawn(send(n, background[int(rng.integers(len(background)))]))
        sent += 1
    wall = time.perf_counter() - start
    while tasks:
        await asyncio.gather(*list(tasks))
    post.close()
    get.close()
    return {"lags": lags, "sent": sent, "probes": probes, "send_wall_s": wall, "polls": polls[0],
            "post_ms": post_ms, "failed": failed}


def online(args) -> tuple[dict, int]:
    """The online path: publish, servers A and B, the writer; (drive_online's figures, users in the store)."""
    import uvloop
    from huaxiang.stream import local_redis
    from online_served import online_key, online_server, publish, writer
    with tempfile.TemporaryDirectory() as tmp, local_redis(tmp) as url:
        db = str(Path(tmp) / "live.duckdb")
        con, users = build_store(db)
        con.close()
        published = publish(url, "--db", db)
        print(f"published {len(users):,} users in {published['wall_s']:.1f} s; starting A, B and the writer …",
              flush=True)
        write_key, read_key = online_key(url, "write"), online_key(url, "read")
        logs = Path(tmp)
        with online_server(url, 1, log=logs / "a.log") as (port_a, _), \
                online_server(url, 1, log=logs / "b.log") as (port_b, _), \
                writer(db, url, "--refresh-every", str(args.refresh_every), log=logs / "writer.log"):
            try:
                figures = uvloop.run(drive_online(port_a, port_b, write_key, read_key, users, args))
            except RuntimeError:
                tail = (logs / "writer.log").read_text(errors="replace").strip().splitlines()[-5:]
                print("writer's last lines:\n  " + "\n  ".join(tail))
                raise
    return figures, len(users)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=200.0, help="events per second")
    ap.add_argument("--online", action="store_true", help="also measure the online path (after the in-process one)")
    ap.add_argument("--probe-every", type=int, default=5, help="--online: every Nth event is a polled probe")
    ap.add_argument("--poll-ms", type=float, default=10.0, help="--online: poll interval of a probe's profile")
    ap.add_argument("--timeout", type=float, default=30.0, help="--online: a probe not visible after this is lost")
    ap.add_argument("--refresh-every", type=float, default=2.0, help="--online: the writer's refresh rounds (s)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "out"),
                    help="results folder (default: benchmarks/out; a debug run can write elsewhere)")
    args = ap.parse_args()
    lags, n_users = in_process(args)
    what = f"freshness: Redis entry to refreshed profile, {args.rate:g} events/s, store of {n_users} users"
    print(f"{what}; {len(lags):,} events; {stamp()}; target p99 <= 100 ms")
    base = latency_result("freshness", what, lags, rate_per_s=args.rate)
    save_latency(base, "freshness", Path(args.out) / "latency")
    if not args.online:
        return
    f, n_users = online(args)
    if not f["lags"]:
        raise SystemExit(f"no probe became visible ({f['failed']})")
    what = (f"freshness, online: POST /v1/events on worker A (202) to GET profile on worker B showing it, "
            f"{args.rate:g} events/s, every {args.probe_every}th polled every {args.poll_ms:g} ms, writer's refresh "
            f"rounds every {args.refresh_every:g} s, store of {n_users} users")
    post = np.asarray(f["post_ms"])
    result = latency_result(
        "freshness_online", what, f["lags"], rate_per_s=args.rate, achieved_per_s=f["sent"] / f["send_wall_s"],
        errors=sum(f["failed"].values()), failed=f["failed"], events=f["sent"], probes=f["probes"], polls=f["polls"],
        poll_ms=args.poll_ms, refresh_every_s=args.refresh_every, post_p50_ms=float(np.percentile(post, 50)), post_p99_ms=float(np.percentile(post, 99)),
        in_process={k: base[k] for k in ("samples", "p50_ms", "p90_ms", "p99_ms", "max_ms", "machine")},
        p99_ratio_to_in_process=float(np.percentile(f["lags"], 99)) / base["p99_ms"])
    print(f"{what}; {f['sent']:,} events, {len(f['lags']):,} probes visible, {f['failed']} failed; "
          f"POST p50 {result['post_p50_ms']:.2f} ms; {stamp()}")
    print(f"p99 online {result['p99_ms']:.0f} ms vs in-process {base['p99_ms']:.0f} ms "
          f"({result['p99_ratio_to_in_process']:.2f}×); target p99 <= 100 ms")
    save_latency(result, "freshness_online", Path(args.out) / "latency")


if __name__ == "__main__":
    main()
