"""The profile's feature table: every group of behaviour features as an Ibis expression keyed by user_id, joined
into one row per user. One definition, run on DuckDB (the store's build, incremental refreshes, scores' past
cut-offs) and on Spark (the Parquet build).

Reference time: every feature is measured as of a reference time — a given cut-off, or else each tenant's own
data end (`reference_times`), so that old logs get sensible recencies and tenants do not age each other's users.
"""
from __future__ import annotations

from datetime import datetime

import duckdb
import ibis
import pandas as pd

from ..config import Config
from ..errors import HuaxiangError
from ..schema import tenant_expr
from . import behaviour as bh
from . import tags as tg

COUNT_COLUMNS = ["n_events", "n_view", "n_cart", "n_fav", "n_buy", "n_search", "n_review", "active_days",
                 "n_sessions", "n_items", "n_categories", "frequency", "n_returns", "n_written_reviews"]


def reference_times(ib, as_of: datetime | None):
    """The reference time: `as_of` when given, else each tenant's own data end (a scalar when the
    store holds one tenant, a small tenant -> as_of table otherwise)."""
    if as_of is not None:
        return ibis.timestamp(as_of)
    refs = bh.data_ends(ib.table("events"), ib.table("orders")).execute()
    if refs.empty:
        raise HuaxiangError("the store has no events or orders: run `huaxiang ingest` first")
    if len(refs) == 1:
        return ibis.timestamp(refs["as_of"].iloc[0].to_pydatetime())
    return ibis.memtable(refs)


def feature_parts(ib, cfg: Config, refs, price_cuts, with_sentiment: bool = False,
                  embedding_model: str | None = None, only=None):
    """The users (everyone seen in events, orders or reviews) and each group of behaviour features,
    as Ibis expressions keyed by user_id (sentiment and embeddings once `huaxiang sentiment` /
    `huaxiang embed` have run: `embedding_model` names the encoder whose user vectors to take).
    `price_cuts`: each tenant's price-band cut points (`price_cuts`, or a table: `bh.price_cut_table`).
    `only`: an Ibis column of user ids to restrict them to."""
    events, items, orders, reviews = (ib.table(t) for t in ("events", "items", "orders", "reviews"))
    if only is not None:  # just these users (an incremental refresh)
        events, orders, reviews = (t.filter(t.user_id.isin(only)) for t in (events, orders, reviews))
    users = (events.select("user_id").union(orders.select("user_id"))
             .union(reviews.filter(reviews.user_id.notnull()).select("user_id")).distinct())
    users = bh.with_reference(users, refs)
    events, orders = bh.with_reference(events, refs), bh.with_reference(orders, refs)
    events, orders = events.filter(events.ts <= events.as_of), orders.filter(orders.ts <= orders.as_of)  # no leakage
    pur = bh.purchases(events, orders)
    joined = events.left_join(items.select("item_id", _brand="brand", _category="category"), "item_id")
    sentiment = ib.table("review_sentiment") if with_sentiment else None
    optional = {"review sentiment": bh.review_sentiment(reviews, sentiment)} if with_sentiment else {}
    if embedding_model:
        optional["embedding"] = semantic(ib, embedding_model)
    return users, {
        **optional,
        "lifetime": bh.lifetime(events, orders),
        "activity": bh.activity(events, cfg.session_gap_minutes),
        "rfm": bh.rfm(pur),
        "repeat purchases": bh.repeat_purchase(events),
        "category affinity": bh.affinity(joined, joined.category_id.fill_null(joined._category), "category",
                                         cfg.event_weights, cfg.half_life_days, cfg.top_k),
        "brand affinity": bh.affinity(joined, joined._brand, "brand", cfg.event_weights, cfg.half_life_days,
                                      cfg.top_k),
        "price band": bh.price_band(bh.item_prices(events, items), bh.price_cut_table(price_cuts)),
        "time habits": bh.time_habits(events, cfg.utc_offset_hours),
        "reviews": bh.reviews_summary(reviews),
        "review aspects": bh.review_mentions(reviews, ib.table("review_mentions"), sentiment, cfg.top_k),
        "keywords": tg.user_keywords(events, ib.table("item_tokens"), cfg.event_weights, cfg.half_life_days,
                                     cfg.top_k),
    }


def features_as_of(con: duckdb.DuckDBPyConnection, cfg: Config, as_of: datetime) -> pd.DataFrame:
    """Every user's behaviour features from what happened on or before `as_of` only (for training scores on
    a past cut-off); written nowhere. Users first seen after `as_of` are absent."""
    ib = ibis.duckdb.from_connection(con)
    users, parts = feature_parts(ib, cfg, ibis.timestamp(as_of), price_cuts(ib))
    f = join_parts(users, list(parts.values())).execute()
    return f[f["first_ts"].notna()]


def semantic(ib, model: str):
    """The user's embedding and semantic interest tags from `huaxiang embed` (for the configured encoder)."""
    emb, tags = ib.table("user_embeddings"), ib.table("user_interests")
    emb = emb.filter(emb.model == model).select("user_id", embedding="vector")
    tags = tags.filter(tags.model == model).select("user_id", semantic_tags="interests")
    return emb.left_join(tags, "user_id").drop("user_id_right")


def join_parts(users, parts):
    """One row per user with every feature; counts are 0, not NULL, for users a part does not see;
    funnel rates are derived from the joined counts (not computed as a part of their own)."""
    f = users
    for part in parts:
        f = f.left_join(part, "user_id").drop("user_id_right")
    return bh.funnel(f.mutate(**{c: f[c].fill_null(0) for c in COUNT_COLUMNS if c in f.columns}))


def price_cuts(ib) -> dict[str, list[float]]:
    """Per tenant (of the item id; an event without one: of its user), the 1/3 and 2/3 quantiles of every known
    price (catalogue and events): the price-band cut points. A tenant with no price has none."""
    items, events = ib.table("items"), ib.table("events")
    p = items.select(tenant=tenant_expr(items.item_id), p=items.price).union(
        events.select(tenant=tenant_expr(events.item_id.fill_null(events.user_id)), p=events.price), distinct=False)
    p = p.filter(p.p >= 0)
    q = p.group_by("tenant").aggregate(lo=p.p.quantile(1 / 3), hi=p.p.quantile(2 / 3)).to_pandas()
    return {t: [float(lo), float(hi)] for t, lo, hi in q.sort_values("tenant").itertuples(index=False)}
