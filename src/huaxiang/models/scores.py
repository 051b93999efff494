"""A LightGBM binary score (churn, purchase propensity) that says why: each prediction carries its top
contributing features, from LightGBM's exact TreeSHAP values (`pred_contrib`), written in words."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import HuaxiangError

# what a feature means, for reasons a person can read ("{value}" is the user's own value)
NOT_FEATURES = {"cluster", "habit_utc_offset", "peak_hour", "peak_weekday"}  # profile columns that are not scores' inputs
FEATURE_WORDS = {
    "recency_days": "last purchase {value} days ago",
    "frequency": "{value} purchases so far",
    "tenure_days": "first purchase {value} days ago",
    "monetary_total": "spent {value} in total",
    "monetary_mean": "spends {value} per purchase on average",
    "n_last_30d": "{value} purchases in the last 30 days",
    "n_last_90d": "{value} purchases in the last 90 days",
    "value_last_90d": "spent {value} in the last 90 days",
    "mean_gap_days": "buys every {value} days on average",
    "overdue_ratio": "{value}× their usual gap since the last purchase",
    "days_since_last_event": "last active {value} days ago",
    "n_events": "{value} actions in all",
    "n_view": "{value} page views",
    "n_cart": "{value} cart adds",
    "n_fav": "{value} favourites",
    "n_buy": "{value} purchases",
    "active_days": "active on {value} days",
    "n_sessions": "{value} sessions",
    "n_items": "{value} distinct items",
    "n_categories": "{value} distinct categories",
    "cart_rate": "cart-add rate {value}",
    "buy_rate": "purchase rate {value}",
    "idle_days": "idle for {value} days",
    "monetary": "spent {value} in total",
    "avg_order_value": "{value} per order on average",
    "repeat_purchase_rate": "repeat-purchase rate {value}",
    "n_returns": "{value} returns",
    "cart_to_buy": "cart-to-purchase rate {value}",
    "median_price": "median item price {value}",
    "night_share": "night-time share {value}",
    "weekend_share": "weekend share {value}",
    "n_written_reviews": "{value} reviews written",
    "avg_rating": "average rating {value}",
    "mean_sentiment": "review sentiment {value}",
}


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2g}" if abs(v) < 1 else f"{v:.1f}".removesuffix(".0")
    return str(v)


def describe(feature: str, value) -> str:
    if value is None or (isinstance(value, (float, np.floating)) and not np.isfinite(value)):
        return {"mean_gap_days": "no repeat purchase yet", "overdue_ratio": "no repeat purchase yet"}.get(
            feature, f"no {feature.replace('_', ' ')} yet")
    words = FEATURE_WORDS.get(feature, feature.replace("_", " ") + " = {value}")
    return words.format(value=_fmt(value))


def _steady(X: pd.DataFrame) -> pd.DataFrame:
    """Floats rounded to 12 significant digits and 9 decimals: the last bits of a sum depend on its order (DuckDB's
    threads, Spark's partitions), and LightGBM would bin 300.93 and 300.93000000000006, or 0 and -1.8e-15, apart."""
    x = X.to_numpy(dtype=float, na_value=np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = 10.0 ** (11 - np.floor(np.log10(np.abs(x))))
        steady = np.round(np.where(np.isfinite(scale), np.round(x * scale) / scale, x), 9) + 0.0  # no -0.0
    return pd.DataFrame(steady, columns=X.columns, index=X.index)


class ScoreModel:
    """fit(X, y) / predict(X) / explain(X) / save / load. X: numeric columns (NaN allowed)."""

    def __init__(self, name: str = "score", n_estimators: int = 300, learning_rate: float = 0.03,
                 num_leaves: int = 15, min_child_samples: int = 20, seed: int = 0):
        self.name, self.n_estimators, self.learning_rate = name, n_estimators, learning_rate
        self.num_leaves, self.min_child_samples, self.seed = num_leaves, min_child_samples, seed

    def fit(self, X: pd.DataFrame, y) -> "ScoreModel":
        import lightgbm as lgb
        y = np.asarray(y, dtype=int)
        if len(np.unique(y)) < 2:
            raise HuaxiangError(f"{self.name}: the training labels are all {y[0] if len(y) else '–'}; "
                                "need both outcomes to learn a score")
        self.features_ = list(X.columns)
        self.booster_ = lgb.LGBMClassifier(n_estimators=self.n_estimators, learning_rate=self.learning_rate,
                                           num_leaves=self.num_leaves, min_child_samples=self.min_child_samples,
                                           subsample=0.8, subsample_freq=1, colsample_bytree=0.8,
                                           random_state=self.seed, verbose=-1).fit(_steady(X), y).booster_
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.booster_.predict(_steady(X[self.features_]))

    def contributions(self, X: pd.DataFrame) -> np.ndarray:
        """TreeSHAP values in log-odds, one column per feature (the bias column dropped)."""
        return self.booster_.predict(_steady(X[self.features_]), pred_contrib=True)[:, :-1]

    def explain(self, X: pd.DataFrame, k: int = 3) -> list[list[dict]]:
        """Per row, the k features that pushed the score most (either way), with words and direction."""
        contrib = self.contributions(X)
        values = _steady(X[self.features_]).to_numpy()  # the values the model saw, in the words
        out = []
        for row, c in zip(values, contrib):
            top = np.argsort(-np.abs(c))[:k]
            out.append([{"feature": self.features_[j], "value": None if pd.isna(row[j]) else float(row[j]),
                         "effect": float(c[j]), "reason": describe(self.features_[j], row[j]),
                         "direction": "raises" if c[j] > 0 else "lowers"} for j in top if c[j] != 0])
        return out

    def save(self, d: Path) -> None:
        d = Path(d)
        d.mkdir(parents=True, exist_ok=True)
        self.booster_.save_model(str(d / f"{self.name}.lgb"))
        (d / f"{self.name}.json").write_text(json.dumps({"features": self.features_}))

    @classmethod
    def load(cls, d: Path, name: str) -> "ScoreModel":
        import lightgbm as lgb
        d = Path(d)
        m = cls(name)
        m.booster_ = lgb.Booster(model_file=str(d / f"{name}.lgb"))
        m.features_ = json.loads((d / f"{name}.json").read_text())["features"]
        return m


def holdout_metrics(name: str, X: pd.DataFrame, y, seed: int = 0, share: float = 0.2) -> dict:
    """How well a `ScoreModel` of these cases generalises: fitted on a seeded stratified (1 − share) of them, measured
    on the rest (AUC, PR-AUC, Brier, ECE, positive rate, valid_cases). Fewer than 5 cases of a class: only the
    counts (nothing to measure with)."""
    from sklearn.model_selection import train_test_split
    y = np.asarray(y, int)
    if min(np.bincount(y, minlength=2)) < 5:
        return {"valid_cases": 0, "positive_rate": float(y.mean()) if len(y) else None}
    Xa, Xb, ya, yb = train_test_split(X, y, test_size=share, random_state=seed, stratify=y)
    found = binary_metrics(yb, ScoreModel(name, seed=seed).fit(Xa, ya).predict(Xb))
    return {**{k: found[k] for k in ("auc", "pr_auc", "brier", "ece", "positive_rate")}, "valid_cases": len(yb)}


def reason_text(reasons: list[dict]) -> str:
    """'last purchase 120 days ago (raises), 2 purchases so far (raises)'."""
    return "; ".join(f"{r['reason']} ({r['direction']})" for r in reasons)


def roc_points(y, p, max_points: int = 200) -> dict:
    """The ROC curve as `fpr` / `tpr` lists, thinned to at most `max_points` (both ends kept)."""
    from sklearn.metrics import roc_curve
    fpr, tpr, _ = roc_curve(np.asarray(y, int), np.asarray(p, float))
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), max_points)).round().astype(int))
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}


def binary_metrics(y, p, bins: int = 10) -> dict:
    """ROC AUC, PR-AUC (average precision), Brier, expected calibration error, the calibration curve (quantile
    bins: mean predicted, observed rate, count) and the ROC curve's points."""
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
    y, p = np.asarray(y, int), np.asarray(p, float)
    edges = np.quantile(p, np.linspace(0, 1, bins + 1))
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    curve = [{"mean_predicted": float(p[idx == b].mean()), "observed": float(y[idx == b].mean()),
              "n": int((idx == b).sum())} for b in range(bins) if (idx == b).any()]
    ece = sum(c["n"] * abs(c["mean_predicted"] - c["observed"]) for c in curve) / len(y)
    return {"auc": float(roc_auc_score(y, p)), "pr_auc": float(average_precision_score(y, p)),
            "brier": float(brier_score_loss(y, p)), "ece": float(ece), "positive_rate": float(y.mean()),
            "n": int(len(y)), "calibration": curve, "roc": roc_points(y, p)}
