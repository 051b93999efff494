"""Benchmark: the server's memory stays bounded under oversized chunked uploads.

    .venv/bin/python benchmarks/body_limit.py [--uploads 8] [--mib 200]

Builds a small store (the Taobao slice, ingested and built), creates a write key and starts `huaxiang serve` with
its default body limit (`--max-body-bytes` 1,000,000). After a warm-up (each route once, so that first-use imports
are not counted), against that one server process, in this order:

  attack     `--uploads` (8) concurrent chunked uploads (Transfer-Encoding: chunked, no Content-Length) of `--mib`
             (200) MiB each to POST /ui/signin (a form, with an Origin header matching the host) and as many to
             POST /v1/events (with the write key), all 16 at once. Each client sends 64 KiB chunks and looks for
             the answer (non-blocking) between two chunks; it stops at the answer. Each must get 413. It runs
             first, so that it cannot reuse memory a baseline freed.
  baselines  one *accepted* body of 900 kB to each route, with a Content-Length, for scale: a sign-in form
             (read whole and parsed; the key in it is wrong, so 401), and a POST /v1/events of about 4,300 valid
             events of the slice's users (200: stored, and every user's profile refreshed — most of its memory
             is that work, not the body).

For each phase: the server's resident memory before (VmRSS of /proc/PID/status), its peak during the phase
(VmHWM, the high-water mark, reset to the current RSS just before the phase by writing 5 to
/proc/PID/clear_refs) and the growth, peak − before, in MB (10^6 bytes). Target: the attack's growth < 50 MB.
Also reported: what each client managed to send before its answer (bytes handed to the kernel: up to a few MB
may still sit in the loopback buffers, unread by the server) and that /healthz still answers afterwards.
Prints the figures, machine and date; writes benchmarks/out/memory/body_limit.json.
"""
from __future__ import annotations

import argparse
import http.client
import json
import select
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from machine import stamp
from served import create_key, server

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SLICE = SHARED / "taobao_userbehavior_head" / "UserBehavior_head.csv.gz"
OUT = Path(__file__).resolve().parent / "out" / "memory"
CHUNK = 64 * 1024
MB = 1e6


def memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of the process, in MB."""
    with open(f"/proc/{pid}/status") as f:
        return {k: int(v.split()[0]) * 1024 / MB for k, v in (line.split(":", 1) for line in f)
                if k in ("VmRSS", "VmHWM")}


def reset_peak(pid: int) -> bool:
    """The process's VmHWM set back to its current RSS (Linux ≥ 4.0); False where that is not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def phase(pid: int, work) -> tuple[dict, object]:
    """Runs `work()` between two readings of the server's memory: ({before, peak, growth in MB}, its result)."""
    reset = reset_peak(pid)
    time.sleep(0.2)
    before = memory(pid)["VmRSS"]
    result = work()
    time.sleep(0.2)
    after = memory(pid)
    figures = {"rss_before_mb": round(before, 1), "peak_rss_mb": round(after["VmHWM"], 1),
               "growth_mb": round(after["VmHWM"] - before, 1), "rss_after_mb": round(after["VmRSS"], 1),
               "peak_reset": reset}
    return figures, result


def chunked_upload(port: int, path: str, headers: dict, total: int) -> dict:
    """POSTs `total` bytes as a chunked body (no Content-Length), stopping when the server answers: {path, status
    (0: none), sent bytes, seconds}."""
    started = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTransfer-Encoding: chunked\r\n{head}\r\n"
              .encode())
    frame = f"{CHUNK:x}\r\n".encode() + b"k" * CHUNK + b"\r\n"
    answer, sent = b"", 0
    try:
        while sent < total and not answer:
            s.sendall(frame)
            sent += CHUNK
            if select.select([s], [], [], 0)[0]:  # an answer (or the connection closed) is waiting
                answer += s.recv(65536) or b"closed"
        if not answer:
            s.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server answered and closed the connection: the answer is read below
    try:
        while b"\r\n" not in answer:
            more = s.recv(65536)
            if not more:
                break
            answer += more
    except OSError:
        pass
    s.close()
    status = int(answer.split(b" ")[1]) if answer.startswith(b"HTTP/1.1") else 0
    return {"path": path, "status": status, "sent_bytes": sent, "seconds": round(time.perf_counter() - started, 2)}


def events_body(users: list[str], items: list[str], size: int) -> bytes:
    """A valid POST /v1/events body of about `size` bytes (views and purchases of the slice's users)."""
    events, n, length = [], 0, len('{"events": []}')
    while True:
        kind = "purchase" if n % 10 == 9 else "view"
        event = {"event_id": f"bench-body-{n:06d}", "user_id": users[n % len(users)],
                 "item_id": items[(n * 7) % len(items)], "category_id": f"taobao:{1000000 + n % 500}",
                 "type": kind, "ts": f"2017-12-03T{10 + n % 12:02d}:{n % 60:02d}:00",
                 "session_id": f"bench-session-{n // 20:05d}"}
        if kind == "purchase":
            event.update(price=19.9, quantity=1)
        piece = len(json.dumps(event)) + 2
        if length + piece > size:
            return json.dumps({"events": events}).encode()
        events.append(event)
        length += piece
        n += 1


def post(port: int, path: str, body: bytes, headers: dict) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    answer = resp.read()
    conn.close()
    return resp.status, json.loads(answer) if resp.getheader("content-type", "").startswith("application/json") \
        else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uploads", type=int, default=8, help="chunked uploads to each of the two routes")
    ap.add_argument("--mib", type=int, default=200, help="size of each upload, MiB")
    ap.add_argument("--accepted-kb", type=int, default=900, help="size of the accepted baseline body, kB")
    args = ap.parse_args()
    cli = [sys.executable, "-m", "huaxiang.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "body.duckdb")
        print("building the store (Taobao slice) …", flush=True)
        for step in (["ingest", str(SLICE), "--format", "taobao", "--namespace", "taobao"], ["build"]):
            subprocess.run(cli + step + ["--db", db], check=True, capture_output=True)
        key = create_key(cli, db, "write")
        import duckdb
        with duckdb.connect(db, read_only=True) as con:
            users = [u for (u,) in con.execute("SELECT user_id FROM profiles ORDER BY user_id").fetchall()]
            items = [i for (i,) in con.execute("SELECT DISTINCT item_id FROM events ORDER BY 1 LIMIT 5000")
                     .fetchall()]
        body = events_body(users, items, args.accepted_kb * 1000)
        with server(cli, db) as (port, proc):
            limit = 1_000_000  # the server's default --max-body-bytes
            origin = f"http://127.0.0.1:{port}"
            json_headers = {"X-API-Key": key, "Content-Type": "application/json"}
            # warm-up: each route once, so that first-use imports and caches are not counted as growth
            small = events_body(users, items, 2_000).replace(b"bench-body-", b"bench-warm-")
            assert post(port, "/v1/events", small, json_headers)[0] == 200
            post(port, "/ui/signin", b"key=nope&next=/ui", {"Origin": origin,
                                                             "Content-Type": "application/x-www-form-urlencoded"})
            for path, headers in (("/ui/signin", {"Origin": origin}), ("/v1/events", json_headers)):
                chunked_upload(port, path, headers, 2 * limit)
            started = memory(proc.pid)

            form = {"Origin": origin, "Content-Type": "application/x-www-form-urlencoded"}
            jobs = [("/ui/signin", form)] * args.uploads + [("/v1/events", json_headers)] * args.uploads
            total = args.mib * 1024 * 1024
            t = time.perf_counter()

            def upload_all() -> list[dict]:
                with ThreadPoolExecutor(len(jobs)) as pool:
                    return list(pool.map(lambda job: chunked_upload(port, job[0], job[1], total), jobs))
            attack, uploads = phase(proc.pid, upload_all)  # first: no memory freed by a baseline to reuse
            attack["seconds"] = round(time.perf_counter() - t, 2)

            signin = b"key=" + b"k" * (len(body) - len(b"key=&next=/ui")) + b"&next=/ui"
            form_base, (form_status, _) = phase(proc.pid, lambda: post(port, "/ui/signin", signin, form))
            form_base.update(body_bytes=len(signin), status=form_status)
            baseline, (status, answer) = phase(proc.pid, lambda: post(port, "/v1/events", body, json_headers))
            baseline.update(body_bytes=len(body), status=status, events=answer.get("received"),
                            added=answer.get("added"))
            health = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            health.request("GET", "/healthz")
            healthz = health.getresponse().status
    sent = [u["sent_bytes"] for u in uploads]
    result = {
        "benchmark": "body_limit", "machine": stamp(),
        "what": f"{len(jobs)} concurrent chunked uploads of {args.mib} MiB (no Content-Length) — {args.uploads} to "
                f"POST /ui/signin, {args.uploads} to POST /v1/events — against max-body-bytes {limit:,}; baseline: "
                f"one accepted {len(body) / 1000:,.0f} kB body to each route",
        "max_body_bytes": limit, "upload_bytes": total, "server_rss_at_start_mb": round(started["VmRSS"], 1),
        "oversized_uploads": attack, "target_growth_mb": 50, "baseline_accepted_form": form_base,
        "baseline_accepted_events": baseline,
        "all_413": all(u["status"] == 413 for u in uploads), "healthz_after": healthz,
        "sent_bytes_min": min(sent), "sent_bytes_max": max(sent), "uploads": uploads}
    print(f"{result['what']}; {stamp()}")
    print(f"  oversized: {len(jobs)} × {args.mib} MiB chunked in {attack['seconds']:.1f} s → statuses "
          f"{sorted({u['status'] for u in uploads})} ({sum(u['status'] == 413 for u in uploads)}/{len(jobs)} got "
          f"413); RSS {attack['rss_before_mb']:.1f} MB before, peak {attack['peak_rss_mb']:.1f} MB: growth "
          f"{attack['growth_mb']:.1f} MB (target < 50 MB); /healthz after: {healthz}")
    for path in ("/ui/signin", "/v1/events"):
        mine = [u["sent_bytes"] / MB for u in uploads if u["path"] == path]
        print(f"  {path}: each client sent {min(mine):.2f}–{max(mine):.2f} MB before its answer")
    print(f"  baseline: 1 accepted sign-in form of {len(signin):,} bytes (read whole, a wrong key) → {form_status}; "
          f"RSS {form_base['rss_before_mb']:.1f} MB before, peak {form_base['peak_rss_mb']:.1f} MB: growth "
          f"{form_base['growth_mb']:.1f} MB")
    print(f"  baseline: 1 accepted events batch of {len(body):,} bytes ({baseline['events']:,} events) → {status}; "
          f"RSS {baseline['rss_before_mb']:.1f} MB before, peak {baseline['peak_rss_mb']:.1f} MB: growth "
          f"{baseline['growth_mb']:.1f} MB")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "body_limit.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {OUT / 'body_limit.json'}")


if __name__ == "__main__":
    main()
