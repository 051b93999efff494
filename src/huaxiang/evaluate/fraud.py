"""Synthetic fraud injected into a real behaviour log, to measure the risk flags honestly.

Patterns (each account a new user id `fraud-<pattern>-<n>`, times inside the log's own span, items drawn from
the log's own items):
  click_farm     150–400 views of 1–3 items within 5–10 minutes, then one purchase;
  fake_orders    5–15 purchases of one or two items over a few days, no view, cart or favourite before;
  ring           groups of 5 accounts replaying one scripted sequence of 30 views/carts/buys, minutes apart;
  night_bot      60–150 views spaced evenly between 01:00 and 05:00 local time over 1–3 nights.
The real users are counted as clean; any real fraud among them counts against precision.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

PATTERNS = ("click_farm", "fake_orders", "ring", "night_bot")


def inject_fraud(events: pd.DataFrame, per_pattern: int = 10, utc_offset_hours: float = 0.0,
                 seed: int = 0) -> tuple[pd.DataFrame, dict[str, str]]:
    """events: user_id, item_id, category_id, type, ts. Returns (events with the fraud added, user -> pattern)."""
    rng = np.random.default_rng(seed)
    items = events[["item_id", "category_id"]].drop_duplicates().reset_index(drop=True)
    start, end = events["ts"].min(), events["ts"].max()
    span = (end - start).total_seconds()
    rows, truth = [], {}

    def when(margin_s: float = 0) -> pd.Timestamp:
        return start + pd.Timedelta(seconds=float(rng.uniform(0, max(span - margin_s, 1))))

    def add(user, item, kind, ts):
        rows.append({"user_id": user, "item_id": item["item_id"], "category_id": item["category_id"],
                     "type": kind, "ts": ts})

    for n in range(per_pattern):
        user = f"fraud-click_farm-{n}"
        truth[user] = "click_farm"
        targets = [items.iloc[i] for i in rng.integers(0, len(items), rng.integers(1, 4))]
        t0, minutes, k = when(3600), rng.uniform(5, 10), int(rng.integers(150, 401))
        for off in np.sort(rng.uniform(0, minutes * 60, k)):
            add(user, targets[int(rng.integers(len(targets)))], "view", t0 + pd.Timedelta(seconds=float(off)))
        add(user, targets[0], "buy", t0 + pd.Timedelta(minutes=minutes + 1))

        user = f"fraud-fake_orders-{n}"
        truth[user] = "fake_orders"
        targets = [items.iloc[i] for i in rng.integers(0, len(items), rng.integers(1, 3))]
        for _ in range(int(rng.integers(5, 16))):
            add(user, targets[int(rng.integers(len(targets)))], "buy", when())

        user = f"fraud-night_bot-{n}"
        truth[user] = "night_bot"
        nights, k = int(rng.integers(1, 4)), int(rng.integers(60, 151))
        day0 = (start + pd.Timedelta(hours=utc_offset_hours)).normalize()
        for j in range(k):
            night = day0 + pd.Timedelta(days=int(rng.integers(0, max(1, span // 86400 - 1))) + j % nights)
            local = night + pd.Timedelta(hours=1) + pd.Timedelta(seconds=4 * 3600 * (j // nights) / (k / nights))
            add(user, items.iloc[int(rng.integers(len(items)))], "view",
                local - pd.Timedelta(hours=utc_offset_hours))

    for gi in range(max(1, per_pattern // 5 * 2)):  # about as many ring accounts as each other pattern
        script = [(items.iloc[int(rng.integers(len(items)))], rng.choice(["view"] * 6 + ["cart", "buy"]),
                   pd.Timedelta(seconds=float(s))) for s in np.sort(rng.uniform(0, 7200, 30))]
        t0 = when(86400)
        for m in range(5):
            user = f"fraud-ring-{gi}-{m}"
            truth[user] = "ring"
            for item, kind, off in script:
                add(user, item, str(kind), t0 + off + pd.Timedelta(minutes=3 * m))
    fraud = pd.DataFrame(rows)
    return pd.concat([events, fraud], ignore_index=True), truth


def precision_recall(flagged: pd.Series, truth: dict[str, str]) -> dict:
    """flagged: bool per user_id. Overall and per-pattern recall, precision over all flags."""
    is_fraud = flagged.index.isin(list(truth))
    tp = int((flagged & is_fraud).sum())
    out = {"flagged": int(flagged.sum()), "injected": len(truth), "caught": tp,
           "precision": tp / max(int(flagged.sum()), 1), "recall": tp / max(len(truth), 1),
           "false_positive_rate": int((flagged & ~is_fraud).sum()) / max(int((~is_fraud).sum()), 1)}
    for pattern in PATTERNS:
        users = [u for u, p in truth.items() if p == pattern]
        out[f"recall_{pattern}"] = float(flagged.reindex(users).fillna(False).mean()) if users else None
    return out
