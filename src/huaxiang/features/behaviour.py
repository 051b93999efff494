"""Per-user behaviour features: activity, sessions, funnel, RFM, affinity, price band, time habits.

Every function takes Ibis tables (and plain parameters) and returns a table keyed by `user_id`.
Input rows carry `as_of`, the reference time of their user's tenant: ages and recencies are
measured from it (see `data_ends` and `features.table.reference_times`).
"""
from __future__ import annotations

import math

import ibis
from ibis import _

from ..schema import tenant_expr

DAY = 86400.0


EPOCH = ibis.timestamp("1970-01-01 00:00:00")


def _epoch(ts):
    """Seconds since 1970 with the microseconds (Spark's epoch_seconds drops the fraction, DuckDB's keeps it)."""
    return ts.delta(EPOCH, unit="microsecond").cast("float64") / 1e6


def _ratio(num, den):
    """num / den, NULL where den is 0 (a rate with no opportunity is unknown, not zero)."""
    return ibis.ifelse(den > 0, num.cast("float64") / den.cast("float64"), ibis.null("float64"))


def ranked(value, rank, where=None):
    """Aggregation: the values of a group as a list in `rank` order. Written as collect, sort by rank, take
    the value (not an ordered collect, which the PySpark backend does not compile), so that DuckDB and Spark
    run the same definition."""
    values = ibis.struct({"r": rank, "v": value}).collect(where=where).sort().map(lambda p: p["v"])
    return ibis.ifelse(values.length() > 0, values, ibis.null(values.type()))  # none: NULL on both engines


def data_ends(events, orders):
    """Each tenant's own data end (latest event or order): old logs get sensible recencies, and
    several shops in one store do not age each other's users."""
    ts = events.select("user_id", "ts").union(orders.select("user_id", "ts"))
    return ts.group_by(tenant=tenant_expr(ts.user_id)).aggregate(as_of=_.ts.max())


def with_reference(table, refs):
    """Adds the `as_of` column to `table` (keyed by user_id); `refs` is a scalar or a tenant table."""
    if isinstance(refs, ibis.expr.types.Scalar):
        return table.mutate(as_of=refs)
    t = table.mutate(_tenant=tenant_expr(table.user_id))
    return t.left_join(refs.rename(_tenant="tenant"), "_tenant").drop("_tenant", "_tenant_right")


# Features one event changes by itself, declared once: the SQL below aggregates them, and `features.live` applies
# them to a profile event by event (the online writer's live path, between its refreshes).
EVENT_COUNTS = {"n_events": None, **{f"n_{t}": t for t in ("view", "cart", "fav", "buy", "search", "review")}}
"""Count name -> the event type it counts (None: every event)."""
SEEN = {"first_ts": "min", "last_ts": "max"}
"""Timestamp name -> how a user's event times fold into it."""


def local_hour(epoch, offset_hours, floor):
    """The hour of the day (0-23) of a time in seconds since 1970, at UTC + `offset_hours`. Written for both
    executions: `epoch` an Ibis column (floor: Ibis's) or a number (floor: `math.floor`)."""
    return floor(((epoch + offset_hours * 3600) % DAY) / 3600)


def local_weekday(epoch, offset_hours, floor):
    """The day of the week (Monday = 0) of a time in seconds since 1970, at UTC + `offset_hours`."""
    return (floor((epoch + offset_hours * 3600) / DAY) + 3) % 7  # 1970-01-01 was a Thursday


def _count(t):
    return _.count() if t is None else (_.type == t).sum()


def activity(events, session_gap_minutes: float = 30.0):
    """Counts per event type, active days and sessions.

    Sessions are the source's `session_id`s where given; events without one start a new session
    after more than `session_gap_minutes` of inactivity (counted as session starts, no sort key
    beyond the timestamp needed). The session starts (a window over each user's events) and the
    distinct counts are two aggregations joined by user: in one, DuckDB cannot spill them (10M events
    ran out of memory under a 1 GB cap; apart they build in it)."""
    ep = _epoch(events.ts)
    gap = ep - ep.lag().over(ibis.window(group_by=events.user_id, order_by=events.ts))
    starts = events.mutate(_start=events.session_id.isnull() & (gap.isnull() | (gap > session_gap_minutes * 60)))
    starts = starts.group_by("user_id").aggregate(_starts=_._start.sum())
    counts = events.mutate(_day=events.ts.date()).group_by("user_id").aggregate(
        **{name: _count(t) for name, t in EVENT_COUNTS.items()},
        active_days=_._day.nunique(),
        _sessions=_.session_id.nunique(),
        n_items=_.item_id.nunique(),
        n_categories=_.category_id.nunique(),
    )
    out = counts.join(starts, "user_id")
    out = out.mutate(n_sessions=out._sessions + out._starts)
    return out.select("user_id", *EVENT_COUNTS,
                      "active_days", "n_sessions", "n_items", "n_categories",
                      events_per_session=out.n_events.cast("float64") / out.n_sessions)


def lifetime(events, orders):
    """First and last time a user was seen (any event or order), tenure and idle days."""
    seen = events.select("user_id", "ts", "as_of").union(orders.select("user_id", "ts", "as_of"))
    g = seen.group_by("user_id").aggregate(**{name: getattr(_.ts, how)() for name, how in SEEN.items()},
                                           _as_of=_.as_of.max())
    return g.mutate(tenure_days=(_epoch(g._as_of) - _epoch(g.first_ts)) / DAY,
                    idle_days=(_epoch(g._as_of) - _epoch(g.last_ts)) / DAY).drop("_as_of")


def funnel(act):
    """Adds conversion rates along view → cart → fav → buy to a table with `activity`'s counts."""
    return act.mutate(
        cart_rate=_ratio(act.n_cart, act.n_view),
        fav_rate=_ratio(act.n_fav, act.n_view),
        buy_rate=_ratio(act.n_buy, act.n_view),
        cart_to_buy=_ratio(act.n_buy, act.n_cart),
    )


def purchases(events, orders):
    """One row per purchase line: (user_id, ts, amount, order_key, as_of).

    Orders are the truth for users who have them; for the others, buy events are their purchases
    (amount = price × quantity when the price is known). Returns/cancellations have negative amounts."""
    o = orders.select("user_id", "ts", "amount", order_key=orders.invoice.fill_null(orders.order_id),
                      as_of=orders.as_of)
    buyers_with_orders = orders.select("user_id").distinct()
    b = events.filter(events.type == "buy")
    b = b.anti_join(buyers_with_orders, "user_id")
    b = b.select("user_id", "ts", amount=b.price * b.quantity.fill_null(1.0),
                 order_key=b.event_id, as_of=b.as_of)
    return o.union(b)


def transactions(events, orders):
    """(customer_id, date, value): one row per user and day with a purchase (orders where a user has them, else
    buy events, as in `purchases`; amounts unknown count 0); returns are not transactions."""
    o = orders.filter(orders.amount > 0).select("user_id", "ts", "amount")
    b = events.filter(events.type == "buy").anti_join(orders.select("user_id").distinct(), "user_id")
    b = b.select("user_id", "ts", amount=(b.price * b.quantity.fill_null(1.0)).fill_null(0.0))
    lines = o.union(b, distinct=False)
    return (lines.group_by(customer_id=lines.user_id, date=lines.ts.date().cast("timestamp"))
            .aggregate(value=lines.amount.fill_null(0.0).sum()))


def store_transactions(con):
    """`transactions` of a store (a DuckDB connection) as a pandas frame, ordered by customer and day."""
    ib = ibis.duckdb.from_connection(con)
    tx = transactions(ib.table("events"), ib.table("orders")).to_pandas()
    return tx.sort_values(["customer_id", "date"], ignore_index=True)


def rfm(purch):
    """Recency (days since last purchase), frequency (distinct orders; returns are not orders),
    monetary (net spend: returns subtract)."""
    g = purch.group_by("user_id").aggregate(
        last_purchase_ts=_.ts.max(where=_.amount.isnull() | (_.amount > 0)),
        frequency=_.order_key.nunique(where=_.amount.isnull() | (_.amount > 0)),
        monetary=_.amount.sum(),
        n_returns=(_.amount < 0).sum(),
        _as_of=_.as_of.max(),
    )
    return g.mutate(
        recency_days=(_epoch(g._as_of) - _epoch(g.last_purchase_ts)) / DAY,
        avg_order_value=_ratio(g.monetary, g.frequency),
    ).drop("_as_of")


def repeat_purchase(events):
    """Share of a user's purchased items that they bought again in a separate order (an order is
    the event's session/invoice where known, else the buy event itself)."""
    b = events.filter((events.type == "buy") & events.item_id.notnull())
    per_item = b.group_by(["user_id", "item_id"]).aggregate(orders=b.session_id.fill_null(b.event_id).nunique())
    return per_item.group_by("user_id").aggregate(
        repeat_purchase_rate=(_.orders >= 2).sum().cast("float64") / _.count())


def _weights(types, weights: dict):
    expr = ibis.cases(*((types == t, float(w)) for t, w in weights.items()), else_=0.0)
    return expr


def decay(events, half_life_days: float):
    """2^(-age / half_life), the age of each event in days before its `as_of`."""
    return (-(math.log(2) / half_life_days) * (_epoch(events.as_of) - _epoch(events.ts)) / DAY).exp()


def user_item_weights(events, weights: dict, half_life_days: float):
    """(user_id, item_id, w): a user's time-decayed, event-weighted attention to each item."""
    e = events.filter(events.item_id.notnull()).mutate(_w=_weights(events.type, weights) * decay(events, half_life_days))
    return e.filter(e._w > 0).group_by(["user_id", "item_id"]).aggregate(w=_._w.sum())


def affinity(events, key, name: str, weights: dict, half_life_days: float, k: int):
    """Time-decayed shares of a user's attention per `key` value (category, brand, ...): each event
    weighs `weights[type] * 2^(-age / half_life)`. Returns the top-k as a list of {name, share}
    ordered by share, plus the top value alone as `top_<name>`."""
    e = events.mutate(_key=key, _w=_weights(events.type, weights) * decay(events, half_life_days))
    e = e.filter(e._key.notnull() & (e._w > 0))
    g = e.group_by(["user_id", "_key"]).aggregate(w=_._w.sum())
    g = g.mutate(share=g.w / g.w.sum().over(group_by=g.user_id),
                 rank=ibis.row_number().over(group_by=g.user_id, order_by=[ibis.desc(g.w), g._key]))
    top = g.filter(g.rank < k)  # ibis row_number() counts from 0
    plural = name[:-1] + "ies" if name.endswith("y") else name + "s"
    return top.group_by("user_id").aggregate(**{
        f"top_{plural}": ranked(ibis.struct({"name": top._key, "share": top.share}), top.rank),
        f"top_{name}": top._key.argmin(top.rank),
    })


def item_prices(events, items):
    """The price of each interacted item: the event's own price, else the catalogue price."""
    return events.left_join(items.select("item_id", _item_price="price"), "item_id").select(
        "user_id", "type", price=_.price.fill_null(_._item_price))


PRICE_CUTS_SCHEMA = {"_cut_tenant": "string", "_cut_low": "float64", "_cut_high": "float64"}


def price_cut_table(cuts):
    """Per-tenant price-band cut points, {tenant: (low, high)} (`features.table.price_cuts`), as the table
    `price_band` joins; an Ibis table with the columns of PRICE_CUTS_SCHEMA is taken as it is."""
    if isinstance(cuts, ibis.expr.types.Table):
        return cuts
    rows = sorted(cuts.items())
    return ibis.memtable({"_cut_tenant": [t for t, _ in rows], "_cut_low": [float(c[0]) for _, c in rows],
                          "_cut_high": [float(c[1]) for _, c in rows]}, schema=PRICE_CUTS_SCHEMA)


def price_band(priced, cuts):
    """Median price of what a user looks at and buys, and its band against their tenant's cut points (`cuts`:
    `price_cut_table`, the 1/3 and 2/3 quantiles of the tenant's item prices; no band for a tenant without)."""
    p = priced.filter(priced.price.notnull() & (priced.price >= 0))
    g = p.group_by("user_id").aggregate(
        median_price=_.price.median(),
        median_buy_price=ibis.ifelse(_.type == "buy", _.price, ibis.null("float64")).median(),
    )
    g = g.left_join(cuts, tenant_expr(g.user_id) == cuts._cut_tenant)
    return g.select("user_id", "median_price", "median_buy_price", price_band=ibis.cases(
        (g._cut_low.isnull(), ibis.null("string")), (g.median_price <= g._cut_low, "low"),
        (g.median_price >= g._cut_high, "high"), else_="mid"))


def _floor(x):
    return x.floor().cast("int64")


def time_habits(events, utc_offset_hours: float = 0.0):
    """Hour-of-day and day-of-week histograms (local time = UTC + offset), peaks, night and
    weekend shares, and the preferred part of the day."""
    epoch = _epoch(events.ts)
    e = events.mutate(_hour=local_hour(epoch, utc_offset_hours, _floor),
                      _dow=local_weekday(epoch, utc_offset_hours, _floor))
    # count per (user, hour) and (user, weekday) first: the histograms then read small tables
    hours = e.group_by(["user_id", "_hour"]).aggregate(n=_.count())
    dows = e.group_by(["user_id", "_dow"]).aggregate(n=_.count())
    h = hours.group_by("user_id").aggregate(
        hour_hist=ibis.array([_.n.sum(where=_._hour == k).fill_null(0) for k in range(24)]),
        peak_hour=_._hour.argmax(_.n * 100 - _._hour),  # ties: the earliest hour
        night_share=_.n.sum(where=_._hour < 6).fill_null(0) / _.n.sum(),
        _morning=_.n.sum(where=(_._hour >= 6) & (_._hour < 12)).fill_null(0),
        _afternoon=_.n.sum(where=(_._hour >= 12) & (_._hour < 18)).fill_null(0),
        _evening=_.n.sum(where=_._hour >= 18).fill_null(0),
        _night=_.n.sum(where=_._hour < 6).fill_null(0),
    )
    d = dows.group_by("user_id").aggregate(
        dow_hist=ibis.array([_.n.sum(where=_._dow == k).fill_null(0) for k in range(7)]),
        peak_weekday=_._dow.argmax(_.n * 10 - _._dow),  # ties: the earliest day
        weekend_share=_.n.sum(where=_._dow >= 5).fill_null(0) / _.n.sum(),
    )
    best = ibis.greatest(h._morning, h._afternoon, h._evening, h._night)
    h = h.mutate(daypart=ibis.cases((h._evening == best, "evening"), (h._afternoon == best, "afternoon"),
                                    (h._morning == best, "morning"), else_="night"))
    return h.drop("_morning", "_afternoon", "_evening", "_night").join(d, "user_id")


def review_sentiment(reviews, sentiment):
    """Per user: reviews judged positive (p ≥ 0.5) and negative, and the mean positive probability."""
    r = reviews.filter(reviews.user_id.notnull()).join(sentiment, "review_id")
    return r.group_by("user_id").aggregate(n_positive_reviews=(_.positive >= 0.5).sum(),
                                           n_negative_reviews=(_.positive < 0.5).sum(),
                                           mean_sentiment=_.positive.mean())


def reviews_summary(reviews):
    r = reviews.filter(reviews.user_id.notnull())
    return r.group_by("user_id").aggregate(n_written_reviews=_.count(), avg_rating=_.rating.mean())


def review_mentions(reviews, mentions, sentiment, k: int):
    """Per user: the aspects their reviews praise and criticise and the brands and colours they name,
    each a top-k list of {name, n} (n = reviews). An aspect's polarity is its clause's; a clause with
    no opinion word takes the review's own polarity: the sentiment model's (p ≥ 0.5), else the rating
    (≥ 4 / ≤ 2), else the source's label. `sentiment` may be None (not scored yet)."""
    r = reviews.filter(reviews.user_id.notnull()).select("review_id", "user_id", "rating", "label")
    if sentiment is not None:
        r = r.left_join(sentiment.select("review_id", "positive"), "review_id").drop("review_id_right")
    else:
        r = r.mutate(positive=ibis.null("float64"))
    own = (ibis.cases((r.positive >= 0.5, 1), (r.positive < 0.5, -1), (r.rating >= 4, 1), (r.rating <= 2, -1),
                      (r.label > 0, 1), (r.label == 0, -1), else_=ibis.null("int32")))
    m = mentions.join(r.mutate(_own=own), "review_id")
    m = m.mutate(_pol=m.polarity.cast("int32").fill_null(m._own))
    named = m.mutate(_kind=ibis.cases(((m.kind == "aspect") & (m._pol > 0), "aspects_praised"),
                                      ((m.kind == "aspect") & (m._pol < 0), "aspects_criticised"),
                                      (m.kind == "brand", "brands_mentioned"), (m.kind == "colour", "colours_mentioned"),
                                      else_=ibis.null("string")))
    g = named.filter(named._kind.notnull()).group_by(["user_id", "_kind", "name"]).aggregate(
        n=_.review_id.nunique())
    g = g.mutate(rank=ibis.row_number().over(group_by=[g.user_id, g._kind], order_by=[ibis.desc(g.n), g.name]))
    g = g.filter(g.rank < k)
    item = ibis.struct({"name": g.name, "n": g.n})
    return g.group_by("user_id").aggregate(**{
        kind: ranked(item, g.rank, where=g._kind == kind)
        for kind in ("aspects_praised", "aspects_criticised", "brands_mentioned", "colours_mentioned")})
