"""What was shown: the items of every recommendation and search answer, appended to the `exposures` table off the
request path.

A request adds its rows to an in-memory queue (`ExposureLog.add`: a list append under a lock, ~10 µs with
`rows_of`); a thread hands the queue to a sink every `interval` seconds (default 1), or sooner when `batch` rows
wait: the embedded server's sink is one INSERT into the store (`store_sink`, `store_rows`). What a crash can lose:
the rows still queued — those of the last `interval` seconds (fewer than `batch`), plus any kept after a failed
write (a failed write is tried again). The queue is bounded (`limit` rows): when the sink cannot keep up, the oldest
rows are dropped and counted (`dropped`), so memory never runs out. A clean shutdown (`close`) writes everything.
Forgetting a user: the embedded server writes the queue before it deletes, and rows of a suppressed user that
arrive after the deletion are refused (`store_rows`), as the ingest refuses their events.

What a write costs the requests served meanwhile: the writing thread shares the interpreter lock with them, and
DuckDB takes that lock back between the steps of every statement it runs from Python, so each statement costs the
request threads a few lock hand-offs, and Python work in the writer holds them up directly. A write therefore runs
two statements and little Python: the rows become Arrow columns by a transposition (no per-value Python loop),
forgotten users are found by one lookup of the batch's distinct user hashes (not a SHA-256 of every row in SQL
whose result comes back through Python), and the INSERT streams those columns (a record batch reader). A second's
2,000 rows (200 answers of 10 items) still take ~11 ms of CPU on a quiet 2-core machine (~2 ms building the
columns, ~2.5 ms the lookup, ~7 ms the INSERT and its commit), so requests served during a write wait longer
(benchmarks/exposure_cost.py).
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import nullcontext
from datetime import datetime, timezone
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc

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
    """`rows` (as `rows_of` makes them) as an Arrow table of `COLUMNS`; a value of the wrong type raises
    `pa.ArrowException` (or TypeError / ValueError)."""
    columns = list(zip(*rows)) or [()] * len(COLUMNS)
    if len(columns) != len(COLUMNS):
        raise ValueError(f"expected rows of {len(COLUMNS)} values, got {len(columns)}")
    return pa.table({name: pa.array(values, type=kind) for (name, kind), values in zip(COLUMNS, columns)})


def store_rows(con, rows: pa.Table | list[tuple]) -> int:
    """Appends rows (a `table_of` table, or the rows themselves) to the store's `exposures`, less those of
    forgotten (suppressed) users: rows queued before a deletion and written after it store nothing of that person.
    Returns the rows stored."""
    from ..forget import id_hash
    table = rows if isinstance(rows, pa.Table) else table_of(rows)
    users = {id_hash(u): u for u in pc.unique(table["user_id"]).to_pylist() if u is not None}
    if users:
        gone = [users[h] for (h,) in con.execute(
            "SELECT id_hash FROM forgotten_users WHERE id_hash IN (SELECT unnest(?))", [list(users)]).fetchall()]
        if gone:  # (a null user_id is no forgotten user: is_in says false, so the row stays)
            table = table.filter(pc.invert(pc.is_in(table["user_id"], value_set=pa.array(gone, pa.string()))))
    if table.num_rows:
        con.from_arrow(table.to_reader()).insert_into("exposures")
    return table.num_rows


def store_sink(con, lock=None) -> Callable[[list[tuple]], None]:
    """Writes rows into the store's `exposures` table, on a cursor of its own, holding `lock` when given: the
    embedded server's write lock, under which a deletion writes the queue and then deletes, so that no write runs
    between them nor looks up the forgotten users before a deletion and inserts after it."""
    cur = con.cursor()

    def sink(rows: list[tuple]) -> None:
        with lock if lock is not None else nullcontext():
            store_rows(cur, rows)
    return sink


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
            self._bound()
            full = len(self.queue) >= self.batch
        if full:
            self.wake.set()

    def _bound(self) -> None:
        """Drops (and counts) the oldest rows over `limit`; the caller holds the lock."""
        over = len(self.queue) - self.limit
        if over > 0:
            del self.queue[:over]
            self.dropped += over

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
                self._bound()
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
