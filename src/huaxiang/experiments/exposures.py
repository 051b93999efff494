"""What was shown: the items of every recommendation and search answer, appended to the `exposures` table off the
request path.

A request adds one record to an in-memory queue (`ExposureLog.add`): its answer as one JSON line (`record`: the
item ids and scores as two lists, ~10 µs), appended under a lock. A thread hands the queue to a sink every
`interval` seconds (default 5), or sooner when `batch` answers wait (default 2,000): the embedded server's sink
writes the lines to a spool file and stores them with one statement (`store_sink`, `store_lines`); an online
worker's sends them as one stream entry, which the one writer stores the same way. What a crash can lose: the
answers still queued — those of the last `interval` seconds (fewer than `batch`), plus any kept after a failed
write (a failed write is tried again). The queue is bounded (`limit` answers): when the sink cannot keep up, the
oldest are dropped and counted (`dropped`), so memory never runs out. A clean shutdown (`close`) writes
everything. Forgetting a user: the embedded server writes the queue before it deletes, and the rows of a
suppressed user that arrive after the deletion are refused (`store_lines`), as the ingest refuses their events.

Why a spool file: the writing thread shares the interpreter lock with the request threads, so Python work in it —
building one row per item, converting them to Arrow or DuckDB values — holds the requests up directly, and DuckDB
takes the lock back while it scans Python objects. Here the writer only joins the queued lines (one C call) and
writes them to a file; DuckDB then reads that file, unnests the items, drops the forgotten users' rows and inserts,
all in one statement that runs without the lock. What remains is DuckDB's own work, ~2 ms of CPU a write plus
~11 µs per answer of 10 items (the insert and its commit): writing every 5 s rather than every second spends less
than half the CPU, and fewer requests overlap a write (benchmarks/exposure_cost.py measures what it costs them).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from contextlib import nullcontext
from datetime import datetime, timedelta, timezone
from typing import Callable

log = logging.getLogger("huaxiang.experiments")

_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)

# One record (a JSON line) per answer, unnested into one row per shown item; the user's row is kept unless the
# user is forgotten (suppressed). `ts` is microseconds since the epoch (UTC).
STORE_SQL = """
INSERT INTO exposures BY NAME
SELECT request_id, make_timestamp(ts) AS ts, user_id, unnest(items) AS item_id,
       unnest(range(1, len(items) + 1)) AS position, unnest(scores) AS score, surface, model, version, experiment,
       variant, latency_ms, unnest(propensities) AS propensity
FROM read_json($path, format = 'newline_delimited', columns = {
       request_id: 'VARCHAR', ts: 'BIGINT', user_id: 'VARCHAR', surface: 'VARCHAR', model: 'VARCHAR',
       version: 'VARCHAR', experiment: 'VARCHAR', variant: 'VARCHAR', latency_ms: 'DOUBLE', items: 'VARCHAR[]',
       scores: 'DOUBLE[]', propensities: 'DOUBLE[]'}) AS e
WHERE NOT EXISTS (SELECT 1 FROM forgotten_users f WHERE f.id_hash = sha256(e.user_id))"""


def record(request_id: str, user_id: str | None, surface: str, items: list[dict], model: str | None = None,
           version: str | None = None, experiment: str | None = None, variant: str | None = None,
           latency_ms: float | None = None, ts: datetime | None = None) -> str:
    """One answer as one JSON line (`items`: the answer's list, each with `item_id`, `score` and, when serving
    explores, `propensity`; positions are their order, from 1). ASCII only, so no character of an id can split the
    line."""
    ts = ts or datetime.now(timezone.utc).replace(tzinfo=None)
    return json.dumps({"request_id": request_id, "ts": (ts - _EPOCH) // _MICROSECOND, "user_id": user_id,
                       "surface": surface, "model": model, "version": version, "experiment": experiment,
                       "variant": variant, "latency_ms": latency_ms, "items": [item["item_id"] for item in items],
                       "scores": [item.get("score") for item in items],
                       **({"propensities": [item["propensity"] for item in items]}
                          if items and "propensity" in items[0] else {})}, default=float)


def store_lines(con, lines: list[str]) -> int:
    """Stores records (`record`'s lines) in the store's `exposures`, one row per shown item, less the rows of
    forgotten (suppressed) users: what was queued before a deletion and written after it stores nothing of that
    person. Returns the rows stored; a line that is not a record raises duckdb.Error and stores nothing."""
    if not lines:
        return 0
    fd, path = tempfile.mkstemp(prefix="huaxiang-exposures-", suffix=".jsonl")
    try:
        with os.fdopen(fd, "w", encoding="ascii", errors="backslashreplace") as spool:
            spool.write("\n".join(lines))
        return con.execute(STORE_SQL, {"path": path}).fetchone()[0]
    finally:
        os.unlink(path)


def store_sink(con, lock=None) -> Callable[[list[str]], None]:
    """Writes records into the store's `exposures` table, on a cursor of its own, holding `lock` when given: the
    embedded server's write lock, under which a deletion writes the queue and then deletes, so that no write runs
    between them nor looks up the forgotten users before a deletion and inserts after it."""
    cur = con.cursor()

    def sink(lines: list[str]) -> None:
        with lock if lock is not None else nullcontext():
            store_lines(cur, lines)
    return sink


class ExposureLog:
    """A bounded queue of records (one per answer) drained into `sink(lines)` by a thread of its own."""

    def __init__(self, sink: Callable[[list[str]], None], interval: float = 5.0, batch: int = 2_000,
                 limit: int = 20_000):
        self.sink, self.interval, self.batch, self.limit = sink, interval, batch, limit
        self.queue: list[str] = []
        self.lock = threading.Lock()
        self.wake, self.halt = threading.Event(), threading.Event()
        self.written = self.dropped = 0
        self.thread = threading.Thread(target=self._run, name="exposures", daemon=True)
        self.thread.start()

    def add(self, line: str) -> None:
        """Queues one answer's record (`record`)."""
        with self.lock:
            self.queue.append(line)
            self._bound()
            full = len(self.queue) >= self.batch
        if full:
            self.wake.set()

    def _bound(self) -> None:
        """Drops (and counts) the oldest records over `limit`; the caller holds the lock."""
        over = len(self.queue) - self.limit
        if over > 0:
            del self.queue[:over]
            self.dropped += over

    def flush(self) -> int:
        """Hands what is queued to the sink now; returns the records written. A failing sink keeps them queued."""
        with self.lock:
            lines, self.queue = self.queue, []
        if not lines:
            return 0
        try:
            self.sink(lines)
        except Exception:
            with self.lock:  # (back in front, in order; the bound still holds)
                self.queue[:0] = lines
                self._bound()
            raise
        self.written += len(lines)
        return len(lines)

    def _run(self) -> None:
        while not self.halt.is_set():
            self.wake.wait(self.interval)
            self.wake.clear()
            try:
                self.flush()
            except Exception as exc:  # (the store or Redis briefly away: kept, tried again next time)
                log.error("could not write %d exposures (%s: %s); retrying", len(self.queue), type(exc).__name__, exc)
                time.sleep(min(self.interval, 1.0))

    def close(self) -> None:
        """Stops the thread and writes what is left."""
        self.halt.set()
        self.wake.set()
        self.thread.join()
        self.flush()
