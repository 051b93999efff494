"""What the routes of `huaxiang serve` share: one `Service` per app, built by `create_app` and kept on
`app.state.service` (the routes reach it through `deps.py`).

The service owns its DuckDB file (DuckDB allows one writing process); each request works on its own cursor.
Writes (a batch of events with its profile refresh, a deletion, key changes) run one at a time under `write_lock`,
so a deletion racing a batch for the same user never meets a write conflict or leaves half a user behind.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import duckdb
from fastapi import HTTPException

from ..config import load_config
from ..store import connect, has_table
from .docs import ProfileDocs
from .keys import Key, key_hash, load_keys
from .limits import FailedAttempts, KeyRate
from .metrics import Metrics
from .sessions import Sessions

log = logging.getLogger("huaxiang.serve")


@dataclass(frozen=True)
class ServeSettings:
    max_body_bytes: int = 1_000_000  # a request body over this gets 413, counted as it streams in
    max_batch_events: int = 5_000  # events per POST /v1/events
    key_reload_seconds: float = 2.0  # the key table is re-read this often (a revocation elsewhere takes effect)
    profile_docs: int = 200_000  # profile documents held in memory, most recently active users first
    key_rate: float = 2_000.0  # requests per second per key (token bucket); 0: no limit
    key_burst: float | None = None  # the bucket's size (default: one second's worth)
    failed_keys: int = 20  # failed key attempts per client address per minute before it gets 429
    session_hours: float = 8.0  # a sign-in to the pages lasts this long
    body_seconds: float = 10.0  # the wait allowed between two packets of a request body (else 408)
    header_seconds: float = 10.0  # a request's headers must arrive within this (else the connection is closed)
    work_threads: int = 1  # recommendation and search requests computed at once (more wait their turn: with
    # the GIL a second thread for this CPU-bound work lost ~12% of the throughput here)


class Service:
    """The store's connection, the settings, the API keys, sessions and limits, the profile documents, the
    recommender (loaded on first use), the profile refresher and the request metrics."""

    def __init__(self, db: str, settings: ServeSettings):
        self.db, self.settings = db, settings
        self.cfg = load_config()
        self.con = connect(db)
        self.keys: dict[str, Key] = load_keys(self.con.cursor())
        self.sessions = Sessions(settings.session_hours * 3600)
        self.key_rate = KeyRate(settings.key_rate, settings.key_burst)
        self.failures = FailedAttempts(settings.failed_keys)
        self.rec = None  # the trained recommender, once a request needed it
        self.limiter = None  # how many `work` calls run at once
        self.refresher = None  # the profile refresher, made on the first refresh
        self.metrics = Metrics()
        self.lock = threading.Lock()  # the profile refresher (one at a time)
        self.rec_lock = threading.Lock()  # loading the recommender (once)
        self.write_lock = threading.RLock()  # every write to the store (see the module's docstring)
        self.docs = ProfileDocs(self.con, settings.profile_docs)
        self.docs.warm()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self.con.cursor()

    async def work(self, fn, *args):
        """`fn(*args)` in a worker thread, at most `work_threads` at once (the event loop keeps answering)."""
        import anyio
        if self.limiter is None:  # made inside the event loop
            self.limiter = anyio.CapacityLimiter(self.settings.work_threads)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    def reload_keys(self) -> None:
        self.keys = load_keys(self.con.cursor())

    def reload_keys_forever(self) -> None:
        """Re-reads the key table every `key_reload_seconds` (a thread started by `create_app`), so that a key
        revoked or made elsewhere takes effect within that time, without a store query on the request path."""
        while True:
            time.sleep(self.settings.key_reload_seconds)
            try:
                self.reload_keys()
            except Exception as exc:  # keep the keys held; try again next time
                log.error("could not re-read the API keys (%s: %s)", type(exc).__name__, exc)

    def key_for(self, key: str | None) -> Key | None:
        """The record of a valid key (None: unknown, revoked or expired)."""
        if not key:
            return None
        found = self.keys.get(key_hash(key))
        return None if found is None or found.expired() else found

    def key_by_hash(self, hashed: str | None) -> Key | None:
        found = self.keys.get(hashed) if hashed else None
        return None if found is None or found.expired() else found

    def recommender(self):
        """The trained recommender; HTTPException 409 when there is none."""
        from ..recommend.store_model import has_model, load_store_recommender
        if self.rec is None:
            with self.rec_lock:
                if self.rec is None:
                    if not has_model(self.db):
                        raise HTTPException(409, "no recommender trained for this store: run "
                                                 "`huaxiang train recommender`")
                    self.rec = load_store_recommender(self.db)
        return self.rec

    def refresh(self, users: list[str]) -> int:
        """Profiles of these (stored) users recomputed now, their documents renewed, their cached recommendation
        context dropped. Used by POST /v1/events and by the stream consumer."""
        from ..profile.build import ProfileRefresher
        users = sorted(set(users))
        if self.rec is not None and users:
            self.rec.forget_context(users)  # recommend() then reads them from the store
        if not users or not has_table(self.cursor(), "profiles"):
            return 0
        with self.lock:
            if self.refresher is None:
                self.refresher = ProfileRefresher(self.con, self.cfg)
            n = self.refresher.refresh(users)
        self.docs.load(users)
        return n

    def refresh_missing(self, chunk: int = 1_000) -> int:
        """Profiles for users with events but no profile — what a crash between a batch's commit and its refresh
        leaves behind. Run in the background at start-up; returns how many were made."""
        c = self.cursor()
        if not has_table(c, "profiles") or not has_table(c, "events"):
            return 0
        users = [u for (u,) in c.execute("""SELECT DISTINCT user_id FROM events
            WHERE user_id NOT IN (SELECT user_id FROM profiles) ORDER BY 1""").fetchall()]
        done = 0
        for i in range(0, len(users), chunk):
            with self.write_lock:
                done += self.refresh(users[i:i + chunk])
        if users:
            log.warning("made %d missing profiles (events stored without a refresh, e.g. after a crash)", done)
        return done
