"""Segments: documented rules over the behaviour features, and an optional k-means clustering.

Rule thresholds are either fixed (days) or quantiles of the population at build time, so that
they adapt to a platform's scale; `rules()` returns both the expression and the numbers used.
"""
from __future__ import annotations

from dataclasses import dataclass

import ibis
import numpy as np
import pandas as pd

SEGMENTS = ("new", "dormant", "at-risk", "high-value", "high-potential", "high-frequency", "regular")


@dataclass(frozen=True)
class Rule:
    segment: str
    definition: str  # readable, with the numbers filled in


def thresholds(f, high_q: float, potential_q: float) -> dict[str, float]:
    """Population quantiles the rules compare against: among buyers for value/frequency, among
    users with events for engagement."""
    buyers = f.filter(f.frequency > 0)
    q = buyers.aggregate(
        monetary=buyers.monetary.quantile(high_q),
        frequency=buyers.frequency.quantile(high_q),
    ).execute().iloc[0].to_dict()
    active = f.filter(f.n_events > 0)  # engagement is judged among users with a behaviour log
    e = active.aggregate(
        engagement=(active.n_cart + active.n_fav).quantile(potential_q),
        events=active.n_events.quantile(0.5),
        active_days=active.active_days.quantile(high_q),
    ).execute().iloc[0].to_dict()
    out = {**q, **e}
    return {k: (float(v) if v is not None and not pd.isna(v) else float("inf")) for k, v in out.items()}


def rules(f, th: dict[str, float], new_days: float, at_risk_days: float, dormant_days: float, high_q: float):
    """(expressions per segment, readable rules). A user may match several segments; the primary
    segment is the first match in the order of SEGMENTS."""
    has_money = th["monetary"] not in (float("inf"), 0.0)
    value = (f.monetary >= th["monetary"]) if has_money else (f.frequency >= th["frequency"])
    conds = {
        "new": f.tenure_days <= new_days,
        "dormant": f.idle_days >= dormant_days,
        "at-risk": (f.frequency > 0) & (f.idle_days >= at_risk_days),
        "high-value": (f.frequency > 0) & value,
        "high-frequency": (f.frequency >= max(th["frequency"], 2)) | (f.active_days >= max(th["active_days"], 2)),
        "high-potential": (f.frequency.fill_null(0) <= 1) & ((f.n_cart + f.n_fav) >= max(th["engagement"], 1))
                          & (f.n_events >= th["events"]),
    }
    money = f"net spend ≥ {th['monetary']:.2f} (top {1 - high_q:.0%} of buyers)" if has_money else \
        f"orders ≥ {th['frequency']:.0f} (no prices known: top buyers by order count)"
    described = [
        Rule("new", f"first seen ≤ {new_days:g} days before the reference time"),
        Rule("dormant", f"no activity for ≥ {dormant_days:g} days"),
        Rule("at-risk", f"a past buyer with no activity for ≥ {at_risk_days:g} days"),
        Rule("high-value", money),
        Rule("high-potential", f"at most 1 order, carts+favs ≥ {max(th['engagement'], 1):.0f} "
                               f"and events ≥ {th['events']:.0f} (engaged, not yet buying)"),
        Rule("high-frequency", f"orders ≥ {max(th['frequency'], 2):.0f} or active days ≥ {max(th['active_days'], 2):.0f}"),
        Rule("regular", "none of the above"),
    ]
    return conds, described


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
    """k-means clusters of users; returns the cluster per user and each cluster's mean features (in original
    units) so that a person can tell the clusters apart."""
    labels = assign_clusters(fit_kmeans(df, k, seed), df)
    centers = _kmeans_x(df).groupby(labels).mean().assign(size=pd.Series(labels).value_counts().sort_index().values)
    return pd.Series(labels, index=df.index, name="cluster"), centers
