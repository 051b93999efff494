"""The one writer of the online store: after the stream consumer has committed a batch and refreshed its users'
profiles, `OnlineWriter.write` puts those users' new documents into Redis; after it has executed a deletion,
`OnlineWriter.forgotten` removes the user there. Both run before the batch is acknowledged, so a writer killed
anywhere is repaired by the redelivery (event ids dedupe, the refresh runs again, the same bytes are written again).

A user's fields go to every live version of their tenant (the served one and the one a publish is writing), in one
MULTI/EXEC that WATCHes `hx:current`, `hx:pending` and `hx:forget:pending`: a publish that switches versions, or a
deletion queued at that moment, makes the transaction fail and it is computed again, so no write is lost to a
switch and no deleted user comes back. Users whose stored hash `h` already equals theirs are not written; users
queued for deletion are not written. A tenant not yet published has nothing to update (its first publish writes
everyone); a tenant published from Parquet (meta `source` "parquet:…") is not written: a tenant has one source.
Each touched tenant's segment report entry (`seg`, and `dp`) is renewed at most once per `seg_seconds`, off the
batch's path.
"""
from __future__ import annotations

import json
import logging
import threading
import time

from ..errors import HuaxiangError
from ..schema import tenant_of
from . import layout

log = logging.getLogger("huaxiang.online")
RETRIES = 100  # transactions retried after a concurrent switch before giving up (each retry means a switch)


def member(user_id: str) -> bytes:
    """A user id as a Redis member or field (ids are stored as they are, lone surrogates included)."""
    return user_id.encode("utf-8", "surrogatepass")


def order(entry_id: bytes | str) -> tuple[int, int]:
    """A Redis stream entry id (`ms-n`) as something that sorts as the stream does."""
    ms, _, n = (entry_id.decode() if isinstance(entry_id, bytes) else entry_id).partition("-")
    return int(ms), int(n or 0)


def _versions(raw: dict) -> dict[str, int]:
    return {k.decode("utf-8", "surrogatepass"): int(v) for k, v in raw.items()}


class OnlineWriter:
    """Writes the consumer's users to the online store at `url_or_redis` (a URL or a redis client), rendering
    them from the store connection `con` (None: the consumer's, which `stream.consume` gives it)."""

    def __init__(self, url_or_redis, con=None, seg_seconds: float = 60.0):
        self.r = layout.connect(url_or_redis) if isinstance(url_or_redis, str) else url_or_redis
        self.con, self.seg_seconds = con, seg_seconds
        self.seg_at: dict[str, float] = {}  # tenant -> when its segment entry was last written (monotonic)
        self.dirty: set[str] = set()  # tenants whose segment entry may be out of date
        self.said: set[str] = set()  # tenants already logged as not written (once each)
        self.seg_lock = threading.Lock()  # (renewals run from the consumer when idle and from `renewer`)
        self.renewer = None  # the thread that renews segment entries while the stream is busy

    def write(self, users: list[str], rendered: dict | None = None, seq: str | None = None) -> int:
        """The online documents of `users` (stored ids) brought up to date; returns how many users were written.
        `rendered`: their `publish.render_users` (None: rendered now from the writer's connection). `seq` (the
        live path's, `live.py`): the stream entry the render's snapshot is up to — stored with each document; a
        document a live patch has already taken past it is left for the next refresh."""
        users = sorted(set(users))
        if not users:
            return 0
        known = _versions(self.r.hgetall(layout.CURRENT))
        users = [u for u in users if tenant_of(u) in known]
        if not users:  # nothing published yet for these tenants: the first publish writes them
            return 0
        if rendered is None:
            from .publish import render_users
            rendered = render_users(self.con.cursor(), users)
        users = [u for u in users if u in rendered]  # (a user without a profile has no document)
        written = self._transaction(lambda p: self._plan_write(p, users, rendered, seq)) if users else 0
        self._touched({tenant_of(u) for u in users})
        return written

    def patch(self, seq: str, events: list[dict], titles: dict[str, str]) -> int:
        """The live path (`live.py`): `events` (rows the store has just stored, of stream entries up to `seq`)
        folded into their users' documents in every live version where a document of theirs is not already past
        `seq`, in one MULTI/EXEC (`titles`: item id -> title). A user without a document there yet is left to the
        refresh. Returns how many users were patched."""
        by_user: dict[str, list[dict]] = {}
        for e in events:
            by_user.setdefault(e["user_id"], []).append(e)
        return self._transaction(lambda p: self._plan_patch(p, seq, by_user, titles)) if by_user else 0

    def forgotten(self, users: list[str]) -> None:
        """After the store deleted `users`: their hashes removed from every live version, their ids from the
        finder, their pending deletion cleared."""
        users = sorted(set(users))
        if users:
            self._transaction(lambda p: self._plan_forget(p, users))
            self._touched({tenant_of(u) for u in users})

    def _touched(self, tenants: set[str]) -> None:
        """Marks tenants' segment entries for renewal — by a thread of their own, so that the report's queries
        (~0.1–0.3 s) never hold up a batch (the freshness of everything else)."""
        with self.seg_lock:
            self.dirty |= tenants
        if self.renewer is None:
            self.renewer = threading.Thread(target=self._renew_forever, name="online-segments", daemon=True)
            self.renewer.start()

    def _renew_forever(self) -> None:
        while True:
            time.sleep(min(1.0, self.seg_seconds))
            try:
                self.idle()
            except Exception as exc:  # (Redis or the store briefly away: next time)
                log.error("could not renew the segment reports online (%s: %s)", type(exc).__name__, exc)

    def idle(self) -> None:
        """Renews the segment entries that are due (called every second by `renewer`, and by the consumer while
        the stream is idle)."""
        with self.seg_lock:
            now = time.monotonic()
            for tenant in sorted(self.dirty):
                if now - self.seg_at.get(tenant, float("-inf")) >= self.seg_seconds:
                    self.dirty.discard(tenant)
                    self.seg_at[tenant] = now
                    self._write_segments(tenant)

    def _transaction(self, plan) -> int:
        """`plan(p)` under WATCH of the pointers and the deletion queue: it reads with `p` (immediate while
        watching), then queues its writes after `p.multi()` and returns a count; retried when a watched key
        changed before EXEC."""
        import redis
        with self.r.pipeline(transaction=True) as p:
            for _ in range(RETRIES):
                try:
                    p.watch(layout.CURRENT, layout.PENDING, layout.FORGET_PENDING)
                    n = plan(p)
                    p.execute()
                    return n
                except redis.WatchError:
                    continue
        raise HuaxiangError(f"online store: the versions changed {RETRIES} times during one write")

    def _writable(self, p, tenants: set[str]) -> dict[str, list[int]]:
        """tenant -> the live versions to write (read under the WATCH): none for a tenant not published yet or
        published from Parquet."""
        cur, pend = _versions(p.hgetall(layout.CURRENT)), _versions(p.hgetall(layout.PENDING))
        live = {t: sorted({v for v in (cur.get(t), pend.get(t)) if v is not None}) for t in tenants if t in cur}
        reads = self.r.pipeline(transaction=False)
        pairs = [(t, v) for t, vs in live.items() for v in vs]
        for t, v in pairs:
            reads.hget(layout.meta_key(t, v), "source")
        sources = dict(zip(pairs, reads.execute()))
        out = {}
        for t, vs in live.items():
            if (sources[(t, cur[t])] or b"").startswith(b"parquet:"):
                if t not in self.said:
                    self.said.add(t)
                    log.warning("tenant %r is served from a Parquet build: its events are stored, not written "
                                "online (a tenant has one source; publish it again to serve them)", t)
                continue
            out[t] = [v for v in vs if not (sources[(t, v)] or b"").startswith(b"parquet:")]
        return out

    def _targets(self, p, users: list[str]) -> list[tuple[str, int, bytes]]:
        """(user, version, key) to write for each of `users` not queued for deletion, in each writable version,
        their keys WATCHed with the pointers (a live patch and a refresh of one user do not cross)."""
        queued = p.smismember(layout.FORGET_PENDING, [member(u) for u in users]) if users else []
        users = [u for u, q in zip(users, queued) if not q]
        versions = self._writable(p, {tenant_of(u) for u in users})
        targets = [(u, v, layout.user_key(tenant_of(u), v, u)) for u in users for v in versions.get(tenant_of(u), [])]
        if targets:
            p.watch(*[k for _, _, k in targets])
        return targets

    def _plan_write(self, p, users: list[str], rendered: dict, seq: str | None) -> int:
        targets = self._targets(p, users)
        reads = self.r.pipeline(transaction=False)
        for _, _, key in targets:
            reads.hmget(key, "h", "seq")
        stale = []
        for (u, v, key), (h, at) in zip(targets, reads.execute()):
            if seq is not None and at is not None and order(at) > order(seq):
                continue  # a live patch has taken it past what this render read: the next refresh writes it
            if h != rendered[u]["h"] or (seq is not None and at != seq.encode()):
                stale.append((u, v, key))
        p.multi()
        for u, v, key in stale:
            p.hset(key, mapping=rendered[u] if seq is None else {**rendered[u], "seq": seq})
            p.zadd(layout.ids_key(tenant_of(u), v), {member(u): 0})
        return len({u for u, _, _ in stale})

    def _plan_patch(self, p, seq: str, by_user: dict, titles: dict) -> int:
        from ..features import live
        targets = self._targets(p, sorted(by_user))
        reads = self.r.pipeline(transaction=False)
        for _, _, key in targets:
            reads.hmget(key, "doc", "ctx", "week", "seq")
        writes = []
        for (u, _, key), (doc, ctx, week, at) in zip(targets, reads.execute()):
            if doc is None or (at is not None and order(at) >= order(seq)):
                continue  # not there yet (the refresh writes it), or it already holds these events
            record = live.apply(json.loads(doc), by_user[u], titles)
            grid = live.apply_week(layout.decode_week(week), by_user[u], record.get("habit_utc_offset") or 0)
            doc, week = json.dumps(record, ensure_ascii=False).encode(), layout.encode_week(grid)
            writes.append((u, key, {"doc": doc, "week": week, "h": layout.content_hash(doc, ctx or b"", week),
                                    "seq": seq}))
        p.multi()
        for _, key, fields in writes:
            p.hset(key, mapping=fields)
        return len({u for u, _, _ in writes})

    def _plan_forget(self, p, users: list[str]) -> int:
        cur, pend = _versions(p.hgetall(layout.CURRENT)), _versions(p.hgetall(layout.PENDING))
        p.multi()
        for u in users:
            t = tenant_of(u)
            for v in {x for x in (cur.get(t), pend.get(t)) if x is not None}:
                p.delete(layout.user_key(t, v, u))
                p.zrem(layout.ids_key(t, v), member(u))
        p.srem(layout.FORGET_PENDING, *[member(u) for u in users])
        p.hdel(layout.LIVE_DIRTY, *[member(u) for u in users])
        return len(users)

    def _write_segments(self, tenant: str) -> None:
        """The tenant's segment report entry and private-report inputs, as a publish writes them, into its
        writable live versions."""
        from .publish import private_fields, segment_entry
        entry = segment_entry(self.con.cursor(), tenant)
        if not entry:  # no segments built (for this tenant) yet
            return
        private = private_fields(self.con.cursor(), tenant)
        versions = self._writable(self.r, {tenant}).get(tenant, [])
        with self.r.pipeline(transaction=True) as p:
            for v in versions:
                p.set(layout.seg_key(tenant, v), entry)
                p.delete(layout.dp_key(tenant, v))
                if private:
                    p.hset(layout.dp_key(tenant, v), mapping=private)
            p.execute()


