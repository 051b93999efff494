"""The online service (`huaxiang serve --online redis://…`): a stateless API worker that reads only the online store
(`huaxiang.online`), so that any number of them can run, on any number of hosts, behind one address.

It answers the same routes as the embedded service with the same methods (service.py). Reads come from the
tenant's served version (a profile is one HGET of bytes published ready to send; a recommendation reads the user's
published context and the published recommender; search a published title index). Writes are queued for the one
writer on the stream `huaxiang:events` and answered 202: POST /v1/events appends the events; DELETE /v1/users/{id}
removes the user's documents at once (reads answer 404 from then on) and queues the deletion of their data.
Keys are read from the online store (`RedisKeys`) and re-read when its revision changes; the versions served are
re-read every `POINTER_SECONDS`: a revocation or a new publish reaches every worker within a second.
"""
from __future__ import annotations

import json
import logging
import time

from fastapi import HTTPException

from ..errors import HuaxiangError
from ..online import layout
from ..online.reader import OnlineReader
from ..profile.segment_report import clipped_tiers, private_report
from ..recommend.search import search_in, search_tenant
from ..recommend.top_k import recommend_view
from ..schema import tenant_of
from .keys import Key, RedisKeys
from .service import Base, ServeSettings
from .sessions import RedisSessions

log = logging.getLogger("huaxiang.serve")


class OnlineService(Base):
    def __init__(self, url: str, settings: ServeSettings):
        self.url = url
        self.reader = OnlineReader(url)
        self.key_table = RedisKeys(self.reader.r)
        self.revision = self.key_table.revision()
        super().__init__(settings, self.key_table.load(), RedisSessions(self.reader.r, settings.session_hours * 3600))
        if settings.exposures:
            from ..experiments.exposures import ExposureLog
            self.exposures = ExposureLog(self.queue_exposures)

    def queue_exposures(self, lines: list[str]) -> None:
        """The exposures sink of a worker: one stream entry per batch (its records, a line each), stored by the
        one writer."""
        self.reader.r.xadd(layout.STREAM, {"exposures": "\n".join(lines)})

    def reload_keys(self) -> None:
        self.keys = self.key_table.load()

    def watch_forever(self) -> None:
        """Re-reads the versions served and, when the key table changed, the keys — every `POINTER_SECONDS`
        (a background thread of each worker)."""
        while True:
            time.sleep(layout.POINTER_SECONDS)
            try:
                self.reader.refresh()
                revision = self.key_table.revision()
                if revision != self.revision:
                    self.revision = revision  # (read before the keys: a change in between is seen next time)
                    self.reload_keys()
            except Exception as exc:  # keep serving what is held; try again
                log.error("could not re-read the online store (%s: %s)", type(exc).__name__, exc)

    # reads
    async def profile_doc(self, user_id: str) -> bytes | None:
        return self.reader.doc(user_id)  # (one round trip of ~0.1 ms: cheaper here than a hand-off to a thread)

    def fetch_doc(self, user_id: str) -> bytes | None:
        return self.reader.doc(user_id)

    def recommender(self, tenant: str):
        try:
            return self.reader.recommender(tenant)
        except HuaxiangError as exc:
            raise HTTPException(409, str(exc)) from None

    def ranked(self, user_id: str, k: int, explain: bool) -> dict:
        """As the embedded service's: the variant's recommender when a running experiment covers the user."""
        tenant = tenant_of(user_id)
        test = self.reader.experiment_of(user_id)
        rec = test[2] if test else self.recommender(tenant)
        got = self.reader.user_fields(user_id, "ctx")
        view = self.reader.view(rec, user_id, got[0] if got else None)
        answer = recommend_view(rec, view, user_id, k, explain,
                                lambda q, t: search_in(self.reader.catalogue(t), t, q, None, k)["items"])
        return self.served_by(answer, rec, *((test[0].name, test[1]) if test else ()))

    def search(self, q: str, user_id: str | None, k: int, tenant: str | None) -> dict:
        tenant = search_tenant(user_id, tenant, self.reader.catalogue_tenants)
        rec, history = None, []
        if user_id:
            rec = self.recommender(tenant)
            got = self.reader.user_fields(user_id, "ctx")
            history = [i for i, _ in self.reader.view(rec, user_id, got[0] if got else None).history]
        return search_in(self.reader.catalogue(tenant), tenant, q, user_id, k, rec, history)

    def segments(self, epsilon: float | None, clv_cap: float, tenants) -> dict:
        if epsilon is not None:
            rules, cells = self.reader.private_inputs(tenants)
            return private_report(rules, {t: clipped_tiers(c, clv_cap) for t, c in cells.items()}, epsilon, clv_cap)
        return {"tenants": self.reader.segments(tenants)}

    def find_users(self, q: str, wanted: list[str], tenants, limit: int) -> list[tuple]:
        """Users whose id is one of `wanted` or starts with `q` (online, the finder matches the start of an id)."""
        exact = [u for u in wanted if tenants is None or tenant_of(u) in tenants]
        ids = list(dict.fromkeys(exact + self.reader.find_users(q, tenants, limit)))
        out = []
        for u in ids:  # (an exact id without a document is not listed)
            doc = self.reader.doc(u)
            if doc is not None:
                r = json.loads(doc)
                out.append((u, r.get("segment"), r.get("n_events") or 0))
        return out[:limit]

    def week(self, user_id: str, offset_hours: float) -> list[list[int]]:
        got = self.reader.user_fields(user_id, "week")  # (published in the profile's own offset)
        return layout.decode_week(got[0] if got else None)

    def profile_counts(self) -> dict[str, int]:
        return self.reader.counts()

    def ping(self) -> dict:
        self.reader.r.ping()
        return {"mode": "online"}

    # keys
    def make_key(self, scope: str, label: str, tenants, expires_in) -> tuple[Key, str]:
        made = self.key_table.create(scope, label, tenants, expires_in)
        self.reload_keys()
        return made

    def all_keys(self) -> list[Key]:
        return self.key_table.list()

    def revoke_key(self, key_id: str) -> Key:
        done = self.key_table.revoke(key_id)
        self.reload_keys()
        return done

    # writes: queued for the one writer
    def write_events(self, batch: list) -> tuple[int, dict]:
        with self.reader.r.pipeline(transaction=False) as p:
            for event in batch:
                p.xadd(layout.STREAM, {"event": json.dumps(event, ensure_ascii=False)})
            p.execute()
        return 202, {"accepted": len(batch), "rejected": []}

    def forget(self, user_id: str, suppress: bool) -> tuple[int, dict]:
        tenant, r = tenant_of(user_id), self.reader.r
        if self.reader.doc(user_id) is None:
            raise HuaxiangError(f"unknown user {user_id!r}")
        with r.pipeline(transaction=True) as p:
            p.sadd(layout.FORGET_PENDING, user_id.encode("utf-8", "surrogatepass"))
            for n in layout.live_versions(r, tenant):
                p.delete(layout.user_key(tenant, n, user_id))
                p.zrem(layout.ids_key(tenant, n), user_id.encode("utf-8", "surrogatepass"))
            p.xadd(layout.STREAM, {"forget": json.dumps({"user_id": user_id, "suppress": suppress},
                                                        ensure_ascii=False)})
            p.execute()
        return 202, {"user_id": user_id, "queued": True, "suppressed": suppress}
