"""Churn = no purchase in the `horizon_days` after a cut-off. Features come only from transactions on or
before the cut-off (the no-leakage rule); labels only from the window after it."""
from __future__ import annotations

import pandas as pd

from ..errors import HuaxiangError

DAY = pd.Timedelta(days=1)
FEATURES = ["recency_days", "frequency", "tenure_days", "monetary_total", "monetary_mean", "n_last_30d",
            "n_last_90d", "value_last_90d", "mean_gap_days", "overdue_ratio"]


def customer_features(tx: pd.DataFrame, cutoff) -> pd.DataFrame:
    """Per customer with a transaction on or before `cutoff` (tx: customer_id, date, value — one row per day)."""
    cut = pd.Timestamp(cutoff)
    seen = tx[tx["date"] <= cut]
    g = seen.groupby("customer_id")
    first, last, n = g["date"].min(), g["date"].max(), g["date"].count()
    recent = lambda days: seen[seen["date"] > cut - days * DAY].groupby("customer_id")
    f = pd.DataFrame({"recency_days": (cut - last) / DAY, "frequency": n.astype(float),
                      "tenure_days": (cut - first) / DAY, "monetary_total": g["value"].sum(),
                      "monetary_mean": g["value"].mean()})
    f["n_last_30d"] = recent(30)["date"].count().reindex(f.index, fill_value=0).astype(float)
    f["n_last_90d"] = recent(90)["date"].count().reindex(f.index, fill_value=0).astype(float)
    f["value_last_90d"] = recent(90)["value"].sum().reindex(f.index, fill_value=0.0)
    f["mean_gap_days"] = ((last - first) / DAY / (n - 1).where(n > 1)).astype(float)
    f["overdue_ratio"] = f["recency_days"] / f["mean_gap_days"]
    return f[FEATURES]


def churn_labels(tx: pd.DataFrame, cutoff, horizon_days: int, customers) -> pd.Series:
    """1 when the customer makes no purchase in (cutoff, cutoff + horizon_days]."""
    cut = pd.Timestamp(cutoff)
    window = tx[(tx["date"] > cut) & (tx["date"] <= cut + horizon_days * DAY)]
    return pd.Series(1 - pd.Index(customers).isin(window["customer_id"]).astype(int), index=customers,
                     name="churned")


def churn_dataset(tx: pd.DataFrame, cutoffs, horizon_days: int) -> tuple[pd.DataFrame, pd.Series]:
    """Features and labels pooled over cut-offs; each label window must end within the data."""
    end = tx["date"].max()
    xs, ys = [], []
    for cut in cutoffs:
        if pd.Timestamp(cut) + horizon_days * DAY > end:
            raise HuaxiangError(f"cut-off {pd.Timestamp(cut).date()}: its {horizon_days}-day label window runs past "
                                f"the end of the data ({end.date()})")
        f = customer_features(tx, cut)
        xs.append(f.set_index(f.index.astype(str) + f"@{pd.Timestamp(cut).date()}"))
        ys.append(churn_labels(tx, cut, horizon_days, f.index).set_axis(xs[-1].index))
    return pd.concat(xs), pd.concat(ys)


def rolling_cutoffs(end, horizon_days: int, n: int) -> list[pd.Timestamp]:
    """The test cut-off (its label window ends at `end`) and, before it, n training cut-offs each a horizon
    apart, so that no training label window overlaps the test window: [train…, test]."""
    test = pd.Timestamp(end) - horizon_days * DAY
    return [test - k * horizon_days * DAY for k in range(n, -1, -1)]
