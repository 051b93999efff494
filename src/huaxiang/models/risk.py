"""Click-farming and fake-order flags: readable rules plus an IsolationForest over behaviour features.

A user is flagged when a rule fires or the forest puts them in its most anomalous `contamination` share;
every flag says why ("412 actions within 10 minutes", "unusual behaviour: …").
"""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

FEATURES = ["n_events", "max_10min", "burst_share", "top_item_share", "buy_without_view_share", "n_buy",
            "top_item_buys",
            "night_share", "gap_regularity", "shared_sequence_accounts", "events_per_active_day"]

# rule name -> (test on the feature frame, words with the user's value)
RULES = {
    "burst": (lambda f: f["max_10min"] >= 100, "{max_10min:.0f} actions within 10 minutes"),
    "buy_without_view": (lambda f: (f["top_item_buys"] >= 4) & (f["buy_without_view_share"] >= 0.8),
                         "bought one item {top_item_buys:.0f} times, {buy_without_view_share:.0%} of purchases "
                         "never viewed first"),
    "identical_sequence": (lambda f: f["shared_sequence_accounts"] >= 3,
                           "same item sequence as {shared_sequence_accounts:.0f} accounts"),
    "odd_hours": (lambda f: (f["n_events"] >= 30) & (f["night_share"] >= 0.8),
                  "{night_share:.0%} of activity between 01:00 and 05:00"),
}


def _signature(items: pd.Series, length: int) -> str | None:
    """The first `length` items in order: accounts run by one script share it."""
    seq = items.dropna().astype(str).tolist()[:length]
    return hashlib.sha1(" ".join(seq).encode()).hexdigest() if len(seq) >= length else None


def risk_features(events: pd.DataFrame, utc_offset_hours: float = 0.0, signature_length: int = 10) -> pd.DataFrame:
    """Per user, from events (user_id, item_id, type, ts); ts naive UTC."""
    return share_signatures(user_risk_features(events, utc_offset_hours, signature_length))


def share_signatures(f: pd.DataFrame, counts: pd.Series | None = None) -> pd.DataFrame:
    """`user_risk_features` → FEATURES: how many accounts share each user's item sequence (`counts`: signature ->
    accounts, when the population is larger than `f`; else counted within `f`)."""
    counts = f["signature"].value_counts() if counts is None else counts
    shared = f["signature"].map(counts).fillna(1.0).astype(float)
    return f.assign(shared_sequence_accounts=shared)[FEATURES]


def user_risk_features(events: pd.DataFrame, utc_offset_hours: float = 0.0, signature_length: int = 10,
                       log_has_views: bool | None = None) -> pd.DataFrame:
    """What each user's own events say (FEATURES but shared_sequence_accounts, which needs everyone), and the
    signature of their item sequence. `log_has_views`: whether the whole log (not just `events`) has views."""
    ev = events.sort_values(["user_id", "ts"], kind="stable")
    g = ev.groupby("user_id", sort=False)
    n = g.size().astype(float)
    bucket = ev["ts"].dt.floor("10min")
    max_10min = ev.assign(b=bucket).groupby(["user_id", "b"]).size().groupby(level=0).max().astype(float)
    top_item = ev.groupby(["user_id", "item_id"]).size().groupby(level=0).max().reindex(n.index, fill_value=0)
    buys = ev[ev["type"] == "buy"]
    looked = (ev[ev["type"].isin(["view", "cart", "fav"])].groupby(["user_id", "item_id"], as_index=False)["ts"]
              .min().rename(columns={"ts": "first_look"}))
    b = buys.merge(looked, on=["user_id", "item_id"], how="left")
    # a log without views (orders only) cannot tell a blind purchase from a normal one
    if log_has_views is None:
        log_has_views = bool((ev["type"] == "view").any())
    unseen = (b["first_look"].isna() | (b["first_look"] > b["ts"])).to_numpy() & log_has_views
    top_buys = buys.groupby(["user_id", "item_id"]).size().groupby(level=0).max().reindex(n.index, fill_value=0)
    n_buy = buys.groupby("user_id").size().reindex(n.index, fill_value=0).astype(float)
    unseen_buys = pd.Series(unseen, index=b["user_id"]).groupby(level=0).sum().reindex(n.index, fill_value=0)
    local_hour = (ev["ts"] + pd.Timedelta(hours=utc_offset_hours)).dt.hour
    night = ev.assign(night=local_hour.between(1, 4)).groupby("user_id", sort=False)["night"].mean()
    gaps = g["ts"].diff().dt.total_seconds()
    gap_stats = gaps.groupby(ev["user_id"]).agg(["mean", "std"])
    sig = g["item_id"].apply(_signature, length=signature_length)
    active_days = ev.assign(d=ev["ts"].dt.date).groupby("user_id")["d"].nunique()
    f = pd.DataFrame({
        "n_events": n, "max_10min": max_10min, "burst_share": max_10min / n, "top_item_share": top_item / n,
        "buy_without_view_share": (unseen_buys / n_buy.where(n_buy > 0)).fillna(0.0), "n_buy": n_buy,
        "top_item_buys": top_buys.astype(float),
        "night_share": night, "gap_regularity": (1 / (1 + gap_stats["std"] / gap_stats["mean"])).fillna(0.0),
        "signature": sig, "events_per_active_day": n / active_days})
    return f.reindex(n.index).rename_axis("user_id")


def rule_flags(f: pd.DataFrame) -> pd.DataFrame:
    """One boolean column per rule."""
    return pd.DataFrame({name: test(f).to_numpy() for name, (test, _) in RULES.items()}, index=f.index)


class RiskDetector:
    """Rules + IsolationForest. fit on the feature frame, then flag(f) gives score, flagged and reasons."""

    def __init__(self, contamination: float = 0.01, seed: int = 0):
        self.contamination, self.seed = contamination, seed

    def fit(self, f: pd.DataFrame) -> "RiskDetector":
        from sklearn.ensemble import IsolationForest
        self.forest_ = IsolationForest(n_estimators=200, contamination=self.contamination,
                                       random_state=self.seed).fit(self._x(f))
        self.median_ = f[FEATURES].median()
        self.spread_ = (f[FEATURES].quantile(0.9) - f[FEATURES].quantile(0.1)).replace(0, 1.0)
        return self

    @staticmethod
    def _x(f: pd.DataFrame) -> np.ndarray:
        x = f[FEATURES].to_numpy(float)
        return np.log1p(np.clip(x, 0, None))  # counts span orders of magnitude

    def flag(self, f: pd.DataFrame) -> pd.DataFrame:
        """risk_score in (0, 1] (higher = more anomalous), flagged, rules fired and reasons in words."""
        score = -self.forest_.score_samples(self._x(f))  # the paper's anomaly score: ~0.5 normal, → 1 anomalous
        outlier = self.forest_.predict(self._x(f)) == -1
        rules = rule_flags(f)
        reasons = []
        for (uid, row), fired, out in zip(f.iterrows(), rules.itertuples(index=False), outlier):
            why = [RULES[name][1].format(**row) for name, hit in zip(rules.columns, fired) if hit]
            if out:
                z = ((row[FEATURES] - self.median_) / self.spread_).abs().sort_values(ascending=False)
                top = ", ".join(f"{k.replace('_', ' ')} {row[k]:.3g}" for k in z.index[:2])
                why.append(f"unusual behaviour: {top}")
            reasons.append(why)
        return pd.DataFrame({"risk_score": score, "risk_flagged": rules.any(axis=1).to_numpy() | outlier,
                             "risk_rules": [[c for c, h in zip(rules.columns, r) if h] for r in
                                            rules.itertuples(index=False)],
                             "risk_reasons": reasons}, index=f.index)
