"""Which answer a click, a cart or a purchase came from, and an experiment's per-user outcome.

The rule: an event (click, cart or buy of an item) is attributed to the latest exposure of that item to that user at
or before the event, if it is at most `window_hours` old (default 24 h); otherwise to nothing. One event counts for
one exposure at most; a user shown an item twice and buying it once is one purchase, of the later answer.

`outcomes` gives, per exposed user of an experiment, what `stats.experiment_report` takes: impressions (items shown
to them by the experiment), clicks on those, whether they bought one (conversion) and the revenue of what they
bought (price × quantity, 1 when no quantity is given), by variant, plus each answer's latency.
"""
from __future__ import annotations

import numpy as np

from ..errors import HuaxiangError

ATTRIBUTED_TYPES = ("click", "cart", "buy")
WINDOW_HOURS = 24.0


def attributed_sql(window_hours: float = WINDOW_HOURS, experiment: bool = False) -> str:
    """SQL: every attributed event with its exposure (`request_id`, `experiment`, `variant`, `position`, `model`);
    with `experiment`, only exposures of the experiment named by the statement's first parameter."""
    if not window_hours > 0:
        raise HuaxiangError(f"attribution window {window_hours!r}: expected a number of hours > 0")
    shown = "SELECT * FROM exposures" + (" WHERE experiment = $experiment" if experiment else "")
    types = ", ".join(f"'{t}'" for t in ATTRIBUTED_TYPES)
    return f"""
        SELECT e.event_id, e.user_id, e.item_id, e.type, e.ts, e.price, e.quantity,
               x.request_id, x.experiment, x.variant, x.position, x.model, x.ts AS shown_at
        FROM (SELECT * FROM events WHERE type IN ({types}) AND item_id IS NOT NULL) e
        ASOF JOIN ({shown}) x ON e.user_id = x.user_id AND e.item_id = x.item_id AND e.ts >= x.ts
        WHERE e.ts - x.ts <= INTERVAL '{float(window_hours) * 3600:.0f} seconds'"""


def outcomes(con, experiment: str, window_hours: float = WINDOW_HOURS) -> dict[str, dict[str, np.ndarray]]:
    """{variant: {"impressions", "clicks", "buyer", "revenue": one value per exposed user; "latency_ms": one per
    answer}} of `experiment`, from `exposures` and the events attributed to them."""
    params = {"experiment": experiment}
    rows = con.execute(f"""
        WITH shown AS (
            SELECT variant, user_id, count(*) AS impressions FROM exposures
            WHERE experiment = $experiment AND user_id IS NOT NULL GROUP BY ALL),
        done AS (
            SELECT variant, user_id, count(*) FILTER (WHERE type = 'click') AS clicks,
                   bool_or(type = 'buy') AS buyer,
                   coalesce(sum(coalesce(price, 0) * coalesce(quantity, 1)) FILTER (WHERE type = 'buy'), 0) AS revenue
            FROM ({attributed_sql(window_hours, True)}) GROUP BY ALL)
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
