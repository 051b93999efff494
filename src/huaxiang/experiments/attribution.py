"""Which answer a click, a cart or a purchase came from, and an experiment's per-user outcome.

The rule, for an event (click, cart or buy of an item):
- it carries a `request_id` that names an exposure of that item to that user (the answer it came from): it is
  attributed to that exposure if it happened at most `window_hours` after it (default 24 h), otherwise to nothing —
  even when the item was shown to the user again later;
- it carries none, or one that names no exposure of that item to that user (another user's, a mistyped one): it is
  attributed to the latest exposure of that item to that user at or before the event, if it is at most
  `window_hours` old; otherwise to nothing.
One event counts for one exposure at most; a user shown an item twice and buying it once without a request_id is
one purchase, of the later answer. Exposures of every experiment (and of none) compete: an experiment is credited
with the events attributed to its own exposures only.

`outcomes` gives, per exposed user of an experiment, what `stats.experiment_report` takes: impressions (items shown
to them by the experiment), clicks on those, whether they bought one (conversion) and the revenue of what they
bought (price × quantity, 1 when no quantity is given), by variant, plus each answer's latency.
"""
from __future__ import annotations

from datetime import timezone

import numpy as np

from ..errors import HuaxiangError
from ..store import has_column

ATTRIBUTED_TYPES = ("click", "cart", "buy")
WINDOW_HOURS = 24.0


def attributed_sql(window_hours: float = WINDOW_HOURS, experiment: bool = False, by_request: bool = True) -> str:
    """SQL: every attributed event with its exposure (`request_id`, `experiment`, `variant`, `position`, `model`,
    `shown_at`); with `experiment`, only those attributed to exposures of the experiment named by the statement's
    parameter `$experiment`. `by_request=False`: the window rule alone (a store whose events have no `request_id`
    yet, opened read-only)."""
    if not window_hours > 0:
        raise HuaxiangError(f"attribution window {window_hours!r}: expected a number of hours > 0")
    window = f"INTERVAL '{float(window_hours) * 3600:.0f} seconds'"
    types = ", ".join(f"'{t}'" for t in ATTRIBUTED_TYPES)
    named = "request_id" if by_request else "NULL::VARCHAR"
    out = "event_id, user_id, item_id, type, ts, price, quantity, request_id, experiment, variant, position, model, " \
        "shown_at"
    kept = " AND experiment = $experiment" if experiment else ""
    shown = "x.request_id, x.experiment, x.variant, x.position, x.model, x.ts AS shown_at"
    return f"""
        WITH e AS (SELECT event_id, user_id, item_id, type, ts, price, quantity, {named} AS _named
                   FROM events WHERE type IN ({types}) AND item_id IS NOT NULL),
        -- every exposure competes (an experiment's are picked after), but only those of a (user, item) pair that has
        -- an event to attribute: 1M exposures are cut to a few percent before the joins
        x AS (SELECT request_id, ts, user_id, item_id, experiment, variant, position, model
              FROM exposures SEMI JOIN e USING (user_id, item_id)),
        -- each event with the exposure its request_id names (one: an item written twice for one answer counts once)
        n AS (SELECT e.*, {shown} FROM e LEFT JOIN (
                  SELECT * FROM x WHERE request_id IS NOT NULL
                  QUALIFY row_number() OVER (PARTITION BY request_id, user_id, item_id ORDER BY ts DESC, position) = 1
              ) x ON e._named = x.request_id AND e.user_id = x.user_id AND e.item_id = x.item_id)
        SELECT {out} FROM n WHERE shown_at IS NOT NULL AND ts >= shown_at AND ts - shown_at <= {window}{kept}
        UNION ALL
        SELECT {out} FROM (
            SELECT e.event_id, e.user_id, e.item_id, e.type, e.ts, e.price, e.quantity, {shown}
            FROM (SELECT * FROM n WHERE shown_at IS NULL) e
            ASOF JOIN x ON e.user_id = x.user_id AND e.item_id = x.item_id AND e.ts >= x.ts)
        WHERE ts - shown_at <= {window}{kept}"""


def outcomes(con, experiment: str, window_hours: float = WINDOW_HOURS) -> dict[str, dict[str, np.ndarray]]:
    """{variant: {"impressions", "clicks", "buyer", "revenue": one value per exposed user; "latency_ms": one per
    answer}} of `experiment`, from `exposures` and the events attributed to them."""
    params, by_request = {"experiment": experiment}, has_column(con, "events", "request_id")
    rows = con.execute(f"""
        WITH shown AS (
            SELECT variant, user_id, count(*) AS impressions FROM exposures
            WHERE experiment = $experiment AND user_id IS NOT NULL GROUP BY ALL),
        done AS (
            SELECT variant, user_id, count(*) FILTER (WHERE type = 'click') AS clicks,
                   bool_or(type = 'buy') AS buyer,
                   coalesce(sum(coalesce(price, 0) * coalesce(quantity, 1)) FILTER (WHERE type = 'buy'), 0) AS revenue
            FROM ({attributed_sql(window_hours, True, by_request)}) GROUP BY ALL)
        SELECT s.variant, list(s.impressions ORDER BY s.user_id), list(coalesce(d.clicks, 0) ORDER BY s.user_id),
               list(coalesce(d.buyer, false)::INTEGER ORDER BY s.user_id),
               list(coalesce(d.revenue, 0) ORDER BY s.user_id)
        FROM shown s LEFT JOIN done d USING (variant, user_id) GROUP BY s.variant""", params).fetchall()
    out = {variant: {"impressions": np.asarray(imp, dtype=np.int64), "clicks": np.asarray(clicks, dtype=np.int64),
                     "buyer": np.asarray(buyer, dtype=np.int64), "revenue": np.asarray(revenue, dtype=np.float64)}
           for variant, imp, clicks, buyer, revenue in rows}
    for variant, latencies in con.execute("""SELECT variant, list(latency) FROM (
            SELECT variant, request_id, any_value(latency_ms) AS latency FROM exposures
            WHERE experiment = $experiment AND latency_ms IS NOT NULL GROUP BY ALL) GROUP BY variant""",
                                          params).fetchall():
        out.setdefault(variant, {})["latency_ms"] = np.asarray(latencies, dtype=np.float64)
    return out


def export_log(con, path: str, window_hours: float = WINDOW_HOURS, until=None, tenants=None) -> dict[str, int]:
    """Writes the exposures that carry a propensity (served while exploring: experiments.explore) as a log for
    off-policy evaluation (`huaxiang ope --format exposures`): one row per shown item — request_id, ts, user_id,
    item_id, position, propensity, click (1 when a click is attributed to it by the rule above), model, version,
    experiment, variant, surface — in time order; Parquet when `path` ends in .parquet, else CSV. `until`: only
    exposures shown before then (those of the last `window_hours` may still be clicked); `tenants`: only the
    answers to those tenants' users (None: every tenant). Returns {"rows", "clicks"}."""
    from ..schema import sql_literal, tenant_sql
    if not has_column(con, "exposures", "propensity"):  # (a store made before it, opened read-only: none explored)
        return {"rows": 0, "clicks": 0}
    if until is not None and until.tzinfo is not None:  # (the store's times are UTC, without a zone)
        until = until.astimezone(timezone.utc).replace(tzinfo=None)
    fmt = "PARQUET" if str(path).lower().endswith(".parquet") else "CSV, HEADER"
    where = ["x.propensity IS NOT NULL"] + (["x.ts < $until"] if until is not None else []) + \
        ([f"{tenant_sql('x.user_id')} IN (SELECT unnest($tenants))"] if tenants is not None else [])
    params = {**({"until": until} if until is not None else {}),
              **({"tenants": sorted(tenants)} if tenants is not None else {})}
    query = f"""
        WITH clicked AS (SELECT DISTINCT request_id, user_id, item_id FROM (
                             {attributed_sql(window_hours, False, has_column(con, "events", "request_id"))})
                         WHERE type = 'click')
        SELECT x.request_id, x.ts, x.user_id, x.item_id, x.position, x.propensity,
               (c.request_id IS NOT NULL)::INTEGER AS click, x.model, x.version, x.experiment, x.variant, x.surface
        FROM exposures x LEFT JOIN clicked c
             ON c.request_id = x.request_id AND c.user_id = x.user_id AND c.item_id = x.item_id
        WHERE {' AND '.join(where)} ORDER BY x.ts, x.request_id, x.position"""
    target = sql_literal(str(path))
    rows = con.execute(f"COPY ({query}) TO {target} (FORMAT {fmt})", params).fetchone()[0]
    reader = "read_parquet" if fmt == "PARQUET" else "read_csv"
    clicks = con.execute(f"SELECT coalesce(sum(click), 0) FROM {reader}({target})").fetchone()[0] if rows else 0
    return {"rows": int(rows), "clicks": int(clicks)}
