"""Benchmark: crash safety — kill -9 the consumer or the server while 100k events stream in; after restarts every
event is in the store exactly once.

    .venv/bin/python benchmarks/crash.py [--events 100000] [--kills 3] [--part consumer|server|both]

consumer: a producer XADDs the events to a real Debian redis-server (half carry an `event_id`, half get the
  default one from their stream entry id) while `huaxiang consume` runs as a subprocess; it is killed with
  SIGKILL `--kills` times at random moments (seeded) and started again each time, then left to drain the stream.
server: a client POSTs the events in batches of 500 (all with ids) to `huaxiang serve`; the server is killed with
  SIGKILL `--kills` times mid-stream and restarted; the client resends any batch that got no answer (at-least-once
  delivery, as a real client does).
Either way the store must then hold each of the events exactly once. Both start from a store built from the
Taobao slice. Prints counts, kills, wall time and the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import duckdb
import numpy as np

from huaxiang.ports import free_port
from machine import stamp
from served import create_key

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CLI = [sys.executable, "-m", "huaxiang.cli"]


def events(n: int, prefix: str, rng, with_ids=True):
    users = rng.integers(1, 5000, n)
    items = rng.integers(1, 10**6, n)
    types = rng.choice(["view", "view", "view", "cart", "fav", "buy"], n)
    for i in range(n):
        e = {"user_id": f"crash:{users[i]}", "item_id": f"crash:{items[i]}", "type": str(types[i]),
             "ts": f"2024-05-{1 + i % 28:02d}T{i % 24:02d}:00:00"}
        if with_ids or i % 2 == 0:
            e["event_id"] = f"{prefix}-{i}"
        yield e


def counted(db: str, id_regex: str) -> tuple[int, int]:
    """(rows, distinct event ids) among the events whose id matches `id_regex`."""
    con = duckdb.connect(db, read_only=True)
    total, distinct = con.execute("SELECT count(*), count(DISTINCT event_id) FROM events "
                                  "WHERE regexp_matches(event_id, ?)", [id_regex]).fetchone()
    con.close()
    return total, distinct


def kill_times(rng, kills: int, lo: float, hi: float) -> list[float]:
    return sorted(rng.uniform(lo, hi, kills))


def consumer_part(db: str, n: int, kills: int, rng) -> dict:
    import redis

    from huaxiang.stream import local_redis
    with tempfile.TemporaryDirectory() as tmp, local_redis(tmp) as url:
        r = redis.Redis.from_url(url)

        def produce():
            pipe = r.pipeline(transaction=False)
            for i, e in enumerate(events(n, "c", np.random.default_rng(1), with_ids=False), 1):
                pipe.xadd("crash", {"event": json.dumps(e)})
                if i % 1000 == 0:
                    pipe.execute()
                    time.sleep(0.02)  # a stream, not one burst
            pipe.execute()

        cmd = CLI + ["consume", "--db", db, "--redis", url, "--stream", "crash", "--batch", "500", "--idle-exit", "5"]
        producer = threading.Thread(target=produce)
        start = time.perf_counter()
        producer.start()
        killed = 0
        for at in kill_times(rng, kills, 3, 25):
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(max(0.0, start + at - time.perf_counter()))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed += 1
            proc.wait()
        producer.join()
        final = subprocess.run(cmd, capture_output=True, text=True)  # drains the stream, pending entries first
        wall = time.perf_counter() - start
        if final.returncode:
            raise SystemExit(final.stderr)
        pending = r.xpending("crash", "huaxiang")["pending"]
    total, distinct = counted(db, "^(c-|redis:crash:)")
    return {"part": "consumer", "sent": n, "stored": total, "distinct": distinct, "kills": killed,
            "pending_after": pending, "seconds": wall}


def post(base: str, key: str, batch: list) -> bool:
    req = urllib.request.Request(base + "/v1/events", data=json.dumps({"events": batch}).encode(), method="POST",
                                 headers={"X-API-Key": key, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def server_part(db: str, n: int, kills: int, rng) -> dict:
    key = create_key(CLI, db, "write")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = CLI + ["serve", "--db", db, "--port", str(port)]
    state = {"proc": None}

    def start_server():
        state["proc"] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    batches = [list(b) for b in np.array_split(np.array(list(events(n, "s", np.random.default_rng(2))), dtype=object),
                                               max(1, n // 500))]
    start = time.perf_counter()
    start_server()
    killer_done = threading.Event()
    killed = [0]

    def killer():
        for at in kill_times(rng, kills, 5, 25):
            time.sleep(max(0.0, start + at - time.perf_counter()))
            state["proc"].send_signal(signal.SIGKILL)
            state["proc"].wait()
            killed[0] += 1
            start_server()
        killer_done.set()

    threading.Thread(target=killer, daemon=True).start()
    resent = 0
    for b in batches:
        while not post(base, key, b):  # no answer: the server is down or died mid-batch; send it again
            resent += 1
            time.sleep(0.2)
    killer_done.wait()
    wall = time.perf_counter() - start
    state["proc"].terminate()
    state["proc"].wait(10)
    total, distinct = counted(db, "^s-")
    return {"part": "server", "sent": n, "stored": total, "distinct": distinct, "kills": killed[0],
            "resent_batches": resent, "seconds": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--part", default="both", choices=["consumer", "server", "both"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "crash.duckdb")
        for step in (["ingest", str(SHARED / "taobao_userbehavior_head" / "UserBehavior_head.csv.gz"), "--format",
                      "taobao", "--namespace", "taobao"], ["build"]):
            subprocess.run(CLI + step + ["--db", db], check=True, capture_output=True, env=os.environ.copy())
        for part in (["consumer", "server"] if args.part == "both" else [args.part]):
            results.append((consumer_part if part == "consumer" else server_part)(db, args.events, args.kills, rng))
    print(f"crash safety, {args.events:,} events per part; {stamp()}")
    ok = True
    for r in results:
        exact = r["stored"] == r["sent"] == r["distinct"]
        ok &= exact
        extra = (f", {r['pending_after']} left pending" if "pending_after" in r
                 else f", {r['resent_batches']} batch sends repeated")
        print(f"{r['part']}: {r['kills']} × kill -9; {r['sent']:,} sent, {r['stored']:,} stored "
              f"({r['distinct']:,} distinct){extra}; {r['seconds']:.0f} s — "
              f"{'exactly once' if exact else 'NOT exactly once'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
