"""What was shown: the items of every recommendation and search answer, appended to the `exposures` table off the
request path.

A request adds its rows to an in-memory queue (`ExposureLog.add`: a list append under a lock); a thread hands the
queue to a sink every `interval` seconds (default 1), or sooner when `batch` rows wait: the embedded server's sink
is one INSERT into the store (`store_sink`). What a crash can lose: the rows still queued — those of the last
`interval` seconds (fewer than `batch`), plus any kept after a failed write (a failed write is tried again). The
queue is bounded (`limit` rows): when the sink cannot keep up, the oldest rows are dropped and counted (`dropped`),
so memory never runs out. A clean shutdown (`close`) writes everything. Forgetting a user: the embedded server
writes the queue before it deletes, and rows of a suppressed user that arrive after the deletion are refused
(`store_rows`), as the ingest refuses their events.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Callable

import pyarrow as pa

log = logging.getLogger("huaxiang.experiments")

# (name, Arrow type) of each column of `exposures`, in the table's order (schema.EXPOSURES_DDL)
COLUMNS = (("request_id", pa.string()), ("ts", pa.timestamp("us")), ("user_id", pa.string()),
           ("item_id", pa.string()), ("position", pa.int32()), ("score", pa.float64()), ("surface", pa.string()),
           ("model", pa.string()), ("version", pa.string()), ("experiment", pa.string()), ("variant", pa.string()),
           ("latency_ms", pa.float64()))


def rows_of(request_id: str, user_id: str | None, surface: str, items: list[dict], model: str | None = None,
            version: str | None = None, experiment: str | None = None, variant: str | None = None,
            latency_ms: float | None = None, ts: datetime | None = None) -> list[tuple]:
    """One row per shown item (`items`: the answer's list, each with `item_id` and `score`), position from 1."""
    ts = ts or datetime.now(timezone.utc).replace(tzinfo=None)
    return [(request_id, ts, user_id, item["item_id"], position, item.get("score"), surface, model, version,
             experiment, variant, latency_ms) for position, item in enumerate(items, start=1)]


def table_of(rows: list[tuple]) -> pa.Table:
    return pa.table({name: pa.array([r[i] for r in rows], type=kind) for i, (name, kind) in enumerate(COLUMNS)})


def store_rows(con, rows: list[tuple]) -> int:
    """Appends rows to the store's `exposures`, less those of forgotten (suppressed) users: rows queued before a
    deletion and written after it store nothing of that person. Returns the rows stored."""
    kept = con.from_arrow(table_of(rows)).filter(
        "user_id IS NULL OR sha256(user_id) NOT IN (SELECT id_hash FROM forgotten_users)").fetch_arrow_table()
    if kept.num_rows:
        con.from_arrow(kept).insert_into("exposures")
    return kept.num_rows


def store_sink(con) -> Callable[[list[tuple]], None]:
    """Writes rows into the store's `exposures` table, on a cursor of its own."""
    cur = con.cursor()
    return lambda rows: store_rows(cur, rows)


class ExposureLog:
    """A bounded queue of exposure rows drained into `sink(rows)` by a thread of its own."""

    def __init__(self, sink: Callable[[list[tuple]], None], interval: float = 1.0, batch: int = 5_000,
                 limit: int = 200_000):
        self.sink, self.interval, self.batch, self.limit = sink, interval, batch, limit
        self.queue: list[tuple] = []
        self.lock = threading.Lock()
        self.wake, self.halt = threading.Event(), threading.Event()
        self.written = self.dropped = 0
        self.thread = threading.Thread(target=self._run, name="exposures", daemon=True)
        self.thread.start()

    def add(self, rows: list[tuple]) -> None:
        with self.lock:
            self.queue.extend(rows)
            over = len(self.queue) - self.limit
            if over > 0:
                del self.queue[:over]
                self.dropped += over
            full = len(self.queue) >= self.batch
        if full:
            self.wake.set()

    def flush(self) -> int:
        """Hands what is queued to the sink now; returns the rows written. A failing sink keeps them queued."""
        with self.lock:
            rows, self.queue = self.queue, []
        if not rows:
            return 0
        try:
            self.sink(rows)
        except Exception:
            with self.lock:  # (back in front, in order; the bound still holds)
                self.queue[:0] = rows
                over = len(self.queue) - self.limit
                if over > 0:
                    del self.queue[:over]
                    self.dropped += over
            raise
        self.written += len(rows)
        return len(rows)

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
