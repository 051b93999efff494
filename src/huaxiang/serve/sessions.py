"""Sign-in sessions of the web pages: the cookie holds a random token (never the API key) that names the key it
was made with and expires. A session ends at sign-out, at its expiry, or when its key is revoked or expires.
`Sessions` are held in the serving process (a restart signs everyone out); `RedisSessions`, in online mode, in the
online store, so that every API worker knows them."""
from __future__ import annotations

import hashlib
import secrets
import threading
import time

from ..online.layout import session_key


class Sessions:
    def __init__(self, lifetime_s: float = 8 * 3600, capacity: int = 100_000):
        self.lifetime, self.capacity = lifetime_s, capacity
        self.held: dict[str, tuple[str, float]] = {}  # token hash -> (key hash, expiry on the monotonic clock)
        self.lock = threading.Lock()

    @staticmethod
    def _hash(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()

    def start(self, key_hash: str) -> str:
        """A new session for the key with this hash; returns its token (for the cookie)."""
        token = "hxs_" + secrets.token_urlsafe(32)
        with self.lock:
            now = time.monotonic()
            if len(self.held) >= self.capacity:  # drop the expired ones, then the oldest
                self.held = {t: v for t, v in self.held.items() if v[1] > now}
                while len(self.held) >= self.capacity:
                    self.held.pop(next(iter(self.held)))
            self.held[self._hash(token)] = (key_hash, now + self.lifetime)
        return token

    def key_hash(self, token: str | None) -> str | None:
        """The hash of the key behind a live session token (None: no such session, or it expired)."""
        if not token:
            return None
        with self.lock:
            found = self.held.get(self._hash(token))
            if found is None:
                return None
            if found[1] <= time.monotonic():
                self.held.pop(self._hash(token), None)
                return None
            return found[0]

    def end(self, token: str | None) -> None:
        if token:
            with self.lock:
                self.held.pop(self._hash(token), None)


class RedisSessions:
    """`Sessions` kept in Redis (`hx:sess:<sha256 of the token>` -> the key's hash, expiring with the session)."""

    def __init__(self, r, lifetime_s: float = 8 * 3600):
        self.r, self.lifetime = r, lifetime_s

    def start(self, key_hash: str) -> str:
        token = "hxs_" + secrets.token_urlsafe(32)
        self.r.set(session_key(Sessions._hash(token)), key_hash, px=max(1, int(self.lifetime * 1000)))
        return token

    def key_hash(self, token: str | None) -> str | None:
        found = self.r.get(session_key(Sessions._hash(token))) if token else None
        return found.decode() if found is not None else None

    def end(self, token: str | None) -> None:
        if token:
            self.r.delete(session_key(Sessions._hash(token)))
