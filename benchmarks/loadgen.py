"""An open-loop HTTP load generator for the loopback benchmarks (api_load.py, feast_peer.py).

Open loop: request i is *scheduled* at start + i / rate whatever the server's speed, sent over one of a fixed pool
of keep-alive connections, and its latency counts from that scheduled time, so a server that stalls cannot hide
the queue that builds up behind it ("coordinated omission"). The requests are prepared bytes (`get`, `post`), one
per slot, cycled; the caller draws them from a seeded sequence so that two systems get the same one.

A request that fails on a connection the server closed between two requests (a keep-alive connection recycled by
the server, e.g. a worker restart) is sent once more on a new connection, as HTTP clients do for idempotent
requests; its latency still counts from the scheduled time, and `retries` counts them. Any other failure, or a
second one, counts as status 0.

With `drain`, a run against a server that cannot keep up stays bounded: what has not been answered `drain` seconds
after the last scheduled send is abandoned and counted as a timeout (status 0), with the time it had waited so far
as its latency (a lower bound), so an overloaded server shows as errors and a lower achieved rate.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

FAILURES = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError)


def get(path: str, host: str, headers: dict[str, str] | None = None) -> bytes:
    """A prepared `GET path` (HTTP/1.1, keep-alive)."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


def post(path: str, host: str, body: bytes, headers: dict[str, str] | None = None,
         content_type: str = "application/json") -> bytes:
    """A prepared `POST path` with `body` (HTTP/1.1, keep-alive)."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, int]:
    """Sends one prepared request and reads its whole answer; (status, body bytes)."""
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    lines = head.lower().split(b"\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in lines if line.startswith(b"content-length:")), None)
    if length is not None:
        await reader.readexactly(length)
        return status, length
    if any(line.startswith(b"transfer-encoding:") and b"chunked" in line for line in lines):
        size = 0
        while True:
            n = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            await reader.readexactly(n + 2)
            size += n
            if n == 0:
                return status, size
    return status, 0


async def attempt(conn, request: bytes, host: str, port: int) -> tuple[tuple, int, int, bool]:
    """`exchange` on conn, once more on a new connection if the server had closed this one between two requests;
    (the connection to keep, status (0: failed), body bytes, whether it was sent again)."""
    retried = False
    try:
        try:
            status, size = await exchange(*conn, request)
        except (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError) as e:
            if isinstance(e, asyncio.IncompleteReadError) and e.partial:
                raise  # the server had begun to answer: a real failure, not a recycled connection
            conn[1].close()
            conn, retried = await asyncio.open_connection(host, port), True
            status, size = await exchange(*conn, request)
    except FAILURES:
        conn[1].close()
        return await asyncio.open_connection(host, port), 0, 0, retried
    return conn, status, size, retried


@dataclass
class Run:
    """One open-loop run: latencies (ms, from the scheduled time) and statuses (0: failed) of the measured
    requests, their body bytes, the wall seconds of the measured part, what was offered."""
    latencies_ms: np.ndarray
    statuses: Counter
    body_bytes: int
    wall_s: float
    offered_per_s: float
    retries: int = 0
    timeouts: int = 0
    ok_status: int = 200
    extra: dict = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != self.ok_status)

    @property
    def achieved_per_s(self) -> float:
        return (len(self.latencies_ms) - self.timeouts) / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> dict:
        lat = self.latencies_ms
        pct = {f"p{q}_ms": float(np.percentile(lat, q)) if lat.size else None for q in (50, 90, 99)}
        return {"requests": int(lat.size), "offered_per_s": self.offered_per_s,
                "achieved_per_s": round(self.achieved_per_s, 1), "errors": self.errors,
                "statuses": {str(s): n for s, n in sorted(self.statuses.items())}, "retries": self.retries,
                "timeouts": self.timeouts,
                **pct, "max_ms": float(lat.max()) if lat.size else None,
                "mean_response_bytes": round(self.body_bytes / max(1, self.answered), 1), **self.extra}

    @property
    def answered(self) -> int:
        """Requests that got an answer (any status)."""
        return sum(n for status, n in self.statuses.items() if status != 0)


async def drive(port: int, requests: list[bytes], rate: float, seconds: float, connections: int,
                warmup: float = 0.0, host: str = "127.0.0.1", drain: float | None = None) -> Run:
    """Open loop: `rate` requests a second for `warmup` + `seconds` over `connections` keep-alive connections,
    request i being requests[i % len(requests)]; the first `warmup` seconds are sent but not counted. With `drain`,
    what is unanswered `drain` seconds after the last scheduled send counts as a timeout."""
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection(host, port))
    lat, statuses, sizes, retried = [], Counter(), [0], [0]
    n_warm, n = int(rate * warmup), int(rate * (warmup + seconds))
    start = time.perf_counter()
    measured_from = start + n_warm / rate

    async def request(i: int, due: float):
        conn = await pool.get()
        try:
            conn, status, size, again = await attempt(conn, requests[i % len(requests)], host, port)
        finally:
            pool.put_nowait(conn)
        if i >= n_warm:
            retried[0] += again
            lat.append((time.perf_counter() - due) * 1000)
            statuses[status] += 1
            sizes[0] += size

    tasks = {}
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks[asyncio.create_task(request(i, due))] = (i, due)
    timeouts = 0
    if drain is None:
        await asyncio.gather(*tasks)
    else:
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, start + n / rate + drain - time.perf_counter()))
        now = time.perf_counter()
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in pending:
            i, due = tasks[task]
            if i >= n_warm:
                lat.append((now - due) * 1000)
                statuses[0] += 1
                timeouts += 1
    wall = time.perf_counter() - measured_from
    while not pool.empty():
        pool.get_nowait()[1].close()
    return Run(np.array(lat), statuses, sizes[0], wall, rate, retried[0], timeouts)


async def hammer(port: int, request: bytes | list[bytes], clients: int, stop: asyncio.Event,
                 host: str = "127.0.0.1") -> Run:
    """Closed loop: `clients` connections, each sending its next request as soon as its answer is in, until
    `stop` is set (latencies from each send). `request`: one, or a list the clients take in turn."""
    requests = [request] if isinstance(request, bytes) else request
    lat, statuses, sizes, retried = [], Counter(), [0], [0]
    start = time.perf_counter()
    turn = iter(range(1 << 62))

    async def client():
        conn = await asyncio.open_connection(host, port)
        while not stop.is_set():
            t = time.perf_counter()
            conn, status, size, again = await attempt(conn, requests[next(turn) % len(requests)], host, port)
            statuses[status] += 1
            sizes[0] += size
            retried[0] += again
            lat.append((time.perf_counter() - t) * 1000)
        conn[1].close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return Run(np.array(lat), statuses, sizes[0], time.perf_counter() - start, 0.0, retried[0])


async def saturate(port: int, requests: list[bytes], clients: int, seconds: float, warmup: float = 0.0,
                   host: str = "127.0.0.1") -> Run:
    """The server's capacity: `hammer` for `warmup` seconds (discarded), then for `seconds` (measured)."""
    async def timed(s: float) -> Run:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(s, stop.set)
        return await hammer(port, requests, clients, stop, host)

    if warmup > 0:
        await timed(warmup)
    return await timed(seconds)
