"""What an API worker reads from the online store (layout.py), holding nothing that a restart loses: the versions
served and the running experiments (re-read every `POINTER_SECONDS`), and caches of immutable things — the recommender and the search indexes,
keyed by their content address, each version's meta.

A read takes the tenant's version once and reads only that version's keys, so an answer never mixes two builds.
A user's hash missing from a version that was just replaced (the pointer moved and the old version is being
removed) is read again from the new version once."""
from __future__ import annotations

import json
import threading
from collections import OrderedDict

from ..errors import HuaxiangError
from ..experiments.catalog import Experiment
from ..recommend.search import TitleIndex, unpack_catalogue
from ..recommend.store_model import StoreRecommender, load_recommender_files
from ..recommend.user_view import UserView
from ..schema import tenant_of
from . import layout

CATALOGUES_KEPT = 16  # search indexes held (one per tenant and version of its titles)


class OnlineReader:
    def __init__(self, url: str):
        import redis
        self.r = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(
            url, max_connections=64, timeout=5, socket_timeout=5, socket_connect_timeout=5))
        self.versions: dict[str, int] = {}
        self.lock = threading.Lock()
        self._meta: dict[tuple[str, int], dict] = {}
        self._models: dict[str, StoreRecommender] = {}
        self._catalogues: OrderedDict[str, tuple] = OrderedDict()
        self._experiments_raw: bytes | None = None
        self.experiments: list[tuple[Experiment, dict[str, str]]] = []  # running: (experiment, variant -> model blob)
        self.refresh()

    def refresh(self) -> dict[str, int]:
        """Re-reads the versions served and the running experiments (a background thread calls this every
        `POINTER_SECONDS`)."""
        self.versions = layout.current(self.r)
        raw = self.r.get(layout.EXPERIMENTS)
        if raw != self._experiments_raw:
            self.experiments = [(Experiment(e["name"], e["tenant"], e["salt"], tuple(
                (v["name"], v["model"], v["share"]) for v in e["variants"]), "running", None),
                {v["name"]: v["blob"] for v in e["variants"]}) for e in json.loads(raw or b"[]")]
            self._experiments_raw = raw
        return self.versions

    def experiment_of(self, user_id: str) -> tuple[Experiment, str, StoreRecommender] | None:
        """(the running experiment covering the user, their variant, its recommender), or None."""
        for test, blobs in self.experiments:
            if test.covers(user_id):
                variant, _ = test.variant(user_id)
                return test, variant, self.model(blobs[variant])
        return None

    def version(self, tenant: str) -> int | None:
        return self.versions.get(tenant)

    def user_fields(self, user_id: str, *fields: str) -> list[bytes | None] | None:
        """The user's fields (doc, ctx, week, h) from their tenant's served version; None: no such user."""
        tenant = tenant_of(user_id)
        for attempt in range(2):
            n = self.versions.get(tenant)
            if n is None:
                return None
            got = self.r.hmget(layout.user_key(tenant, n, user_id), fields)
            if any(v is not None for v in got):
                return got
            now = self.r.hget(layout.CURRENT, tenant.encode("utf-8", "surrogatepass"))
            if now is None or int(now) == n:
                return None
            self.versions = {**self.versions, tenant: int(now)}  # switched since the last re-read: once more
        return None

    def doc(self, user_id: str) -> bytes | None:
        got = self.user_fields(user_id, "doc")
        return got[0] if got else None

    def meta(self, tenant: str) -> dict:
        """The served version's meta of `tenant` ({} when the tenant has none)."""
        n = self.versions.get(tenant)
        if n is None:
            return {}
        found = self._meta.get((tenant, n))
        if found is None:
            found = {k.decode(): v.decode() for k, v in self.r.hgetall(layout.meta_key(tenant, n)).items()}
            if len(self._meta) > 1_000:
                self._meta.clear()
            self._meta[(tenant, n)] = found
        return found

    def recommender(self, tenant: str) -> StoreRecommender:
        """The recommender the tenant's served version was published with; HuaxiangError when there is none."""
        bid = self.meta(tenant).get("model")
        if not bid:
            raise HuaxiangError("no recommender in the online store for this tenant: run `huaxiang train "
                                "recommender` on the store and publish it again")
        return self.model(bid)

    def model(self, bid: str) -> StoreRecommender:
        """The recommender stored as blob `bid` (loaded once; those nothing serves any more are let go)."""
        rec = self._models.get(bid)
        if rec is None:
            with self.lock:
                rec = self._models.get(bid)
                if rec is None:
                    rec = load_recommender_files(layout.read_blob(self.r, bid))
                    served = self.model_ids()  # (models no version serves any more are let go)
                    self._models = {**{b: m for b, m in self._models.items() if b in served}, bid: rec}
        return rec

    def model_ids(self) -> set[str]:
        return ({self.meta(t).get("model") for t in self.versions}
                | {b for _, blobs in self.experiments for b in blobs.values()}) - {None, ""}

    def catalogue(self, tenant: str) -> tuple:
        """The tenant's title catalogue (ids, titles, BM25 index), as `search.title_catalogue` gives it."""
        bid = self.meta(tenant).get("search")
        if not bid:
            return [None], {}, TitleIndex().fit([""])  # (no titled items: every search finds nothing)
        with self.lock:
            found = self._catalogues.get(bid)
            if found is not None:
                self._catalogues.move_to_end(bid)
                return found
        found = unpack_catalogue(layout.read_blob(self.r, bid))
        with self.lock:
            self._catalogues[bid] = found
            while len(self._catalogues) > CATALOGUES_KEPT:
                self._catalogues.popitem(last=False)
        return found

    def catalogue_tenants(self) -> list[str]:
        return sorted(t for t in self.versions if self.meta(t).get("search"))

    def view(self, rec: StoreRecommender, user_id: str, ctx: bytes | None) -> UserView:
        """What the recommender knows of a user, from their published context (items the model does not know, or
        of another tenant, left out)."""
        c = layout.decode_ctx(ctx)
        tenant, n = tenant_of(user_id), rec.history_length
        own = lambda i: i in rec.index and tenant_of(i) == tenant  # noqa: E731
        return UserView([(rec.index[i], t) for i, t in c["h"] if own(i)][-n:],
                        [rec.index[i] for i in c["l"] if own(i)][-n:], c["q"], c["s"], c["c"])

    def segments(self, tenants) -> list[dict]:
        """The served segment report entries of `tenants` (None: every tenant), in the order of their names."""
        names = sorted(t for t in self.versions if tenants is None or t in tenants)
        raw = self.r.mget([layout.seg_key(t, self.versions[t]) for t in names]) if names else []
        return [json.loads(v) for v in raw if v]

    def private_inputs(self, tenants) -> tuple[dict[str, list], dict[str, list]]:
        """({tenant: segment rules}, {tenant: value-tier cells with every user's CLV}) of the served versions of
        `tenants` (None: all), for a private segment report."""
        rules, cells = {}, {}
        for t in sorted(self.versions):
            if tenants is None or t in tenants:
                rows, values = layout.decode_private(self.r.hgetall(layout.dp_key(t, self.versions[t])))
                if rows:
                    rules[t], cells[t] = rows, values
        return rules, cells

    def find_users(self, prefix: str, tenants, limit: int) -> list[str]:
        """User ids starting with `prefix` in the served versions of `tenants` (None: all), in id order."""
        out = []
        start = b"[" + prefix.encode("utf-8", "surrogatepass")
        for t in sorted(self.versions):
            if tenants is not None and t not in tenants:
                continue
            out += [u.decode("utf-8", "surrogatepass") for u in self.r.zrangebylex(
                layout.ids_key(t, self.versions[t]), start, start + b"\xff", start=0, num=limit)]
        return sorted(out)[:limit]

    def counts(self) -> dict[str, int]:
        """Users per tenant in the served versions."""
        names = sorted(self.versions)
        with self.r.pipeline(transaction=False) as p:
            for t in names:
                p.zcard(layout.ids_key(t, self.versions[t]))
            return dict(zip(names, p.execute()))

