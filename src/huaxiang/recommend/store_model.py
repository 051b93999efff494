"""A recommender trained on the store's own behaviour, saved beside the store, and its top-k.

Sequences: each user's item events (view, fav, cart, buy, review) in time order, a repeat of the
item just seen dropped. `huaxiang train recommender` fits the chosen model (hybrid by default; its
text part uses the item embeddings of `huaxiang embed` when they exist) with the leave-one-out
last item of each sequence held out for early stopping (SASRec, hybrid; the others learn from
everything), plus an item-KNN used for the reasons, and saves both with a snapshot of what serving
needs (recent histories, segments, titles), so that `recommend` answers without querying the store;
a user who arrived after training is read from the store.

Versions: each training is a new version in the store's model registry (`models/registry.py`), saved in
`<store>.models/recommender/v<N>/` with its validation metrics — NDCG@10 and HR@10 of each user's last item
(users with 3 or more items, at most `VALID_USERS` of them, a seeded sample), ranked against every item of
its tenant, the history's items excluded, by the model fitted on the sequences without their last item. For
SASRec and the hybrid that fit is the served model itself (its early stopping watched those last items, so
their metric is a little optimistic); the other models are fitted again on everything to serve. Serving
uses the promoted version (`model_dir`), or the one a registry spec names (`load_store_recommender(model=)`).
A recommender saved before versions existed (files right in `<store>.models/recommender/`) is ignored:
train again.

History length: what serving knows of a user's items is their latest `HISTORY_LENGTH` (50, SASRec's
`max_len`) item events, a repeat of the item just seen dropped — held in the snapshot, or read from the
store with `ORDER BY ts DESC LIMIT` for a user outside it — and only those are scored and explained: a
user with 75k events costs what a user with 50 does, bar that one store query. Nothing is lost: SASRec
reads at most `max_len` items, and item-KNN and the content model weigh the history by recency (0.7 per
step back: the item 50 back counts 3e-8 of the latest). `load_store_recommender(db, history_length=N)`
sets N for serving (at most what the snapshot was saved with for the users in it).
What is read from the store of a user outside the snapshot is kept in memory (for the `VIEWS_KEPT`
users most recently asked for) until `forget_context` or `forget_user` says their data changed: every
write path of a server must call one of them after its commit.

Tenants: `StoreRecommender.tenant_items(t)` is the index of tenant t's items (`schema.tenant_of`;
'' for ids without a namespace), computed once for all tenants, so that `recommend` and search offer
only items of the user's own tenant.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import HuaxiangError
from ..models import registry
from ..models.seqrec import MODELS, ItemKNN, Popularity, load_model, save_model
from ..models.seqrec.data import Sequences, metrics, ranks_full
from ..schema import tenant_of, tenant_sql
from ..store import has_table

ITEM_EVENTS = ("view", "click", "fav", "cart", "buy", "review")
USER_PARTS = ("histories", "liked", "queries", "profiles")  # what the serving snapshot holds per user
HISTORY_LENGTH = 50  # the latest item events per user that serving scores (SASRec's max_len; see above)
VIEWS_KEPT = 50_000  # users read from the store whose view is kept in memory until their data changes
VALID_USERS = 5_000  # at most this many users' last items measure a version (a seeded sample)
KIND = "recommender"  # the registry's kind for these models


def model_dir(db: str) -> Path | None:
    """The promoted recommender version's folder (None: none promoted)."""
    entry = registry.promoted(db, KIND)
    return registry.folder(db, entry) if entry else None


def has_model(db: str) -> bool:
    """Whether a recommender of the store `db` is promoted (`huaxiang train recommender` promotes what it trains)."""
    d = model_dir(db)
    return d is not None and (d / "recommender.json").exists()


def drop_user(db: str, user_id: str) -> int:
    """Removes a user from the serving snapshot (history, items reviewed well, searches, segment) of EVERY saved
    recommender version, promoted or not; returns how many of those parts held them, summed over the versions
    (0: in none). The models' weights keep what they learned in aggregate until they are trained again."""
    hits = 0
    for snap in sorted((registry.root(db) / KIND).glob("v*/snapshot.json")):
        data = json.loads(snap.read_text())
        found = sum(data[k].pop(user_id, None) is not None for k in USER_PARTS)
        if found:
            tmp = snap.with_name(".snapshot.json.tmp")
            tmp.write_text(json.dumps(data, ensure_ascii=False))
            tmp.replace(snap)
        hits += found
    return hits


def store_sequences(con, min_length: int = 1) -> Sequences:
    """Every user's item sequence from `events` (time order, immediate repeats dropped)."""
    rows = con.execute(f"""
        SELECT user_id, list(item_id ORDER BY ts, event_id) FROM events
        WHERE item_id IS NOT NULL AND type IN ({', '.join(repr(t) for t in ITEM_EVENTS)})
        GROUP BY user_id ORDER BY user_id""").fetchall()
    users, seqs, index = [], [], {}
    for user, items in rows:
        seq = [index.setdefault(i, len(index) + 1) for k, i in enumerate(items) if k == 0 or items[k - 1] != i]
        if len(seq) >= min_length:
            users.append(user)
            seqs.append(seq)
    return Sequences(users, seqs, list(index))


def store_item_vectors(con, items: list[str], encoder_name: str) -> np.ndarray | None:
    """Item text vectors from `huaxiang embed` (index 0 and items without one: zeros), or None."""
    if not has_table(con, "embeddings"):
        return None
    found = dict(con.execute("SELECT key, vector FROM embeddings WHERE kind = 'item' AND model = ?",
                             [encoder_name]).fetchall())
    if not found:
        return None
    dim = len(next(iter(found.values())))
    out = np.zeros((len(items) + 1, dim), dtype=np.float32)
    for i, item in enumerate(items, 1):
        if item in found:
            out[i] = found[item]
    return out


def validation_metrics(m, data: Sequences, max_users: int = VALID_USERS, seed: int = 0) -> dict:
    """NDCG@10 and HR@10 of the last item of each sequence of 3 or more items (at most `max_users` of them, a
    seeded sample) for `m` fitted on the sequences without their last item: every item of the held-out item's
    tenant ranked, the history's excluded, ties at their expected place. Plus `valid_users`."""
    long = np.array([r for r, s in enumerate(data.seqs) if len(s) >= 3], dtype=np.int64)
    pick = np.sort(np.random.default_rng(seed).choice(long, min(max_users, len(long)), replace=False))
    tenants = {t: n for n, t in enumerate(sorted({tenant_of(i) for i in data.items}))}
    codes = np.array([-1] + [tenants[tenant_of(i)] for i in data.items], dtype=np.int64)
    ranks, batch = [], max(1, min(512, 10_000_000 // (data.n_items + 1)))  # (a batch's scores: at most 80 MB)
    for start in range(0, len(pick), batch):
        rows = pick[start:start + batch]
        histories = [data.seqs[r][:-1] for r in rows]
        targets = np.array([data.seqs[r][-1] for r in rows], dtype=np.int64)
        scores = m.score(histories)
        if len(tenants) > 1:  # only the held-out item's tenant's items compete with it
            scores = scores.astype(np.float64)
            scores[codes[None, :] != codes[targets][:, None]] = -np.inf
        ranks.append(ranks_full(scores, histories, targets))
    found = metrics(np.concatenate(ranks), ks=(10,))
    return {"ndcg@10": round(found["ndcg@10"], 6), "hr@10": round(found["hr@10"], 6), "valid_users": int(len(pick))}


def data_range(con) -> tuple[str | None, str | None]:
    """The times (ISO) of the first and the last item event a recommender learns from."""
    first, last = con.execute(f"""SELECT min(ts), max(ts) FROM events WHERE item_id IS NOT NULL
        AND type IN ({', '.join(repr(t) for t in ITEM_EVENTS)})""").fetchone()
    return tuple(t.isoformat() if hasattr(t, "isoformat") else (None if t is None else str(t)) for t in (first, last))


def train_store_recommender(con, db: str, model: str, encoder_name: str, sasrec: dict | None = None,
                            progress: Callable[[str], None] | None = None, promote: bool = True,
                            valid_users: int = VALID_USERS, warm_from: dict | None = None) -> dict:
    """Trains `model` on the store's sequences as a new registry version (see the module's docstring), promoted
    unless `promote` is False. `warm_from`: a registry entry of a SASRec version whose weights a SASRec starts
    from (its items matched by id: `SASRec.fit(init=…)`). Returns the training's summary with version, metrics,
    promoted and path (and `warm_from`: the version started from)."""
    if model not in MODELS:
        raise HuaxiangError(f"unknown model {model!r} (one of: {', '.join(MODELS)})")
    data = store_sequences(con)
    if not any(len(s) >= 3 for s in data.seqs):
        raise HuaxiangError("no user has 3 or more item events: nothing to learn a recommender from")
    vectors = store_item_vectors(con, data.items, encoder_name)
    if model == "content" and vectors is None:
        raise HuaxiangError("the content model needs item embeddings: run `huaxiang embed` first")
    kw = {"sasrec": sasrec or {}} if model == "hybrid" else (sasrec or {}) if model == "sasrec" else {}
    data_from, data_to = data_range(con)
    version, out = registry.new_version(db, KIND)
    try:
        m = MODELS[model](**kw)
        started = time.perf_counter()
        # every sequence but its last item trains the measured model; the last items measure it
        train, warm = [s[:-1] for s in data.seqs], {}
        if model in ("sasrec", "hybrid"):  # (the last items also decide when to stop)
            long = [s for s in data.seqs if len(s) >= 3]
            if warm_from is not None and model == "sasrec":
                from ..models.seqrec.sasrec import match_items
                before = load_recommender_dir(registry.folder(db, warm_from))
                warm = {"init": before.model, "init_index": match_items(before.items, data.items)}
            m.fit(train, data.n_items, vectors, valid=([s[:-1] for s in long], np.array([s[-1] for s in long])),
                  progress=progress, **warm)
        else:
            m.fit(train, data.n_items, vectors)
        if progress:
            progress("measuring on the last items")
        found = validation_metrics(m, data, valid_users)
        if model not in ("sasrec", "hybrid"):  # the served model learns from every sequence
            train = data.seqs
            m = MODELS[model](**kw).fit(train, data.n_items, vectors)
        # the explanations come from item-KNN on all of them
        knn = ItemKNN().fit(data.seqs, data.n_items)
        save_model(m, str(out / "model"))
        save_model(knn, str(out / "knn"))
        np.save(out / "popularity.npy", Popularity().fit(data.seqs, data.n_items).counts_)
        if vectors is not None:
            np.save(out / "item_vectors.npy", vectors)
        (out / "snapshot.json").write_text(json.dumps(snapshot(con, data), ensure_ascii=False))
        meta = {"model": model, "name": model, "version": str(version), "items": data.items, "users": len(data.users),
                "trained_on": len(train), "train_seconds": round(time.perf_counter() - started, 1),
                "encoder": encoder_name, "metrics": found}
        (out / "recommender.json").write_text(json.dumps(meta, ensure_ascii=False))
        params = {"model": model, "encoder": encoder_name, **({"sasrec": dict(sasrec)} if sasrec else {}),
                  **({"warm_from": warm_from["version"]} if warm else {})}
        entry = registry.register(db, KIND, model, version, params, found, data_from, data_to, promote)
    except BaseException:
        import shutil
        shutil.rmtree(out, ignore_errors=True)
        raise
    return {**{k: v for k, v in meta.items() if k != "items"}, "version": version, "promoted": entry["promoted"],
            "path": str(out), "data_from": data_from, "data_to": data_to}


def retrain_store_recommender(con, db: str, encoder_name: str, model: str | None = None, margin: float = 0.01,
                              sasrec: dict | None = None, progress: Callable[[str], None] | None = None,
                              warm: bool = True) -> dict:
    """Trains a new version (not promoted) of `model` — by default the promoted version's model and SASRec
    settings, or the hybrid when none is promoted — and promotes it when its validation NDCG@10 is at least the
    promoted version's minus `margin` (absolute), or when none is promoted. A SASRec following a promoted SASRec
    of the same settings starts from its weights unless `warm` is False. Returns the decision: version, name,
    promoted (bool), ndcg@10, promoted_version, promoted_ndcg@10 (None: none), margin, reason, warm_from."""
    current = registry.promoted(db, KIND)
    name = model or (current["name"] if current else "hybrid")
    if sasrec is None and current is not None and current["name"] == name:
        sasrec = current["params"].get("sasrec")
    same = current is not None and current["name"] == name == "sasrec"  # (other settings: fit says what differs)
    meta = train_store_recommender(con, db, name, encoder_name, sasrec, progress, promote=False,
                                   warm_from=current if warm and same else None)
    new = meta["metrics"]["ndcg@10"]
    old = current["metrics"].get("ndcg@10") if current else None
    if old is None:
        ok, reason = True, "no promoted version with a validation NDCG@10 to compare with"
    else:
        ok = new >= old - margin
        reason = (f"validation NDCG@10 {new:.4f} {'>=' if ok else '<'} {old:.4f} (version {current['version']}) "
                  f"- margin {margin:g}")
    if ok:
        registry.promote(db, KIND, meta["version"])
    return {"version": meta["version"], "name": name, "promoted": ok, "ndcg@10": new, "hr@10": meta["metrics"]["hr@10"],
            "promoted_version": current["version"] if current else None, "promoted_ndcg@10": old,
            "margin": margin, "reason": reason, "warm_from": current["version"] if warm and same else None}


def snapshot(con, data: Sequences, recent: int = HISTORY_LENGTH) -> dict:
    """What `recommend` needs per user and item, read once so that serving makes no store queries:
    recent history (index, type), well-reviewed items, segment and top category, latest searches,
    each segment's most popular items, and the items' titles and categories."""
    index = data.index()
    histories = {}
    for user, items in con.execute(f"""SELECT user_id, list([item_id, type] ORDER BY ts, event_id) FROM events
            WHERE item_id IS NOT NULL AND type IN ({', '.join(repr(t) for t in ITEM_EVENTS)}) GROUP BY 1""").fetchall():
        h = [(index[i], t) for k, (i, t) in enumerate(items) if (k == 0 or items[k - 1][0] != i) and i in index]
        histories[user] = h[-recent:]
    liked = {}
    for user, item in con.execute("""SELECT user_id, item_id FROM reviews WHERE user_id IS NOT NULL
            AND item_id IS NOT NULL AND (rating >= 4 OR label = 1) ORDER BY ts""").fetchall():
        if item in index:
            liked.setdefault(user, []).append(index[item])
    liked = {u: items[-recent:] for u, items in liked.items()}
    queries = {u: q for u, q in con.execute("""SELECT user_id, list(query ORDER BY ts DESC)[:3] FROM events
            WHERE type = 'search' AND query IS NOT NULL GROUP BY 1""").fetchall()}
    profiles, segment_top = {}, {}
    if has_table(con, "profiles"):
        profiles = {u: [s, c] for u, s, c in con.execute("SELECT user_id, segment, top_category FROM profiles").fetchall()}
        # each segment's 200 most popular items of every tenant (serving keeps the user's tenant's)
        for segment, _, items in con.execute(f"""SELECT segment, {tenant_sql('item_id')} AS tenant,
                list(item_id ORDER BY n DESC, item_id)[:200] FROM (
                SELECT p.segment, e.item_id, count(*) AS n FROM events e JOIN profiles p USING (user_id)
                WHERE e.item_id IS NOT NULL GROUP BY 1, 2) GROUP BY 1, 2 ORDER BY 1, 2""").fetchall():
            segment_top.setdefault(segment, []).extend(index[i] for i in items if i in index)
    info = dict((i, (t, c)) for i, t, c in con.execute("""SELECT x.item_id, i.title, coalesce(i.category, e.category)
        FROM (SELECT unnest(?) AS item_id) x LEFT JOIN items i USING (item_id)
        LEFT JOIN (SELECT item_id, any_value(category_id) AS category FROM events WHERE category_id IS NOT NULL
                   GROUP BY 1) e USING (item_id)""", [data.items]).fetchall())
    return {"histories": histories, "liked": liked, "queries": queries, "profiles": profiles,
            "segment_top": segment_top, "titles": [None] + [info.get(i, (None, None))[0] for i in data.items],
            "categories": [None] + [info.get(i, (None, None))[1] for i in data.items]}


@dataclass
class StoreRecommender:
    model: object
    knn: ItemKNN
    items: list[str]
    index: dict[str, int]
    popularity: np.ndarray
    vectors: np.ndarray | None
    meta: dict
    snapshot: dict
    history_length: int = HISTORY_LENGTH
    views_kept: int = VIEWS_KEPT
    _tenants: dict[str, np.ndarray] | None = field(default=None, repr=False)  # tenant -> its item indices
    _masks: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # tenant -> boolean over the items
    _segment_top: dict[tuple[str, str], list[int]] = field(default_factory=dict, repr=False)
    # what was read from the store of users outside the snapshot (user_view), least recently used out; `_epoch`
    # counts the forgets, so that a view read while one happened is not kept
    _views: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _epoch: int = field(default=0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def tenant_items(self, tenant: str) -> np.ndarray:
        """The indices (1-based, sorted) of the items of `tenant` ('': ids without a namespace); empty when the
        recommender knows none. Computed for every tenant on the first call."""
        if self._tenants is None:
            groups: dict[str, list[int]] = {}
            for i, item in enumerate(self.items, 1):
                groups.setdefault(tenant_of(item), []).append(i)
            self._tenants = {t: np.array(ix, dtype=np.int64) for t, ix in groups.items()}
        return self._tenants.get(tenant, np.zeros(0, dtype=np.int64))

    def tenant_mask(self, tenant: str) -> np.ndarray | None:
        """A boolean over the item indices (0 unused): True for the items of `tenant`; None when every item is
        the tenant's (a store of one tenant: nothing to mask). Kept once asked for."""
        items = self.tenant_items(tenant)
        if len(items) == len(self.items):
            return None
        if tenant not in self._masks:
            mask = np.zeros(len(self.items) + 1, dtype=bool)
            mask[items] = True
            self._masks[tenant] = mask
        return self._masks[tenant]

    def item_tenant(self, i: int) -> str:
        return tenant_of(self.items[i - 1])

    def segment_top(self, segment: str, tenant: str) -> list[int]:
        """The segment's most popular items of `tenant`, best first (kept once asked for)."""
        key = (segment, tenant)
        if key not in self._segment_top:
            if not len(self.tenant_items(tenant)):  # (no cache entry for a tenant with no items)
                return []
            self._segment_top[key] = [i for i in self.snapshot["segment_top"].get(segment, [])
                                      if self.item_tenant(i) == tenant]
        return self._segment_top[key]

    def cached_view(self, user_id: str) -> tuple[object | None, int]:
        """(the view kept of a user read from the store, or None; the epoch to pass to `keep_view`)."""
        with self._lock:
            view = self._views.get(user_id)
            if view is not None:
                self._views.move_to_end(user_id)
            return view, self._epoch

    def keep_view(self, user_id: str, view, epoch: int) -> None:
        """Keeps a view read from the store, unless a user was forgotten since `epoch` (it may be stale)."""
        with self._lock:
            if epoch == self._epoch and self.views_kept > 0:
                self._views[user_id] = view
                while len(self._views) > self.views_kept:
                    self._views.popitem(last=False)

    def forget_context(self, user_ids) -> None:
        """Drops what is held in memory of these users (their data changed): they are read from the store."""
        for u in user_ids:
            self.forget_user(u)

    def forget_user(self, user_id: str) -> int:
        """Removes a user from what is held in memory — the snapshot (history, items reviewed well, searches,
        segment), as `drop_user` does on disk, and the view kept of them — so that a server keeps serving without
        reloading; afterwards the user is read from the store (where a forgotten user has nothing left). Returns
        how many parts of the snapshot held them."""
        with self._lock:
            self._epoch += 1
            self._views.pop(user_id, None)
        return sum(self.snapshot[part].pop(user_id, None) is not None for part in USER_PARTS)


def recommender_files(db: str, model: str | None = None) -> dict[str, bytes] | None:
    """The promoted recommender of the store `db` (or the version the registry spec `model` names) as {path under
    its folder: bytes} (None: none trained), with the per-user parts of its snapshot left out (the online store
    keeps each user's context beside their profile) and its registry name and version in its meta."""
    if model is None and not has_model(db):
        return None
    entry = registry.resolve(db, KIND, model)
    d = registry.folder(db, entry)
    files = {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}
    snap = json.loads(files["snapshot.json"])
    files["snapshot.json"] = json.dumps({**snap, **{part: {} for part in USER_PARTS}}, ensure_ascii=False).encode()
    meta = json.loads(files["recommender.json"])
    files["recommender.json"] = json.dumps({**meta, "name": entry["name"], "version": str(entry["version"])},
                                           ensure_ascii=False).encode()
    return files


def load_recommender_files(files: dict[str, bytes], history_length: int = HISTORY_LENGTH) -> StoreRecommender:
    """A recommender from `recommender_files`' output (written to a temporary folder and loaded from there)."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix="huaxiang-model-") as tmp:
        for name, data in files.items():
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise HuaxiangError(f"model file {name!r} is outside its folder")
            path = Path(tmp, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return load_recommender_dir(Path(tmp), history_length)


def load_store_recommender(db: str, history_length: int = HISTORY_LENGTH, model: str | None = None) -> StoreRecommender:
    """The promoted recommender of the store `db`, or the version the registry spec `model` names ("3", "@3",
    "itemknn", "itemknn@3": see `registry.resolve`); its meta holds "name" and "version" (e.g. "3")."""
    if model is None and not has_model(db):
        raise HuaxiangError(f"no recommender for {db} yet: run `huaxiang train recommender --db {db}` first")
    entry = registry.resolve(db, KIND, model)
    d = registry.folder(db, entry)
    if not (d / "recommender.json").exists():
        raise HuaxiangError(f"recommender version {entry['version']}: its folder {d} holds no recommender.json")
    rec = load_recommender_dir(d, history_length)
    rec.meta.update(name=entry["name"], version=str(entry["version"]))
    return rec


def load_recommender_dir(d: Path, history_length: int = HISTORY_LENGTH) -> StoreRecommender:
    if history_length < 1:
        raise HuaxiangError(f"history_length must be at least 1 (got {history_length})")
    meta = json.loads((d / "recommender.json").read_text())
    vectors = np.load(d / "item_vectors.npy") if (d / "item_vectors.npy").exists() else None
    rec = StoreRecommender(load_model(str(d / "model")), load_model(str(d / "knn")), meta["items"],
                            {item: i for i, item in enumerate(meta["items"], 1)}, np.load(d / "popularity.npy"),
                            vectors, meta, json.loads((d / "snapshot.json").read_text()), history_length)
    if "torch" in sys.modules:  # a sequential model: serving scores one user at a time, fastest on one thread
        sys.modules["torch"].set_num_threads(1)  # (benchmarks/recommend_latency.py: p99 7 ms vs 85 ms on two)
    return rec
