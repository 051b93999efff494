"""Profile documents ready to send: each user's profile record serialised once to JSON bytes and kept in memory,
so a GET of a profile is a dictionary lookup. Filled in bulk at start-up (most recently active users first, up to
`capacity`), recomputed for a batch's users when their events arrive, dropped when a user is forgotten; a user
not held (beyond `capacity`) is computed on request and replaces the oldest document.

Loads run one at a time (compute and store under one lock), so a load that read the store before a refresh or a
deletion cannot land after it.
"""
from __future__ import annotations

import json
import threading

import duckdb

from ..profile.render import profile_records
from ..store import has_table


class ProfileDocs:
    def __init__(self, con: duckdb.DuckDBPyConnection, capacity: int = 200_000, chunk: int = 2_000):
        self.con, self.capacity, self.chunk = con, capacity, chunk
        self.docs: dict[str, bytes] = {}
        self.lock = threading.Lock()

    def get(self, user_id: str) -> bytes | None:
        return self.docs.get(user_id)

    def fetch(self, user_id: str) -> bytes | None:
        """The user's document, computed now when not held (None: no such user)."""
        return self.docs.get(user_id) or self.load([user_id]).get(user_id)

    def load(self, user_ids: list[str]) -> dict[str, bytes]:
        """Compute and hold the documents of `user_ids` (those with a profile); returns them."""
        with self.lock:
            records = profile_records(self.con.cursor(), user_ids)
            fresh = {u: json.dumps(r, ensure_ascii=False).encode() for u, r in records.items()}
            self.docs.update(fresh)
            while len(self.docs) > self.capacity:
                self.docs.pop(next(iter(self.docs)))
        return fresh

    def drop(self, user_ids: list[str]) -> None:
        with self.lock:
            for u in user_ids:
                self.docs.pop(u, None)

    def warm(self) -> int:
        """Fill with the most recently active users' documents, up to `capacity`; returns how many are held."""
        c = self.con.cursor()
        if not has_table(c, "profiles"):
            return 0
        users = [u for (u,) in c.execute("SELECT user_id FROM profiles ORDER BY last_ts DESC NULLS LAST, user_id "
                                         "LIMIT ?", [self.capacity]).fetchall()]
        for i in range(0, len(users), self.chunk):
            self.load([u for u in users[i:i + self.chunk] if u not in self.docs])
        return len(self.docs)
