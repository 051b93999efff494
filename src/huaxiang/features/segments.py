"""Segments: documented rules over the behaviour features, and an optional k-means clustering.

Rule thresholds are either fixed (days) or quantiles of the population at build time, so that they adapt to a
platform's scale. The population is the user's tenant (`schema.tenant_of`: the text before an id's first ':', ''
for plain ids): each tenant's thresholds come from its own users only, and k-means clusters each tenant on its
own, so that one shop's prices or habits never move another's segments. `describe()` puts a tenant's numbers
into words.
"""
from __future__ import annotations

from dataclasses import dataclass

import ibis
import numpy as np
import pandas as pd

from ..schema import tenant_expr, tenant_of

SEGMENTS = ("new", "dormant", "at-risk", "high-value", "high-potential", "high-frequency", "regular")
THRESHOLDS = ("monetary", "frequency", "engagement", "events", "active_days")
# what the rules compare against, one row per tenant (`threshold_table`); joined onto the features by tenant
THRESHOLD_SCHEMA = {"_th_tenant": "string", "_th_by_money": "boolean", "_th_monetary": "float64",
                    "_th_frequency": "float64", "_th_frequent_orders": "float64", "_th_frequent_days": "float64",
                    "_th_engagement": "float64", "_th_events": "float64"}


@dataclass(frozen=True)
class Rule:
    segment: str
    definition: str  # readable, with the numbers filled in


def thresholds(f, high_q: float, potential_q: float) -> dict[str, dict[str, float]]:
    """Per tenant, the population quantiles the rules compare against: among the tenant's buyers for
    value/frequency, among its users with events for engagement. Every tenant with a user in `f` has an entry; a
    quantile with nobody to take it from is inf (no one reaches it). One grouped query: DuckDB and Spark alike."""
    t = f.mutate(_tenant=tenant_expr(f.user_id))
    buyers = t.filter(t.frequency > 0)
    value = buyers.group_by("_tenant").aggregate(monetary=buyers.monetary.quantile(high_q),
                                                 frequency=buyers.frequency.quantile(high_q))
    active = t.filter(t.n_events > 0)  # engagement is judged among users with a behaviour log
    engaged = active.group_by("_tenant").aggregate(engagement=(active.n_cart + active.n_fav).quantile(potential_q),
                                                   events=active.n_events.quantile(0.5),
                                                   active_days=active.active_days.quantile(high_q))
    every = t.select("_tenant").distinct()
    q = (every.left_join(value, "_tenant").drop("_tenant_right")
         .left_join(engaged, "_tenant").drop("_tenant_right")).to_pandas()
    return {row["_tenant"]: {k: (float(row[k]) if row[k] is not None and not pd.isna(row[k]) else float("inf"))
                             for k in THRESHOLDS}
            for row in q.sort_values("_tenant").to_dict("records")}


def _by_money(th: dict[str, float]) -> bool:
    """Whether the tenant's high-value rule is by net spend (else by order count: no prices known)."""
    return th["monetary"] not in (float("inf"), 0.0)


def threshold_table(th: dict[str, dict[str, float]]):
    """`thresholds` as an Ibis table (one row per tenant, the columns of THRESHOLD_SCHEMA) for the rules to join."""
    rows = {name: [] for name in THRESHOLD_SCHEMA}
    for tenant, v in sorted(th.items()):
        for name, value in zip(THRESHOLD_SCHEMA, (
                tenant, _by_money(v), v["monetary"], v["frequency"], max(v["frequency"], 2),
                max(v["active_days"], 2), max(v["engagement"], 1), v["events"])):
            rows[name].append(value)
    return ibis.memtable(pd.DataFrame(rows).astype({"_th_by_money": bool}), schema=THRESHOLD_SCHEMA)


def conditions(f, new_days: float, at_risk_days: float, dormant_days: float) -> dict:
    """The rule of each segment, an expression over `f`: the features joined with the user's tenant's row of
    `threshold_table` (a tenant without one matches no threshold rule). A user may match several segments; the
    primary segment is the first match in the order of SEGMENTS."""
    value = ibis.ifelse(f._th_by_money, f.monetary >= f._th_monetary, f.frequency >= f._th_frequency)
    return {
        "new": f.tenure_days <= new_days,
        "dormant": f.idle_days >= dormant_days,
        "at-risk": (f.frequency > 0) & (f.idle_days >= at_risk_days),
        "high-value": (f.frequency > 0) & value,
        "high-frequency": (f.frequency >= f._th_frequent_orders) | (f.active_days >= f._th_frequent_days),
        "high-potential": (f.frequency.fill_null(0) <= 1) & ((f.n_cart + f.n_fav) >= f._th_engagement)
                          & (f.n_events >= f._th_events),
    }


def describe(th: dict[str, float], new_days: float, at_risk_days: float, dormant_days: float,
             high_q: float) -> list[Rule]:
    """One tenant's rules in words, with its numbers (`th`: its entry of `thresholds`), in the order of SEGMENTS.
    A quantile the tenant has nobody to take from (no buyers, no behaviour log) is said so: no one matches it."""
    inf = float("inf")
    if _by_money(th):
        money = f"net spend ≥ {th['monetary']:.2f} (top {1 - high_q:.0%} of buyers)"
    elif th["frequency"] < inf:
        money = f"orders ≥ {th['frequency']:.0f} (no prices known: top buyers by order count)"
    else:
        money = f"top {1 - high_q:.0%} of buyers by net spend (no buyers in this tenant: nobody)"
    potential = (f"at most 1 order, carts+favs ≥ {max(th['engagement'], 1):.0f} and events ≥ {th['events']:.0f} "
                 "(engaged, not yet buying)") if max(th["engagement"], th["events"]) < inf else \
        "engaged, not yet buying (no behaviour log in this tenant: nobody)"
    often = [f"{what} ≥ {max(v, 2):.0f}" for what, v in (("orders", th["frequency"]), ("active days", th["active_days"]))
             if v < inf]
    return [
        Rule("new", f"first seen ≤ {new_days:g} days before the reference time"),
        Rule("dormant", f"no activity for ≥ {dormant_days:g} days"),
        Rule("at-risk", f"a past buyer with no activity for ≥ {at_risk_days:g} days"),
        Rule("high-value", money),
        Rule("high-potential", potential),
        Rule("high-frequency", " or ".join(often) or "frequent buyers or visitors (no orders or behaviour log in "
                                                     "this tenant: nobody)"),
        Rule("regular", "none of the above"),
    ]


def assign(f, conds):
    """Adds `segment` (primary) and `segments` (all matches) to the features table."""
    order = [s for s in SEGMENTS if s in conds]
    primary = ibis.cases(*((conds[s].fill_null(False), s) for s in order), else_="regular")
    every = ibis.array([ibis.ifelse(conds[s].fill_null(False), ibis.literal(s), ibis.null("string")) for s in order])
    every = every.filter(lambda x: x.notnull())
    return f.mutate(segment=primary, segments=ibis.ifelse(every.length() > 0, every, ibis.array([ibis.literal("regular")])))


KMEANS_FEATURES = ["recency_days", "frequency", "monetary", "active_days", "n_events", "cart_rate", "buy_rate",
                   "idle_days"]


def _kmeans_x(df: pd.DataFrame) -> pd.DataFrame:
    return df[KMEANS_FEATURES].astype("float64").fillna(0.0).clip(lower=0.0)


def fit_kmeans(df: pd.DataFrame, k: int, seed: int = 0) -> dict:
    """k-means on standardised log1p features: the standardisation and the centres, as plain lists."""
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler
    logs = np.log1p(_kmeans_x(df))
    scaler = StandardScaler().fit(logs)
    km = KMeans(n_clusters=max(1, min(k, len(df))), n_init=10, random_state=seed).fit(scaler.transform(logs))
    return {"mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist(), "centers": km.cluster_centers_.tolist()}


def assign_clusters(model: dict, df: pd.DataFrame) -> np.ndarray:
    """Each user's nearest centre (of `fit_kmeans`)."""
    z = (np.log1p(_kmeans_x(df).to_numpy()) - np.array(model["mean"])) / np.array(model["scale"])
    return ((z[:, None, :] - np.array(model["centers"])[None]) ** 2).sum(axis=2).argmin(axis=1)


def kmeans(df: pd.DataFrame, k: int, seed: int = 0) -> tuple[pd.Series, pd.DataFrame]:
    """k-means clusters of users, each tenant's on its own (numbered from 0 within the tenant); returns the cluster
    per user and each cluster's mean features (in original units; with its tenant and size) so that a person can
    tell the clusters apart."""
    labels = pd.Series(0, index=df.index, name="cluster", dtype="int64")
    centres = []
    for tenant, part in df.groupby(df["user_id"].map(tenant_of), sort=True):
        found = assign_clusters(fit_kmeans(part, k, seed), part)
        labels[part.index] = found
        means = _kmeans_x(part).groupby(found).mean()
        centres.append(means.assign(tenant=tenant, cluster=means.index, size=np.bincount(found)[means.index]))
    columns = ["tenant", "cluster", *KMEANS_FEATURES, "size"]
    return labels, (pd.concat(centres, ignore_index=True)[columns] if centres else pd.DataFrame(columns=columns))
