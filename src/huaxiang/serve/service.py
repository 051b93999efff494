"""What the routes of `huaxiang serve` share: one `Service` per app, built by `create_app` and kept on
`app.state.service` (the routes reach it through `deps.py`).

The service owns its DuckDB file (DuckDB allows one writing process); each request works on its own cursor.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import duckdb
from fastapi import HTTPException

from ..config import load_config
from ..store import connect, has_table
from .docs import ProfileDocs
from .keys import load_keys, scope_of
from .metrics import Metrics


@dataclass(frozen=True)
class ServeSettings:
    max_body_bytes: int = 1_000_000  # a POST body over this gets 413
    max_batch_events: int = 5_000  # events per POST /v1/events
    key_reload_seconds: float = 2.0  # an unknown key re-reads the key table at most this often
    profile_docs: int = 200_000  # profile documents held in memory, most recently active users first


class Service:
    """The store's connection, the settings, the API keys, the profile documents, the recommender (loaded on first
    use), the profile refresher and the request metrics."""

    def __init__(self, db: str, settings: ServeSettings):
        self.db, self.settings = db, settings
        self.con = connect(db)
        self.keys, self.keys_read = load_keys(self.con), time.monotonic()
        self.rec = None  # the trained recommender, once a request needed it (None again after a user is forgotten)
        self.refresher = None  # the profile refresher, made on the first refresh
        self.metrics = Metrics()
        self.lock = threading.Lock()
        self.docs = ProfileDocs(self.con, settings.profile_docs)
        self.docs.warm()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self.con.cursor()

    def scope_for(self, key: str | None) -> str | None:
        """The scope of an API key (None: not a valid key); an unknown key re-reads the key table, at most every
        `key_reload_seconds`."""
        scope = scope_of(self.keys, key)
        if scope is None and key and time.monotonic() - self.keys_read > self.settings.key_reload_seconds:
            self.keys, self.keys_read = load_keys(self.con.cursor()), time.monotonic()
            scope = scope_of(self.keys, key)
        return scope

    def recommender(self):
        """The trained recommender; HTTPException 409 when there is none."""
        from ..recommend.store_model import has_model, load_store_recommender
        if self.rec is None:
            if not has_model(self.db):
                raise HTTPException(409, "no recommender trained for this store: run `huaxiang train recommender`")
            self.rec = load_store_recommender(self.db)
        return self.rec

    def refresh(self, users: list[str]) -> int:
        """Profiles of these (stored) users recomputed now, their documents renewed, their cached recommendation
        context dropped. Used by POST /v1/events and by the stream consumer."""
        from ..profile.build import ProfileRefresher
        users = sorted(set(users))
        if not users or not has_table(self.cursor(), "profiles"):
            return 0
        with self.lock:
            if self.refresher is None:
                self.refresher = ProfileRefresher(self.con, load_config())
            n = self.refresher.refresh(users)
        self.docs.load(users)
        if self.rec is not None:
            self.rec.forget_context(users)  # recommend() then reads them from the store
        return n
