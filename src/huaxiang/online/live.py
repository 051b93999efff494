"""The one writer's live path (`huaxiang consume --publish`): a batch's events reach the online documents as soon as
the store has committed them, and the SQL refresh reconciles those users a moment later, off the batch's path.

Per batch (the consumer's thread): ingest (one transaction) → the events it stored folded into their users'
documents in every live version (`features.live`: the counts, first and last seen, the hour and weekday histograms,
the week grid, the latest events) and its users marked for refresh in `hx:live:dirty`, in one MULTI/EXEC → the
acknowledgement. Every `every` seconds at most (a thread of its own): the marked users and the stream entry W the
store has committed up to are taken together; one DuckDB transaction whose snapshot is taken at that moment
refreshes their profiles (the same SQL as a build) and renders them; after its commit they are written online with
`seq` W, and the marks W covers are cleared.

Why the two never count an event twice or lose one: each document carries `seq`, the stream entry it is up to. A
patch is applied only to a document older than its batch; a refresh writes only over a document not newer than its
snapshot (one a patch has since taken past W waits for the next round, still marked); each WATCHes the user's keys.
After a crash nothing is lost: an entry is acknowledged only once its patch and marks are in Redis, the marks outlive
the process (the next writer refreshes them first), and a batch delivered again stores nothing new, so it patches
nothing and only marks its users. A deletion waits for the round in flight (a round must not write back a user
deleted under it) and clears the user's mark.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager, suppress
from typing import Callable

import duckdb

from ..stream import crash_point
from . import layout
from .writer import OnlineWriter, member, order

log = logging.getLogger("huaxiang.online")
ROUND_USERS = 5_000  # users refreshed per round at most (the rest: the next round, at once)
ROUND_NICENESS = 10  # the refresh thread's niceness: a round runs when the batches leave the CPU to it


class LivePath:
    """Patches a batch's users online after its commit (`store`) and refreshes them in rounds in a thread.
    `con`: the consumer's store connection; `cfg`: the build's configuration (for the refresh)."""

    def __init__(self, writer: OnlineWriter, con, cfg, every: float = 2.0):
        from ..profile.build import ProfileRefresher
        from ..store import index_event_ids
        self.w, self.con, self.every = writer, con, every
        # one thread per query: DuckDB's pool is shared by the store's connections, and a batch's small statements
        # queued behind a round's tasks (docs/deployment.md, "Freshness"); the batch and the round still run side
        # by side, each on its own Python thread
        con.execute("SET threads = 1")
        index_event_ids(con)  # (a batch's de-duplication looks its event ids up instead of scanning every event)
        self.refresher = ProfileRefresher(con, cfg)  # its own cursor: the rounds' transactions
        self.commit = threading.Lock()  # a batch's commit; a round's snapshot is taken under it
        self.rounds = threading.Lock()  # a round in flight; a deletion waits for it
        self.dirty = {k.decode("utf-8", "surrogatepass"): v.decode()
                      for k, v in writer.r.hgetall(layout.LIVE_DIRTY).items()}  # (what a killed writer left)
        self.upto = max(self.dirty.values(), key=order, default=None)  # the stream entry committed up to
        self.wake, self.halt = threading.Event(), threading.Event()  # users marked; stop
        if self.dirty:
            self.wake.set()
        self.refreshed = self.written = 0  # profiles refreshed, users written online, by the rounds so far
        self.thread = threading.Thread(target=self._run, name="online-refresh", daemon=True)
        self.thread.start()

    def store(self, entry: str, ingest: Callable):
        """Runs `ingest()` (-> IngestReport; its batch's last stream entry is `entry`) and patches what it stored
        online. Returns (the report, users patched)."""
        with self.commit:
            report = ingest()
            if report.users:
                if self.upto is None or order(entry) > order(self.upto):
                    self.upto = entry
                self.dirty.update(dict.fromkeys(report.users, entry))
                # (marked under the lock: a round's clearing of marks is ordered with it, in Redis too)
                self.w.r.hset(layout.LIVE_DIRTY, mapping={member(u): entry for u in report.users})
                self.wake.set()
        crash_point("after_commit")
        if not report.users:
            return report, 0
        return report, self.w.patch(entry, report.new_events, self._titles(report.new_events))

    def _titles(self, events: list[dict]) -> dict[str, str]:
        items = sorted({e["item_id"] for e in events if e.get("item_id")})
        if not items:
            return {}
        return dict(self.con.cursor().execute("SELECT item_id, title FROM items WHERE item_id IN (SELECT unnest(?)) "
                                              "AND title IS NOT NULL", [items]).fetchall())

    @contextmanager
    def exclusive(self, user_id: str):
        """Held around a deletion of `user_id`: no round in flight, no batch committing; its mark cleared."""
        with self.rounds, self.commit:
            yield
            self.dirty.pop(user_id, None)

    def round(self) -> int:
        """One refresh round (see the module's doc); returns the users written online."""
        from .publish import render_users
        with self.rounds:
            with self.commit:
                users, upto = sorted(self.dirty)[:ROUND_USERS], self.upto
                if not users:
                    return 0
                c = self.refresher.con
                c.execute("BEGIN TRANSACTION")
                c.execute("SELECT 1 FROM events LIMIT 1").fetchall()  # (DuckDB takes the snapshot at the first read)
            try:
                refreshed = self.refresher.refresh(users, within=True)
                rendered = render_users(c, users)
                c.execute("COMMIT")
            except BaseException:
                with suppress(duckdb.Error):  # (a failed COMMIT has already ended it)
                    c.execute("ROLLBACK")
                raise
            crash_point("after_refresh")
            written = self.w.write(users, rendered=rendered, seq=upto)
            self.refreshed, self.written = self.refreshed + refreshed, self.written + written
            with self.commit:
                done = [u for u in users if u in self.dirty and order(self.dirty[u]) <= order(upto)]
                for u in done:
                    del self.dirty[u]
                if done:
                    self.w.r.hdel(layout.LIVE_DIRTY, *[member(u) for u in done])
        return written

    def _run(self) -> None:
        with suppress(OSError, AttributeError):  # (Linux: the niceness of this thread only; elsewhere left as is)
            # the rounds yield the CPU to the batches and the servers beside them (with one DuckDB thread, a
            # round's queries run on this thread)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), ROUND_NICENESS)
        last = time.monotonic()
        while True:
            self.wake.wait()
            rest = self.every - (time.monotonic() - last)  # (one round per `every` at most)
            if self.halt.is_set() or (rest > 0 and self.halt.wait(rest)):
                return
            self.wake.clear()
            last = time.monotonic()
            try:
                while self.round() and len(self.dirty) >= ROUND_USERS and not self.halt.is_set():
                    pass  # (a backlog: the next round at once)
            except Exception as exc:  # (Redis or the store briefly away: the marks stay; next round)
                log.error("live path: a refresh round failed (%s: %s); retrying", type(exc).__name__, exc)
                self.wake.set()

    def close(self) -> None:
        """Stops the thread, then refreshes every user still marked."""
        self.halt.set()
        self.wake.set()
        self.thread.join()
        while self.dirty:
            self.round()
