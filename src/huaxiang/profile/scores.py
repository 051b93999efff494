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
from ..features.behaviour import store_transactions
from ..errors import HuaxiangError
from ..models import churn as ch
from ..models.scores import NOT_FEATURES, ScoreModel, holdout_metrics, reason_text
from ..schema import tenant_expr, tenant_of, tenant_sql
from ..store import has_table, transaction

KINDS = ("churn", "propensity", "clv", "risk")
TIERS = (("top", 0.9), ("high", 0.7), ("medium", 0.3), ("low", 0.0))  # CLV quantile tiers within a tenant
SCORES_DDL = "CREATE TABLE IF NOT EXISTS scores (user_id VARCHAR, kind VARCHAR, score DOUBLE, detail VARCHAR)"
RISK_COLUMNS = ("user_id", "item_id", "category_id", "type", "ts")


def _tenants(frame: pd.DataFrame, column: str) -> dict[str, pd.DataFrame]:
    return dict(tuple(frame.groupby(frame[column].map(tenant_of), sort=True)))


def _rows(users, kind, score, details) -> pd.DataFrame:
    return pd.DataFrame({"user_id": list(users), "kind": kind, "score": np.asarray(score, float),
                         "detail": [json.dumps(d, ensure_ascii=False, default=float) for d in details]})


# Each kind is a fit on one tenant's data (all of it, or a sample of its users when the data is large) and an
# apply to any of its users' data; the fitted dict is all that apply needs (on Spark it is broadcast).

def fit_churn(tx: pd.DataFrame, start, end, cfg: Config, note: Callable[[str], None], tenant: str) -> dict | None:
    """tx: the tenant's transactions (`bh.transactions`); start, end: its first and last day."""
    h = cfg.churn_horizon_days
    if (end - start).days < 2 * h:
        note(f"churn: {tenant or 'store'} spans {(end - start).days} days; a {h}-day horizon "
             f"needs ≥ {2 * h} (set churn_horizon_days) — skipped")
        return None
    cuts = [c for c in ch.rolling_cutoffs(end, h, 4) if c - start >= pd.Timedelta(days=h)]
    X, y = ch.churn_dataset(tx, cuts[:-1] or cuts[-1:], h)
    if y.nunique() < 2:
        note(f"churn: {tenant or 'store'}: every past customer has the same outcome — skipped")
        return None
    note(f"churn: {tenant or 'store'}: trained on {len(X):,} past cases")
    return {"model": ScoreModel("churn", seed=cfg.seed).fit(X, y), "end": end, "horizon_days": h,
            "metrics": holdout_metrics("churn", X, y, cfg.seed)}


def apply_churn(fitted: dict, tx: pd.DataFrame) -> pd.DataFrame:
    now = ch.customer_features(tx, fitted["end"])
    return _rows(now.index, "churn", fitted["model"].predict(now), [
        {"horizon_days": fitted["horizon_days"], "reasons": r, "text": reason_text(r)}
        for r in fitted["model"].explain(now)])


def fit_propensity(past: pd.DataFrame, bought: set, cfg: Config, note: Callable[[str], None], tenant: str,
                   cut) -> dict | None:
    """past: the tenant's users' features as of `cut` (a day before its data ends); bought: who bought after."""
    past = past.sort_values("user_id", ignore_index=True)  # the same model whatever order the rows came in
    y = past["user_id"].isin(bought).astype(int)
    if y.nunique() < 2:
        note(f"propensity: {tenant or 'store'}: nobody (or everybody) bought on the last day — skipped")
        return None
    cols = [c for c in past.select_dtypes("number").columns if c not in NOT_FEATURES]
    note(f"propensity: {tenant or 'store'}: trained on {len(past):,} users as of {cut:%Y-%m-%d}")
    return {"model": ScoreModel("propensity", seed=cfg.seed).fit(past[cols], y), "columns": cols, "cut": cut,
            "metrics": holdout_metrics("propensity", past[cols], y, cfg.seed)}


def apply_propensity(fitted: dict, feats: pd.DataFrame) -> pd.DataFrame:
    X = feats[fitted["columns"]].astype(float)
    return _rows(feats["user_id"], "propensity", fitted["model"].predict(X), [
        {"horizon_days": 1, "reasons": r, "text": reason_text(r)} for r in fitted["model"].explain(X)])


def fit_clv(tx: pd.DataFrame, end, cfg: Config, note: Callable[[str], None], tenant: str) -> dict | None:
    from ..models.clv import CLVModel, rfm_summary
    summary = rfm_summary(tx, end)
    if summary["frequency"].sum() < 10 or len(summary) < 20:
        note(f"clv: {tenant or 'store'}: too few repeat buyers to fit BG/NBD — skipped")
        return None
    try:
        model = CLVModel().fit(summary)
    except HuaxiangError as exc:  # one tenant's odd data must not stop the others
        note(f"clv: {tenant or 'store'}: {exc} — skipped")
        return None
    fitted = {"model": model, "end": end, "months": cfg.clv_months}
    value, purchases, _ = _clv_values(fitted, summary)
    if not np.isfinite(purchases).all():
        note(f"clv: {tenant or 'store'}: BG/NBD found no usable parameters (degenerate time line?) — skipped")
        return None
    note(f"clv: {tenant or 'store'}: {len(summary):,} customers, r {model.params_['r']:.3f}, "
         f"α {model.params_['alpha']:.2f}, a {model.params_['a']:.3f}, b {model.params_['b']:.3f}")
    # the value tiers' lower bounds: the 90th, 70th and 30th percentiles of the customers fitted on
    return {**fitted, "tier_bounds": [float(np.quantile(value, q)) for _, q in TIERS[:-1]],
            "metrics": {"customers": len(summary), **{k: float(v) for k, v in model.params_.items()}}}


def _clv_values(fitted: dict, summary: pd.DataFrame):
    """(value, expected purchases, unit); without prices the value is counted in purchases."""
    model, months = fitted["model"], fitted["months"]
    purchases = model.expected_purchases(summary, months * 30.4 / 7)
    if model.gg_:
        return model.clv(summary, months), purchases, "money"
    return purchases, purchases, "purchases"


def apply_clv(fitted: dict, tx: pd.DataFrame) -> pd.DataFrame:
    from ..models.clv import rfm_summary
    summary = rfm_summary(tx, fitted["end"])
    value, purchases, unit = _clv_values(fitted, summary)
    alive, months = fitted["model"].probability_alive(summary), fitted["months"]
    tiers = [next((name for (name, _), b in zip(TIERS, fitted["tier_bounds"]) if v >= b), TIERS[-1][0])
             for v in value]
    details = [{"months": months, "unit": unit, "value_tier": t, "p_alive": a, "expected_purchases": e,
                "text": f"{e:.1f} purchases expected in {months} months, P(still a customer) {a:.0%}, "
                        f"{f:.0f} repeat purchases so far"}
               for t, a, e, f in zip(tiers, alive, purchases, summary["frequency"])]
    return _rows(summary["customer_id"], "clv", value, details)


def fit_risk(f: pd.DataFrame, cfg: Config, note: Callable[[str], None], tenant: str) -> dict | None:
    """f: the tenant's users' `risk_features`."""
    from ..models.risk import RiskDetector
    if len(f) < 20:
        note(f"risk: {tenant or 'store'}: {len(f)} users are too few for the anomaly detector — skipped")
        return None
    detector = RiskDetector(seed=cfg.seed).fit(f.sort_index())
    return {"detector": detector, "metrics": {"users": len(f), "contamination": detector.contamination}}


def apply_risk(fitted: dict, f: pd.DataFrame) -> pd.DataFrame:
    flags = fitted["detector"].flag(f)
    return _rows(flags.index, "risk", flags["risk_score"], [
        {"flagged": bool(fl), "rules": ru, "reasons": re, "text": "; ".join(re) or "nothing unusual"}
        for fl, ru, re in zip(flags["risk_flagged"], flags["risk_rules"], flags["risk_reasons"])])


def score_churn(con, cfg: Config, note: Callable[[str], None]) -> tuple[pd.DataFrame, dict]:
    out, models = [], {}
    for tenant, tx in _tenants(store_transactions(con), "customer_id").items():
        fitted = fit_churn(tx, tx["date"].min(), tx["date"].max(), cfg, note, tenant)
        if fitted:
            out.append(apply_churn(fitted, tx))
            models[tenant] = fitted
    return (pd.concat(out) if out else pd.DataFrame()), models


def propensity_spans(ib):
    """Per tenant: (tenant, first event, last event, buy events), an Ibis expression."""
    ev = ib.table("events")
    return (ev.group_by(tenant=tenant_expr(ev.user_id))
            .aggregate(first=ev.ts.min(), last=ev.ts.max(), n_buy=(ev.type == "buy").sum()).order_by("tenant"))


def propensity_cut(note: Callable[[str], None], tenant: str, first, last, n_buy):
    """The tenant's training cut-off (a day before its data ends), or None when it cannot be trained."""
    if n_buy == 0 or last - first < timedelta(days=2):
        note(f"propensity: {tenant or 'store'}: needs buy events over ≥ 2 days — skipped")
        return None
    return last - timedelta(days=1)


def score_propensity(con, cfg: Config, note: Callable[[str], None]) -> tuple[pd.DataFrame, dict]:
    import ibis
    from ..features.table import features_as_of
    current = con.execute("SELECT * FROM features").df()
    out, models = [], {}
    for tenant, first, last, n_buy in propensity_spans(ibis.duckdb.from_connection(con)).to_pandas().itertuples(
            index=False):
        cut = propensity_cut(note, tenant, first, last, n_buy)
        if cut is None:
            continue
        past = features_as_of(con, cfg, cut)
        past = past[past["user_id"].map(tenant_of) == tenant]
        bought = {u for (u,) in con.execute("SELECT DISTINCT user_id FROM events WHERE type = 'buy' AND ts > ? "
                                            "AND ts <= ?", [cut, last]).fetchall()}
        fitted = fit_propensity(past, bought, cfg, note, tenant, cut)
        if fitted:
            out.append(apply_propensity(fitted, current[current["user_id"].map(tenant_of) == tenant]))
            models[tenant] = fitted
    return (pd.concat(out) if out else pd.DataFrame()), models


def score_clv(con, cfg: Config, note: Callable[[str], None]) -> tuple[pd.DataFrame, dict]:
    out, models = [], {}
    for tenant, tx in _tenants(store_transactions(con), "customer_id").items():
        fitted = fit_clv(tx, tx["date"].max(), cfg, note, tenant)
        if fitted:
            out.append(apply_clv(fitted, tx))
            models[tenant] = fitted
    return (pd.concat(out) if out else pd.DataFrame()), models


def score_risk(con, cfg: Config, note: Callable[[str], None]) -> tuple[pd.DataFrame, dict]:
    from ..models.risk import risk_features
    events = con.execute(f"SELECT {', '.join(RISK_COLUMNS)} FROM events "
                         "WHERE type IN ('view', 'cart', 'fav', 'buy')").df()
    out, models = [], {}
    for tenant, ev in _tenants(events, "user_id").items():
        f = risk_features(ev, cfg.utc_offset_hours)
        fitted = fit_risk(f, cfg, note, tenant)
        if fitted:
            rows = apply_risk(fitted, f)
            out.append(rows)
            models[tenant] = fitted
            note(f"risk: {tenant or 'store'}: {sum(json.loads(d)['flagged'] for d in rows['detail'])} "
                 f"of {len(f):,} users flagged")
    return (pd.concat(out) if out else pd.DataFrame()), models


def score_kinds(kinds) -> tuple[str, ...]:
    """The kinds asked for ("all": every one); an unknown kind is an error."""
    kinds = KINDS if list(kinds) == ["all"] else tuple(kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise HuaxiangError(f"unknown score {unknown[0]!r} (one of: {', '.join(KINDS)})")
    return kinds


SCORERS = {"churn": score_churn, "propensity": score_propensity, "clv": score_clv, "risk": score_risk}


def write_scores(con: duckdb.DuckDBPyConnection, cfg: Config, kinds, note: Callable[[str], None],
                 db: str | None = None) -> dict:
    """Computes each kind and replaces its rows in `scores` (one transaction per kind). Returns rows per kind. With
    `db` (the store's file), each kind's fitted models are kept as a version in its model registry
    (`register_scores`)."""
    kinds = score_kinds(kinds)
    if kinds and not has_table(con, "features"):
        raise HuaxiangError("no profiles in this store yet: run `huaxiang build` first")
    con.execute(SCORES_DDL)
    written = {}
    for kind in kinds:
        rows, models = SCORERS[kind](con, cfg, note)
        if db is not None and models:
            entry = register_scores(db, kind, models)
            note(f"{kind}: models kept as {kind} version {entry['version']}")
        replace_scores(con, kind, rows)
        written[kind] = len(rows)
    return written


def replace_scores(con: duckdb.DuckDBPyConnection, kind: str, rows: pd.DataFrame) -> None:
    """`rows` (user_id, kind, score, detail) become the store's scores of `kind`, in one transaction."""
    con.execute(SCORES_DDL)
    with transaction(con):
        con.execute("DELETE FROM scores WHERE kind = ?", [kind])
        if len(rows):
            con.register("_rows", rows)
            con.execute("INSERT INTO scores SELECT user_id, kind, score, detail FROM _rows")
            con.unregister("_rows")


MODEL_NAMES = {"churn": "lightgbm", "propensity": "lightgbm", "clv": "bgnbd-gamma-gamma", "risk": "rules+isolation-forest"}


def register_scores(db: str, kind: str, models: dict[str, dict]) -> dict:
    """Keeps the fitted models of one kind (tenant -> what `fit_<kind>` returned) as a version of registry kind
    `kind`: each tenant's model in `<kind>/v<N>/<tenant>/` (LightGBM and BG/NBD files, the risk detector pickled, the
    rest as `fitted.json`), its validation metrics (churn and propensity: a seeded 20% of the cases held out; CLV:
    the fitted parameters; risk: users) per tenant, promoted."""
    import pickle
    from urllib.parse import quote
    from ..models import registry
    version, folder = registry.new_version(db, kind)
    params, metrics = {}, {}
    for tenant, fitted in models.items():
        d = folder / quote(tenant or "_", safe="")
        d.mkdir(parents=True, exist_ok=True)
        if "model" in fitted:
            fitted["model"].save(d)
        if "detector" in fitted:
            (d / "detector.pkl").write_bytes(pickle.dumps(fitted["detector"]))
        rest = {k: v for k, v in fitted.items() if k not in ("model", "detector", "metrics")}
        (d / "fitted.json").write_text(json.dumps(rest, default=str))
        params[tenant], metrics[tenant] = json.loads(json.dumps(rest, default=str)), fitted["metrics"]
    return registry.register(db, kind, MODEL_NAMES[kind], version, {"tenants": params}, metrics, None, None, True)


def user_scores(con: duckdb.DuckDBPyConnection, user_ids: list[str]) -> dict[str, dict]:
    """{user_id: {kind: {score, ...detail}}} for `user_ids`; {} before `huaxiang score` has run."""
    return scores_where(con, "user_id IN (SELECT unnest(?))", [list(user_ids)])


def scores_where(con: duckdb.DuckDBPyConnection, where: str, params: list) -> dict[str, dict]:
    """`user_scores` of the users whose `user_id` meets `where` (SQL, with `params`); each user's kinds in the
    order of KINDS, whatever order the rows were written in."""
    try:
        rows = con.execute(f"""SELECT user_id, kind, score, detail FROM scores WHERE {where}
            ORDER BY user_id, coalesce(list_position({list(KINDS)}, kind), {len(KINDS) + 1}), kind""",
                           params).fetchall()
    except duckdb.CatalogException:
        return {}
    out: dict[str, dict] = {}
    for user, kind, score, detail in rows:
        out.setdefault(user, {})[kind] = {"score": score, **json.loads(detail)}
    return out


def value_tiers(con: duckdb.DuckDBPyConnection, clv_cap: float | None = None) -> list[dict]:
    """Users per (tenant, CLV value tier, segment) with their mean CLV (each user's clipped to [0, clv_cap] if
    given); [] before `huaxiang score clv`."""
    clv = "score" if clv_cap is None else "greatest(0, least(score, ?))"
    try:
        rows = con.execute(f"""SELECT tenant, tier, segment, count(*) AS n, avg({clv}) FROM (
                SELECT {tenant_sql('s.user_id')} AS tenant, json_extract_string(s.detail, '$.value_tier') AS tier,
                       p.segment, s.score
                FROM scores s JOIN profiles p USING (user_id) WHERE s.kind = 'clv')
                GROUP BY tenant, tier, segment
                ORDER BY tenant, list_position(['top', 'high', 'medium', 'low'], tier), n DESC, segment""",
                           [] if clv_cap is None else [clv_cap]).fetchall()
    except duckdb.CatalogException:
        return []
    return [{"tenant": n, "value_tier": t, "segment": g, "users": u, "mean_clv": c} for n, t, g, u, c in rows]
