"""Request limits held in the serving process: a token bucket per API key (requests per second, with a burst) and
a count of failed key attempts per client address (over the limit inside the window: 429 until it has passed).
Both answer with the seconds to wait, for a `Retry-After` header."""
from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque


class KeyRate:
    """A token bucket per key id: `rate` requests per second on average, `burst` at once. rate 0: no limit."""

    def __init__(self, rate: float, burst: float | None = None):
        self.rate, self.burst = rate, burst if burst is not None else max(rate, 1.0)
        self.buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, when)
        self.lock = threading.Lock()

    def wait(self, key_id: str, now: float | None = None) -> int:
        """0 when the request may go now (a token is taken), else the whole seconds until one is free."""
        if self.rate <= 0:
            return 0
        now = time.monotonic() if now is None else now
        with self.lock:
            tokens, then = self.buckets.get(key_id, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            if tokens >= 1:
                self.buckets[key_id] = (tokens - 1, now)
                return 0
            self.buckets[key_id] = (tokens, now)
            return max(1, math.ceil((1 - tokens) / self.rate))


class FailedAttempts:
    """Failed key attempts per client address in a sliding window: after `limit` of them, the address waits."""

    def __init__(self, limit: int = 20, window_s: float = 60.0, addresses: int = 100_000):
        self.limit, self.window, self.addresses = limit, window_s, addresses
        self.seen: dict[str, deque] = defaultdict(deque)
        self.lock = threading.Lock()

    def _trim(self, times: deque, now: float) -> None:
        while times and times[0] <= now - self.window:
            times.popleft()

    def wait(self, address: str, now: float | None = None) -> int:
        """0 when this address may try a key, else the whole seconds until it may again."""
        if self.limit <= 0:
            return 0
        now = time.monotonic() if now is None else now
        with self.lock:
            times = self.seen.get(address)
            if not times:
                return 0
            self._trim(times, now)
            return max(1, math.ceil(times[0] + self.window - now)) if len(times) >= self.limit else 0

    def failed(self, address: str, now: float | None = None) -> None:
        if self.limit <= 0:
            return
        now = time.monotonic() if now is None else now
        with self.lock:
            if len(self.seen) >= self.addresses and address not in self.seen:  # bounded: forget the oldest
                self.seen.pop(next(iter(self.seen)))
            times = self.seen[address]
            self._trim(times, now)
            times.append(now)
