"""The online mode served for real, for the benchmarks (online_scale.py, freshness.py --online, soak.py, publish.py):
a throwaway redis-server, `huaxiang publish`, keys in Redis, `huaxiang serve --online … --workers N` and the one
writer (`huaxiang consume … --publish …`), each in its own process; a small keep-alive HTTP client for asyncio; and
the resident memory of a process and its children (/proc)."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from huaxiang.ports import free_port

CLI = [sys.executable, "-m", "huaxiang.cli"]


def run_cli(*args: str, timeout: float | None = None) -> str:
    """`huaxiang ARGS`; its stdout (its stderr's last line in the error when it fails)."""
    done = subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
        raise RuntimeError(f"huaxiang {' '.join(args[:2])} failed ({done.returncode}): {' / '.join(tail)}")
    return done.stdout


def build_demo(db: str) -> None:
    """The demo store (`huaxiang demo`: the bundled real slices of seven sources as tenants, titles, scores and an
    item-KNN recommender, 30,550 users)."""
    run_cli("demo", "--db", db, "--show", "0")


def store_copy(store: str | None, db: str) -> None:
    """`db` as a copy of `store` and its trained models, or (no store given) the demo store built there."""
    import shutil
    if store:
        shutil.copy(store, db)
        if Path(store + ".models").is_dir():
            shutil.copytree(store + ".models", db + ".models")
    else:
        print("building the demo store …", flush=True)
        build_demo(db)


def publish(url: str, *source: str) -> dict:
    """`huaxiang publish --to URL SOURCE… --json`: its JSON report, plus the wall time seen from here."""
    t = time.perf_counter()
    out = run_cli("publish", "--to", url, *source, "--json")
    wall = time.perf_counter() - t
    start = out.find("{")
    report = json.loads(out[start:]) if start >= 0 else {}
    report["wall_s"] = wall
    return report


def online_key(url: str, scope: str = "read") -> str:
    """A new key of `scope` in the online store (the last line `huaxiang keys create --online` prints)."""
    return run_cli("keys", "create", "--online", url, "--scope", scope).strip().splitlines()[-1]


def store_key(db: str, scope: str = "read") -> str:
    return run_cli("keys", "create", "--scope", scope, "--db", db).strip().splitlines()[-1]


def healthz(port: int, timeout: float = 0.5) -> dict | None:
    """GET /healthz's JSON, or None when nothing answers."""
    import http.client
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        return json.loads(body) if resp.status == 200 else None
    except (OSError, ValueError):
        return None


@contextmanager
def process(args: list[str], name: str, port: int | None = None, wait_s: float = 120.0, log: Path | None = None):
    """`huaxiang ARGS` in its own process until the block ends; with `port`, once GET /healthz answers there.
    Its output goes to `log` (default: nowhere); SIGTERM at the end, SIGKILL 15 s later."""
    out = open(log, "ab") if log else subprocess.DEVNULL
    proc = subprocess.Popen(CLI + args, stdout=out, stderr=subprocess.STDOUT if log else subprocess.DEVNULL)
    try:
        if port is not None:
            deadline = time.monotonic() + wait_s
            while healthz(port) is None:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with status {proc.returncode}"
                                       + (f" (see {log})" if log else ""))
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not answer /healthz within {wait_s:g} s")
                time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()


@contextmanager
def online_server(url: str, workers: int = 1, *options: str, log: Path | None = None):
    """`huaxiang serve --online URL --workers N` on a free loopback port; yields (port, process)."""
    port = free_port()
    args = ["serve", "--online", url, "--workers", str(workers), "--host", "127.0.0.1", "--port", str(port), *options]
    with process(args, f"huaxiang serve --online --workers {workers}", port, log=log) as proc:
        if workers > 1:
            wait_workers(port, workers)
        yield port, proc


@contextmanager
def embedded_server(db: str, *options: str, log: Path | None = None):
    """`huaxiang serve --db DB` (today's single process) on a free loopback port; yields (port, process)."""
    port = free_port()
    args = ["serve", "--db", db, "--host", "127.0.0.1", "--port", str(port), *options]
    with process(args, "huaxiang serve --db", port, log=log) as proc:
        yield port, proc


@contextmanager
def writer(db: str, url: str, *options: str, log: Path | None = None):
    """The one writer: `huaxiang consume --db DB --redis URL --publish URL`; yields its process."""
    with process(["consume", "--db", db, "--redis", url, "--publish", url, *options], "huaxiang consume",
                 log=log) as proc:
        yield proc


def wait_workers(port: int, workers: int, wait_s: float = 60.0) -> set[int]:
    """Waits until fresh connections have met `workers` distinct worker pids (each worker is up); returns them."""
    pids: set[int] = set()
    deadline = time.monotonic() + wait_s
    while len(pids) < workers and time.monotonic() < deadline:
        h = healthz(port)
        if h and "pid" in h:
            pids.add(int(h["pid"]))
        else:
            time.sleep(0.1)
    return pids


# ---------------------------------------------------------------- memory (/proc)

def children(pid: int) -> list[int]:
    """`pid` and all its descendants, parents first."""
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo.extend(sorted(kids.get(p, [])))
    return out


def rss_mb(pid: int) -> float | None:
    """Resident memory (VmRSS) of one process in MB (10^6 bytes); None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        return None
    return None


def role(pid: int) -> str:
    """A short name for a process from its command line (e.g. 'serve', 'multiprocessing child')."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(a.decode(errors="replace") for a in argv if a)
    if "multiprocessing" in text and "spawn_main" in text:
        return "worker (spawned)"
    if "resource_tracker" in text:
        return "resource tracker"
    for word in ("serve", "consume", "publish"):
        if f" {word}" in text:
            return word
    return text[:60]


def tree_memory(pid: int) -> list[dict]:
    """[{pid, role, rss_mb}] for `pid` and each of its descendants."""
    return [{"pid": p, "role": role(p), "rss_mb": round(m, 1)} for p in children(pid)
            if (m := rss_mb(p)) is not None]


# ---------------------------------------------------------------- a keep-alive HTTP/1.1 client for asyncio

class Conn:
    """One keep-alive connection to 127.0.0.1:port; `request` returns (status, body). Not for concurrent use."""

    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None

    async def open(self) -> "Conn":
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                      body: bytes | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
        for k, v in (headers or {}).items():
            head += f"{k}: {v}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        try:
            self.writer.write(head.encode() + b"\r\n" + (body or b""))
            await self.writer.drain()
            raw = await self.reader.readuntil(b"\r\n\r\n")
            status = int(raw.split(b" ", 2)[1])
            length = next((int(line.split(b":", 1)[1]) for line in raw.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            data = await self.reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            self.close()  # the next request opens a fresh connection
            raise
        if b"connection: close" in raw.lower():
            self.close()
        return status, data


class Pool:
    """`size` keep-alive connections shared by concurrent requests (a request waits for a free one)."""

    def __init__(self, port: int, size: int):
        self.port, self.size = port, size
        self.free: asyncio.Queue = asyncio.Queue()

    async def open(self) -> "Pool":
        for _ in range(self.size):
            self.free.put_nowait(await Conn(self.port).open())
        return self

    async def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                      body: bytes | None = None) -> tuple[int, bytes]:
        """(status, body); status 0 when the request failed on the wire."""
        conn = await self.free.get()
        try:
            return await conn.request(method, path, headers, body)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            return 0, b""
        finally:
            self.free.put_nowait(conn)

    def close(self) -> None:
        while not self.free.empty():
            self.free.get_nowait().close()


def quote_id(user_id: str) -> str:
    from urllib.parse import quote
    return quote(user_id, safe="")


def cores() -> int:
    return len(os.sched_getaffinity(0))
