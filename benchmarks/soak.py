"""Benchmark: a bounded soak of the online mode — mixed reads over the workers and event batches through the stream,
with the one writer running; errors, latency per minute, and whether memory stays flat.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--rate 1000] [--batches 50] [--batch-events 10]
                                        [--workers 2] [--warmup 60] [--store DB] [--name soak]

Builds the demo store (`huaxiang demo`: 30,550 users of seven tenants, titles, item-KNN), or copies `--store`,
publishes it to a throwaway redis-server on loopback, and starts `huaxiang serve --online … --workers N` (with
`--key-rate 100000`) and the writer (`huaxiang consume --db STORE --redis … --publish …`), each in its own process.
After a warm-up of `--warmup` seconds (not counted), for `--minutes` minutes, open loop (requests scheduled at fixed
rates whatever the servers' speed; latency counted from the scheduled time):

  reads   `--rate` GETs a second over 64 keep-alive connections: 60% /v1/users/{id}/profile, 30%
          …/recommendations?k=10&explain=true, 10% /v1/search?q=WORD&user_id=ID (users drawn at random, seeded)
  writes  `--batches` POST /v1/events a second, each of `--batch-events` view events (unique ids, the current
          time) for random users, to items of their own tenant; each must get 202

Every minute: errors (a read not 200, a write not 202, or a failed connection), p50/p99 of each route, the writer's
backlog (entries of the stream not yet acknowledged), and the resident memory (VmRSS) of the server's processes and
the writer's. Requests still unanswered `--drain` (30) seconds after the last one was due are cancelled and
count as errors (a saturated machine cannot stretch the run). At the end, how long the writer took to catch up
(at most 120 s). Goal (issue 20): no error; RSS of the workers and the writer flat (start, after the warm-up,
against end). Prints per-minute lines, the summary and the machine; writes
benchmarks/out/latency/NAME.json (all reads' percentiles, per minute in `minutes`) and
benchmarks/out/memory/NAME.json (RSS of every process, per minute); NAME is `--name`, default soak.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import latency_result, save_latency, stamp  # noqa: E402
from online_served import (Pool, cores, store_copy, online_key, online_server, publish, quote_id,  # noqa: E402
                           tree_memory, writer)

WORDS = ["bag", "lipstick", "cream", "christmas", "hair", "card", "candle", "mask", "heart", "set", "shampoo",
         "gift", "light", "box", "cotton", "耳机", "手机", "面膜"]
MIX = (("profile", 0.6), ("recommendations", 0.3), ("search", 0.1))


def read_paths(users: list[str], n: int, seed: int) -> list[tuple[str, str]]:
    """n (route, path) pairs drawn by MIX."""
    rng = np.random.default_rng(seed)
    names = [m for m, _ in MIX]
    kinds = rng.choice(len(MIX), n, p=[p for _, p in MIX])
    who = rng.integers(0, len(users), n)
    words = rng.integers(0, len(WORDS), n)
    out = []
    for k, u, w in zip(kinds, who, words):
        uid = quote_id(users[int(u)])
        route = names[int(k)]
        if route == "profile":
            out.append((route, f"/v1/users/{uid}/profile"))
        elif route == "recommendations":
            out.append((route, f"/v1/users/{uid}/recommendations?k=10&explain=true"))
        else:
            out.append((route, f"/v1/search?q={quote_id(WORDS[int(w)])}&user_id={uid}&k=10"))
    return out


class Minutes:
    """Latencies (ms) and statuses per minute and route."""

    def __init__(self):
        self.lat: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.status: dict[int, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
        self.answered: Counter = Counter()  # reads answered in each minute (by when the answer came)
        self.unanswered = 0  # requests still waiting `--drain` seconds after the last was due (cancelled)

    def add(self, minute: int, route: str, ms: float, status: int) -> None:
        self.lat[minute][route].append(ms)
        self.status[minute][route][status] += 1


async def soak(port: int, read_key: str, write_key: str, users: list[str], items: dict[str, list[str]], args,
               on_minute) -> tuple[Minutes, float, list[float]]:
    """The open-loop reads and writes for `args.minutes`; on_minute(i) runs after each minute (in a thread)."""
    from huaxiang.schema import tenant_of
    reads = await Pool(port, args.connections).open()
    writes = await Pool(port, 8).open()
    rh, wh = {"X-API-Key": read_key}, {"X-API-Key": write_key}
    paths = read_paths(users, 50_000, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    writable = [u for u in users if items.get(tenant_of(u))]
    pending: set[asyncio.Task] = set()
    stats = Minutes()
    all_reads: list[float] = []

    def spawn(coro) -> None:
        task = asyncio.create_task(coro)
        pending.add(task)
        task.add_done_callback(pending.discard)

    async def read(i: int, due: float, counted: bool) -> None:
        route, path = paths[i % len(paths)]
        status, _ = await reads.request("GET", path, rh)
        now = time.perf_counter()
        ms = (now - due) * 1000
        if counted:
            stats.add(int((due - t0) // 60), route, ms, status)
            stats.answered[int((now - t0) // 60)] += 1
            all_reads.append(ms)

    batch_no = [0]

    def schedule(start: float, seconds: float):
        """(due time, 0 read / 1 write, index) in time order: the reads' and the writes' fixed rates merged."""
        n_read, n_write = int(args.rate * seconds), int(args.batches * seconds)
        i = j = 0
        while i < n_read or j < n_write:
            tr = start + i / args.rate if i < n_read else float("inf")
            tw = start + j / args.batches if j < n_write else float("inf")
            if tr <= tw:
                yield tr, 0, i
                i += 1
            else:
                yield tw, 1, j
                j += 1

    async def write(due: float, counted: bool) -> None:
        batch_no[0] += 1
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        events = []
        for j in range(args.batch_events):
            u = writable[int(rng.integers(len(writable)))]
            pool = items[tenant_of(u)]
            events.append({"event_id": f"soak-{batch_no[0]}-{j}", "user_id": u, "type": "view", "ts": now,
                           "item_id": pool[int(rng.integers(len(pool)))]})
        status, _ = await writes.request("POST", "/v1/events", wh, json.dumps({"events": events}).encode())
        ms = (time.perf_counter() - due) * 1000
        if counted:
            stats.add(int((due - t0) // 60), "events", ms, status)

    async def run(seconds: float, counted: bool) -> float:
        start = time.perf_counter()
        minute = 0
        for due, kind, i in schedule(start, seconds):
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            spawn(read(i, due, counted) if kind == 0 else write(due, counted))
            if counted and due - start >= (minute + 1) * 60:
                loop.run_in_executor(None, on_minute, minute)
                minute += 1
        if pending:  # bounded: what is not answered `--drain` s after the last was due is cancelled and counted
            _, late = await asyncio.wait(list(pending), timeout=args.drain)
            for task in late:
                task.cancel()
            if counted:
                stats.unanswered += len(late)
            await asyncio.gather(*late, return_exceptions=True)
        if counted and minute < args.minutes:
            await loop.run_in_executor(None, on_minute, minute)
        return time.perf_counter() - start

    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    await run(args.warmup, False)
    await loop.run_in_executor(None, on_minute, -1)  # "start": after the warm-up
    t0 = time.perf_counter()
    wall = await run(args.minutes * 60, True)
    reads.close()
    writes.close()
    return stats, wall, all_reads


def minute_row(stats: Minutes, minute: int) -> dict:
    row: dict = {"minute": minute + 1, "routes": {}}
    errors = 0
    for route, lat in sorted(stats.lat[minute].items()):
        ok = 202 if route == "events" else 200
        st = stats.status[minute][route]
        bad = sum(n for s, n in st.items() if s != ok)
        errors += bad
        row["routes"][route] = {"requests": len(lat), "errors": bad,
                                "p50_ms": round(float(np.percentile(lat, 50)), 3),
                                "p99_ms": round(float(np.percentile(lat, 99)), 3),
                                "statuses": {str(s): n for s, n in sorted(st.items())}}
    row["errors"] = errors
    return row


def backlog_ready(r) -> bool:
    import redis
    try:
        return bool(r.xinfo_groups("huaxiang:events"))
    except redis.ResponseError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the measured soak (default: 10)")
    ap.add_argument("--rate", type=float, default=1000.0, help="reads per second (default: 1,000)")
    ap.add_argument("--batches", type=float, default=50.0, help="POST /v1/events per second (default: 50)")
    ap.add_argument("--batch-events", type=int, default=10, help="events per batch (default: 10)")
    ap.add_argument("--workers", type=int, default=2, help="online workers (default: 2)")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds of load before the soak, not counted")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--drain", type=float, default=30.0,
                    help="seconds to wait for answers after the last request was due; later ones count as errors")
    ap.add_argument("--name", default="soak", help="result file name (latency/NAME.json, memory/NAME.json)")
    ap.add_argument("--store", help="use a copy of this store (default: build the demo store, ~1-2 min)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "out"),
                    help="results folder (default: benchmarks/out; a debug run can write elsewhere)")
    args = ap.parse_args()
    import duckdb
    import redis
    from huaxiang.schema import tenant_of
    from huaxiang.stream import local_redis
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "store.duckdb")
        store_copy(args.store, db)
        with duckdb.connect(db, read_only=True) as con:
            users = [u for (u,) in con.execute("SELECT user_id FROM profiles ORDER BY user_id").fetchall()]
            items: dict[str, list[str]] = defaultdict(list)
            for (i,) in con.execute("SELECT DISTINCT item_id FROM events WHERE item_id IS NOT NULL ORDER BY 1 "
                                    "LIMIT 200000").fetchall():
                items[tenant_of(i)].append(i)
        logs = Path(tmp)
        with local_redis(tmp) as url:
            r = redis.Redis.from_url(url)
            published = publish(url, "--db", db)
            print(f"published {len(users):,} users in {published['wall_s']:.1f} s; {stamp()}", flush=True)
            read_key, write_key = online_key(url, "read"), online_key(url, "write")
            with online_server(url, args.workers, "--key-rate", "100000", log=logs / "serve.log") as (port, server), \
                    writer(db, url, log=logs / "writer.log") as wproc:
                ready = time.monotonic() + 60
                while time.monotonic() < ready and not backlog_ready(r):
                    time.sleep(0.2)  # the writer has made its consumer group: it is up
                memory: dict = {"idle": {"server": tree_memory(server.pid), "writer": tree_memory(wproc.pid)}}
                per_minute: dict[int, dict] = {}

                def backlog() -> dict:
                    try:
                        groups = r.xinfo_groups("huaxiang:events")
                    except redis.ResponseError:
                        return {}
                    g = groups[0] if groups else {}
                    return {"pending": g.get("pending"), "lag": g.get("lag"), "length": r.xlen("huaxiang:events")}

                def on_minute(minute: int) -> None:
                    snap = {"server": tree_memory(server.pid), "writer": tree_memory(wproc.pid), "stream": backlog()}
                    if minute < 0:
                        memory["start"] = snap
                    else:
                        per_minute[minute] = snap

                print(f"soak: {args.minutes:g} min, {args.rate:g} reads/s + {args.batches:g} batches/s of "
                      f"{args.batch_events} events, {args.workers} worker(s) …", flush=True)
                stats, wall, all_reads = uvloop.run(soak(port, read_key, write_key, users, items, args, on_minute))
                memory["end"] = {"server": tree_memory(server.pid), "writer": tree_memory(wproc.pid),
                                 "stream": backlog()}
                t = time.perf_counter()
                while time.perf_counter() - t < 120:
                    b = backlog()
                    if not b.get("pending") and not b.get("lag"):
                        break
                    time.sleep(0.5)
                caught_up = {"seconds": round(time.perf_counter() - t, 1), **backlog()}
                memory["after_catch_up"] = {"writer": tree_memory(wproc.pid)}
    minutes = []
    for m in sorted(stats.lat):
        row = minute_row(stats, m)
        snap = per_minute.get(m, {})
        row["rss_mb"] = {"server": sum(p["rss_mb"] for p in snap.get("server", [])),
                         "writer": sum(p["rss_mb"] for p in snap.get("writer", []))}
        row["stream"] = snap.get("stream", {})
        row["reads_answered"] = stats.answered.get(m, 0)
        minutes.append(row)
        routes = "  ".join(f"{k} p50 {v['p50_ms']:.1f} p99 {v['p99_ms']:.1f}" for k, v in row["routes"].items())
        print(f"  minute {row['minute']:>2}: errors {row['errors']}, {row['reads_answered']:,} reads answered  "
              f"{routes}  RSS server "
              f"{row['rss_mb']['server']:,.0f} MB, writer {row['rss_mb']['writer']:,.0f} MB; backlog "
              f"{row['stream'].get('lag')}", flush=True)
    errors = sum(m["errors"] for m in minutes) + stats.unanswered
    n_reads = len(all_reads)
    routes = {}
    for route in sorted({k for m in stats.lat.values() for k in m}):
        lat = [x for m in stats.lat.values() for x in m.get(route, [])]
        bad = sum(n for m in stats.status.values() for s, n in m.get(route, Counter()).items()
                  if s != (202 if route == "events" else 200))
        routes[route] = {"requests": len(lat), "errors": bad, "p50_ms": round(float(np.percentile(lat, 50)), 3),
                         "p99_ms": round(float(np.percentile(lat, 99)), 3), "max_ms": round(float(max(lat)), 3)}

    def total(snap: dict, part: str) -> float:
        return round(sum(p["rss_mb"] for p in snap.get(part, [])), 1)

    rss = {part: {"idle": total(memory["idle"], part), "start": total(memory["start"], part),
                  "end": total(memory["end"], part)} for part in ("server", "writer")}
    what = (f"soak: {args.minutes:g} min of {args.rate:g} reads/s (profile 60%, recommendations 30%, search 10%) + "
            f"{args.batches:g} POST /v1/events/s of {args.batch_events} events, online, {args.workers} worker(s), "
            f"writer running; {len(users):,} users")
    for route, v in routes.items():
        print(f"  {route:16s} {v['requests']:>8,} requests, {v['errors']} errors, p50 {v['p50_ms']:.2f} ms, "
              f"p99 {v['p99_ms']:.2f} ms, max {v['max_ms']:.1f} ms")
    caught = (f"writer caught up {caught_up['seconds']:.1f} s after the load" if not caught_up.get("lag")
              else f"writer still {caught_up['lag']:,} entries behind {caught_up['seconds']:.0f} s after the load")
    print(f"{what}: {n_reads:,} reads answered ({stats.unanswered:,} not within {args.drain:g} s of the end) and "
          f"{routes.get('events', {}).get('requests', 0):,} event batches, {errors} errors; RSS server "
          f"{rss['server']['start']:,.0f} → {rss['server']['end']:,.0f} MB, writer "
          f"{rss['writer']['start']:,.0f} → {rss['writer']['end']:,.0f} MB; {caught}; {stamp()}")
    result = latency_result("soak", what, all_reads, offered_per_s=args.rate, achieved_per_s=n_reads / wall,
                            errors=errors, unanswered=stats.unanswered, routes=routes, workers=args.workers,
                            cores=cores(),
                            batches_per_s=args.batches, batch_events=args.batch_events, writer_catch_up=caught_up,
                            rss_mb=rss, minutes=minutes)
    save_latency(result, args.name, Path(args.out) / "latency")
    memory_out = Path(args.out) / "memory"
    memory_out.mkdir(parents=True, exist_ok=True)
    mem = {"benchmark": "soak", "what": what, "machine": stamp(), "rss_mb": rss, "processes": memory,
           "per_minute": {str(m + 1): v for m, v in sorted(per_minute.items())}}
    (memory_out / f"{args.name}.json").write_text(json.dumps(mem, indent=1))
    print(f"wrote {memory_out / f'{args.name}.json'}")


if __name__ == "__main__":
    main()
