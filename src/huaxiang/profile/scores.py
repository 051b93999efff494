"""`huaxiang score`: lifecycle scores written into the store, per tenant (each shop's own time line).

Table `scores`: one row per (user_id, kind) with `score` and `detail` (JSON: reasons in words and the numbers
behind them). kinds:
  churn       P(no purchase in the next `horizon_days`), LightGBM on transaction features, trained on the tenant's
              own past cut-offs (rolling, no label window overlaps the present);
  propensity  P(buys tomorrow), LightGBM on the profile features as of yesterday, labelled by today;
  clv         BG/NBD + Gamma-Gamma expected value over `months`, P(alive), expected purchases; value tier;
  risk        click-farming / fake-order flags (rules + IsolationForest).
"""
from __future__ import annotations

import json
from datetime import timedelta
from typing import Callable

import duckdb
import numpy as np
import pandas as pd

from ..config import Config
from ..errors import HuaxiangError
from ..models import churn as ch
from ..models.scores import ScoreModel, reason_text
from ..store import has_table

KINDS = ("churn", "propensity", "clv", "risk")
TIERS = (("top", 0.9), ("high", 0.7), ("medium", 0.3), ("low", 0.0))  # CLV quantile tiers within a tenant
SCORES_DDL = "CREATE TABLE IF NOT EXISTS scores (user_id VARCHAR, kind VARCHAR, score DOUBLE, detail VARCHAR)"
NOT_FEATURES = {"cluster", "habit_utc_offset", "peak_hour", "peak_weekday"}


def tenant_of(user_id: str) -> str:
    return user_id.split(":", 1)[0] if ":" in user_id else ""


def store_transactions(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """(customer_id, date, value): one row per user and day with a purchase (orders where a user has them,
    else buy events — the profile's own purchase rule); returns are not transactions."""
    return con.execute("""
        WITH lines AS (
            SELECT user_id, ts, amount FROM orders WHERE amount > 0
            UNION ALL
            SELECT user_id, ts, coalesce(price * coalesce(quantity, 1), 0) FROM events
            WHERE type = 'buy' AND user_id NOT IN (SELECT user_id FROM orders))
        SELECT user_id AS customer_id, CAST(date_trunc('day', ts) AS TIMESTAMP) AS date,
               sum(coalesce(amount, 0)) AS value
        FROM lines GROUP BY ALL ORDER BY 1, 2""").df()


def _tenants(frame: pd.DataFrame, column: str) -> dict[str, pd.DataFrame]:
    return dict(tuple(frame.groupby(frame[column].map(tenant_of), sort=True)))


def _tier(values: np.ndarray) -> list[str]:
    ranks = pd.Series(values).rank(pct=True).to_numpy()
    return [next(name for name, q in TIERS if r >= q) for r in ranks]


def _rows(users, kind, score, details) -> pd.DataFrame:
    return pd.DataFrame({"user_id": list(users), "kind": kind, "score": np.asarray(score, float),
                         "detail": [json.dumps(d, ensure_ascii=False, default=float) for d in details]})


def score_churn(con, cfg: Config, note: Callable[[str], None]) -> pd.DataFrame:
    out = []
    for tenant, tx in _tenants(store_transactions(con), "customer_id").items():
        end, h = tx["date"].max(), cfg.churn_horizon_days
        if (end - tx["date"].min()).days < 2 * h:
            note(f"churn: {tenant or 'store'} spans {(end - tx['date'].min()).days} days; a {h}-day horizon "
                 f"needs ≥ {2 * h} (set churn_horizon_days) — skipped")
            continue
        cuts = [c for c in ch.rolling_cutoffs(end, h, 4) if c - tx["date"].min() >= pd.Timedelta(days=h)]
        X, y = ch.churn_dataset(tx, cuts[:-1] or cuts[-1:], h)
        if y.nunique() < 2:
            note(f"churn: {tenant or 'store'}: every past customer has the same outcome — skipped")
            continue
        model = ScoreModel("churn", seed=cfg.seed).fit(X, y)
        now = ch.customer_features(tx, end)
        p = model.predict(now)
        out.append(_rows(now.index, "churn", p, [
            {"horizon_days": h, "reasons": r, "text": reason_text(r)} for r in model.explain(now)]))
        note(f"churn: {tenant or 'store'}: {len(now):,} customers, trained on {len(X):,} past cases")
    return pd.concat(out) if out else pd.DataFrame()


def score_propensity(con, cfg: Config, note: Callable[[str], None]) -> pd.DataFrame:
    from .build import features_as_of
    current = con.execute("SELECT * FROM features").df()
    out = []
    spans = con.execute("""SELECT regexp_extract(user_id, '^([^:]+):', 1) AS tenant, min(ts), max(ts),
        count(*) FILTER (type = 'buy') FROM events GROUP BY 1 ORDER BY 1""").fetchall()
    for tenant, first, last, n_buy in spans:
        if n_buy == 0 or last - first < timedelta(days=2):
            note(f"propensity: {tenant or 'store'}: needs buy events over ≥ 2 days — skipped")
            continue
        cut = last - timedelta(days=1)
        past = features_as_of(con, cfg, cut)
        past = past[past["user_id"].map(tenant_of) == tenant]
        bought = {u for (u,) in con.execute("SELECT DISTINCT user_id FROM events WHERE type = 'buy' AND ts > ? "
                                            "AND ts <= ?", [cut, last]).fetchall()}
        y = past["user_id"].isin(bought).astype(int)
        if y.nunique() < 2:
            note(f"propensity: {tenant or 'store'}: nobody (or everybody) bought on the last day — skipped")
            continue
        cols = [c for c in past.select_dtypes("number").columns if c not in NOT_FEATURES]
        model = ScoreModel("propensity", seed=cfg.seed).fit(past[cols], y)
        now = current[current["user_id"].map(tenant_of) == tenant]
        p = model.predict(now[cols])
        out.append(_rows(now["user_id"], "propensity", p, [
            {"horizon_days": 1, "reasons": r, "text": reason_text(r)} for r in model.explain(now[cols])]))
        note(f"propensity: {tenant or 'store'}: {len(now):,} users, trained on {len(past):,} as of {cut:%Y-%m-%d}")
    return pd.concat(out) if out else pd.DataFrame()


def score_clv(con, cfg: Config, note: Callable[[str], None]) -> pd.DataFrame:
    from ..models.clv import CLVModel, rfm_summary
    out = []
    for tenant, tx in _tenants(store_transactions(con), "customer_id").items():
        end = tx["date"].max()
        summary = rfm_summary(tx, end)
        if summary["frequency"].sum() < 10 or len(summary) < 20:
            note(f"clv: {tenant or 'store'}: too few repeat buyers to fit BG/NBD — skipped")
            continue
        try:
            model = CLVModel().fit(summary)
        except HuaxiangError as exc:  # one tenant's odd data must not stop the others
            note(f"clv: {tenant or 'store'}: {exc} — skipped")
            continue
        alive = model.probability_alive(summary)
        purchases = model.expected_purchases(summary, cfg.clv_months * 30.4 / 7)
        if not np.isfinite(purchases).all():
            note(f"clv: {tenant or 'store'}: BG/NBD found no usable parameters (degenerate time line?) — skipped")
            continue
        # without prices the value is counted in purchases (the tiers still rank customers)
        value, unit = (model.clv(summary, cfg.clv_months), "money") if model.gg_ else (purchases, "purchases")
        tiers = _tier(value)
        details = [{"months": cfg.clv_months, "unit": unit, "value_tier": t, "p_alive": a, "expected_purchases": e,
                    "text": f"{e:.1f} purchases expected in {cfg.clv_months} months, P(still a customer) {a:.0%}, "
                            f"{f:.0f} repeat purchases so far"}
                   for t, a, e, f in zip(tiers, alive, purchases, summary["frequency"])]
        out.append(_rows(summary["customer_id"], "clv", value, details))
        note(f"clv: {tenant or 'store'}: {len(summary):,} customers, r {model.params_['r']:.3f}, "
             f"α {model.params_['alpha']:.2f}, a {model.params_['a']:.3f}, b {model.params_['b']:.3f}")
    return pd.concat(out) if out else pd.DataFrame()


def score_risk(con, cfg: Config, note: Callable[[str], None]) -> pd.DataFrame:
    from ..models.risk import RiskDetector, risk_features
    events = con.execute("SELECT user_id, item_id, category_id, type, ts FROM events "
                         "WHERE type IN ('view', 'cart', 'fav', 'buy')").df()
    out = []
    for tenant, ev in _tenants(events, "user_id").items():
        f = risk_features(ev, cfg.utc_offset_hours)
        if len(f) < 20:
            note(f"risk: {tenant or 'store'}: {len(f)} users are too few for the anomaly detector — skipped")
            continue
        flags = RiskDetector(seed=cfg.seed).fit(f).flag(f)
        out.append(_rows(flags.index, "risk", flags["risk_score"], [
            {"flagged": bool(fl), "rules": ru, "reasons": re, "text": "; ".join(re) or "nothing unusual"}
            for fl, ru, re in zip(flags["risk_flagged"], flags["risk_rules"], flags["risk_reasons"])]))
        note(f"risk: {tenant or 'store'}: {int(flags['risk_flagged'].sum())} of {len(f):,} users flagged")
    return pd.concat(out) if out else pd.DataFrame()


SCORERS = {"churn": score_churn, "propensity": score_propensity, "clv": score_clv, "risk": score_risk}


def write_scores(con: duckdb.DuckDBPyConnection, cfg: Config, kinds, note: Callable[[str], None]) -> dict:
    """Computes each kind and replaces its rows in `scores` (one transaction per kind). Returns rows per kind."""
    unknown = [k for k in kinds if k not in SCORERS]
    if unknown:
        raise HuaxiangError(f"unknown score {unknown[0]!r} (one of: {', '.join(KINDS)})")
    if kinds and not has_table(con, "features"):
        raise HuaxiangError("no profiles in this store yet: run `huaxiang build` first")
    con.execute(SCORES_DDL)
    written = {}
    for kind in kinds:
        rows = SCORERS[kind](con, cfg, note)
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM scores WHERE kind = ?", [kind])
        if len(rows):
            con.register("_rows", rows)
            con.execute("INSERT INTO scores SELECT user_id, kind, score, detail FROM _rows")
            con.unregister("_rows")
        con.execute("COMMIT")
        written[kind] = len(rows)
    return written


def user_scores(con: duckdb.DuckDBPyConnection, user_ids: list[str]) -> dict[str, dict]:
    """{user_id: {kind: {score, ...detail}}} for `user_ids`; {} before `huaxiang score` has run."""
    try:
        rows = con.execute("SELECT user_id, kind, score, detail FROM scores WHERE user_id IN (SELECT unnest(?))",
                           [list(user_ids)]).fetchall()
    except duckdb.CatalogException:
        return {}
    out: dict[str, dict] = {}
    for user, kind, score, detail in rows:
        out.setdefault(user, {})[kind] = {"score": score, **json.loads(detail)}
    return out


def value_tiers(con: duckdb.DuckDBPyConnection, clv_cap: float | None = None) -> list[dict]:
    """Users per (CLV value tier, segment) with their mean CLV (each user's clipped to [0, clv_cap] if given);
    [] before `huaxiang score clv`."""
    clv = "score" if clv_cap is None else "greatest(0, least(score, ?))"
    try:
        rows = con.execute(f"""SELECT tier, segment, count(*) AS n, avg({clv}) FROM (
                SELECT json_extract_string(s.detail, '$.value_tier') AS tier, p.segment, s.score
                FROM scores s JOIN profiles p USING (user_id) WHERE s.kind = 'clv')
                GROUP BY tier, segment ORDER BY list_position(['top', 'high', 'medium', 'low'], tier), n DESC""",
                           [] if clv_cap is None else [clv_cap]).fetchall()
    except duckdb.CatalogException:
        return []
    return [{"value_tier": t, "segment": g, "users": n, "mean_clv": c} for t, g, n, c in rows]
