"""The behaviour model: each user's history written as text — what they viewed, carted and bought, named by the
items' titles, categories, brands and prices where the store knows them — read by the fine-tuned encoder to predict
what they do next, alone or blended with LightGBM on the profile features.

Targets: `buy_next_day` and `cart_next_day` (does the user buy / add to cart anything in the day after the cut-off,
every user with an event before it), `churn_90d` (does a customer, someone who bought before the cut-off, buy
nothing in the 90 days after it). Time-based split without leakage: each cut-off sees only the events before it,
and every label window ends before the next split's cut-off — test is the last cut-off whose window ends within the
data, validation the one before it, training the `n_train` before that. The LightGBM blend weight is chosen on
validation (log loss), never on test.

A model folder: `behaviour.json` (target, tenant, cut-offs, blend weight, validation and test metrics of the text
model, LightGBM and the blend), `text/` (a classifier of `huaxiang.text.classifier`) and `lightgbm/`.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..config import Config
from ..errors import HuaxiangError
from ..features.behaviour import store_transactions
from ..schema import tenant_sql
from ..store import has_table
from . import churn as ch
from .scores import NOT_FEATURES, ScoreModel, binary_metrics

TARGETS = {"buy_next_day": ("buy", 1), "cart_next_day": ("cart", 1), "churn_90d": ("buy", 90)}
VERBS = {"view": "viewed", "cart": "carted", "fav": "saved", "buy": "bought", "search": "searched"}
PLURAL = {"view": "views", "cart": "carts", "fav": "saves", "buy": "purchases", "search": "searches"}


@dataclass
class BehaviourConfig:
    target: str = "buy_next_day"
    tenant: str | None = None  # default: the store's only tenant
    lora: bool = False
    epochs: int = 2
    max_len: int = 256
    n_train: int = 5  # training cut-offs
    recent: int = 20  # events written out one by one, newest first
    max_users: int | None = None  # learn from a seeded sample of this many of the tenant's users
    seed: int = 0


def _check_target(target: str) -> tuple[str, int]:
    if target not in TARGETS:
        raise HuaxiangError(f"unknown target {target!r} (one of: {', '.join(TARGETS)})")
    return TARGETS[target]


def pick_tenant(con, tenant: str | None) -> str:
    """`tenant`, checked to have events, or the store's only tenant."""
    tenants = [t for (t,) in con.execute(f"SELECT DISTINCT {tenant_sql('user_id')} FROM events ORDER BY 1").fetchall()]
    if tenant is None:
        if len(tenants) != 1:
            raise HuaxiangError(f"the store holds {len(tenants)} tenants ({', '.join(tenants[:10])}): name one with "
                                "--tenant")
        return tenants[0]
    if tenant not in tenants:
        raise HuaxiangError(f"no events of tenant {tenant!r} in the store (tenants: {', '.join(tenants[:10])})")
    return tenant


def tenant_events(con, tenant: str) -> pd.DataFrame:
    """The tenant's events (user_id, ts, type, item_id, category_id, price), oldest first."""
    return con.execute(f"""SELECT user_id, ts, type, item_id, category_id, price FROM events
        WHERE {tenant_sql('user_id')} = ? ORDER BY user_id, ts""", [tenant]).df()


def item_names(con, tenant: str) -> dict[str, str]:
    """How the texts name each item of the tenant the store describes: title, then category, brand and price."""
    rows = con.execute(f"""SELECT item_id, title, category, brand, price FROM items
        WHERE {tenant_sql('item_id')} = ?""", [tenant]).fetchall()
    names = {}
    for item, title, category, brand, price in rows:
        extra = ", ".join(str(x) for x in (category, brand) if x) + (
            f"{', ' if category or brand else ''}price {price:g}" if price is not None and price == price else "")
        names[item] = " ".join(p for p in (str(title).strip().lower() if title else None,
                                           f"({extra})" if extra else None) if p)
    return names


def _ago(delta: timedelta) -> str:
    hours = int(delta.total_seconds() // 3600)
    return f"{hours}h ago" if hours < 48 else f"{hours // 24} days ago"


def behaviour_text(ev: pd.DataFrame, names: dict[str, str], cut: datetime, recent: int = 20) -> str:
    """One user's events before `cut` as text: active days and counts, the last day's and last 30 days' counts, then
    the `recent` newest events, each with the item's name (or its category and id when the store has no name)."""
    counts = lambda frame: ", ".join(f"{n} {PLURAL.get(t, t) if n != 1 else t}" for t, n in
                                     frame["type"].value_counts().items()) or "nothing"
    days = ev["ts"].dt.normalize()
    span = max((cut.date() - ev["ts"].min().date()).days, 1)
    lines = [f"active on {days.nunique()} of the last {span} days: {counts(ev)}.",
             f"last day: {counts(ev[ev['ts'] > cut - timedelta(days=1)])}.",
             f"last 30 days: {counts(ev[ev['ts'] > cut - timedelta(days=30)])}."]
    spent = ev.loc[ev["type"] == "buy", "price"].sum()
    if spent > 0:
        lines.append(f"spent {spent:.2f} in all.")
    tail = ev.iloc[::-1].head(recent)
    said = []
    for t, item, cat, ts in zip(tail["type"], tail["item_id"], tail["category_id"], tail["ts"]):
        what = names.get(item) or " ".join(p for p in (f"category {cat.split(':')[-1]}" if cat else None,
                                                       f"item {item.split(':')[-1]}" if item else None) if p)
        said.append(f"{VERBS.get(t, t)} {what} {_ago(cut - ts)}")
    return " ".join(lines) + " " + "; ".join(said)


def cutoffs(first: datetime, last: datetime, target: str, n_train: int, utc_offset_hours: int = 0) -> dict:
    """{"train": [...], "validation": [cut], "test": [cut]} (naive UTC, at local midnight): test is the last cut-off
    whose label window ends by `last`; every window ends at or before the next split's cut-off."""
    _, days = _check_target(target)
    shift = timedelta(hours=utc_offset_hours)
    midnight = lambda t: datetime.combine((t + shift).date(), datetime.min.time()) - shift
    test = midnight(last) - timedelta(days=days - 1) if days == 1 else midnight(last - timedelta(days=days))
    validation = test - timedelta(days=days)
    step = timedelta(days=1 if days == 1 else 30)
    train = [validation - timedelta(days=days) - k * step for k in range(n_train)]
    train = sorted(t for t in train if t - first >= step)
    if not train:
        raise HuaxiangError(f"{target}: the events span {first:%Y-%m-%d} .. {last:%Y-%m-%d}, too short for a "
                            f"training, a validation and a test cut-off {days} day(s) apart")
    return {"train": train, "validation": [validation], "test": [test]}


def examples(events: pd.DataFrame, names: dict, target: str, cut: datetime, recent: int,
             labelled: bool = True) -> pd.DataFrame:
    """(user_id, text[, label]) at `cut`: every user with an event before it (churn: every customer, who bought)."""
    kind, days = _check_target(target)
    before = events[events["ts"] < cut]
    if target == "churn_90d":
        before = before[before["user_id"].isin(before.loc[before["type"] == "buy", "user_id"])]
    users = sorted(before["user_id"].unique())
    out = pd.DataFrame({"user_id": users, "text": [behaviour_text(g, names, cut, recent) for _, g in
                                                   before.groupby("user_id", sort=True)]})
    if labelled:
        window = events[(events["ts"] >= cut) & (events["ts"] < cut + timedelta(days=days)) & (events["type"] == kind)]
        did = out["user_id"].isin(set(window["user_id"])).astype(int)
        out["label"] = 1 - did if target == "churn_90d" else did
    return out.assign(cutoff=cut)


def features(con, cfg: Config, tx: pd.DataFrame | None, target: str, cut: datetime, users) -> pd.DataFrame:
    """LightGBM's numeric features of `users` at `cut` (the profile features as of it; churn: the transaction
    features `huaxiang score churn` uses, from `tx`, the store's `store_transactions`), indexed by user id."""
    if target == "churn_90d":
        tx = tx[tx["customer_id"].isin(set(users)) & (tx["date"] < pd.Timestamp(cut))]
        f = ch.customer_features(tx, pd.Timestamp(cut) - timedelta(microseconds=1))
    else:
        from ..features.table import features_as_of
        f = features_as_of(con, cfg, cut - timedelta(microseconds=1)).set_index("user_id")
        f = f[[c for c in f.select_dtypes("number").columns if c not in NOT_FEATURES]]
    return f.reindex(list(users)).astype(float)


def _blend(p_text, p_gbdt, w: float) -> np.ndarray:
    return w * np.asarray(p_text, float) + (1 - w) * np.asarray(p_gbdt, float)


def choose_weight(y, p_text, p_gbdt) -> float:
    """The text model's weight in the blend, from 0 to 1 by tenths: the lowest validation log loss."""
    from sklearn.metrics import log_loss
    grid = np.round(np.linspace(0, 1, 11), 1)
    losses = [log_loss(y, np.clip(_blend(p_text, p_gbdt, w), 1e-6, 1 - 1e-6), labels=[0, 1]) for w in grid]
    return float(grid[int(np.argmin(losses))])


def _summary(m: dict) -> dict:
    return {k: m[k] for k in ("auc", "pr_auc", "brier", "ece", "positive_rate", "n", "calibration")}


def train_behaviour(con, cfg: Config, bc: BehaviourConfig, out_dir: str,
                    progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Builds the examples, fine-tunes the text model and fits LightGBM on the training cut-offs, chooses the blend
    on validation, measures all three on test; writes the folder and returns behaviour.json."""
    from ..text.classifier import TrainConfig, load_classifier, predict_proba, train_classifier
    _check_target(bc.target)
    if not has_table(con, "features"):
        raise HuaxiangError("no profiles in this store yet: run `huaxiang build` first")
    tenant = pick_tenant(con, bc.tenant)
    events = tenant_events(con, tenant)
    if bc.max_users is not None:
        users = events["user_id"].drop_duplicates().sort_values()
        sample = set(users.sample(n=min(bc.max_users, len(users)), random_state=bc.seed))
        events = events[events["user_id"].isin(sample)]
    cuts = cutoffs(events["ts"].min(), events["ts"].max(), bc.target, bc.n_train, cfg.utc_offset_hours)
    names = item_names(con, tenant)
    tx = store_transactions(con) if bc.target == "churn_90d" else None  # (read once for every cut-off)
    say = progress or (lambda *_: None)
    parts = {}
    for split, days in cuts.items():
        frames = []
        for i, cut in enumerate(days):
            say(f"{split} examples at {cut:%Y-%m-%d}", i, len(days))
            ex = examples(events, names, bc.target, cut, bc.recent)
            frames.append(ex.join(features(con, cfg, tx, bc.target, cut, ex["user_id"]), on="user_id"))
        parts[split] = pd.concat(frames, ignore_index=True)
        if parts[split]["label"].nunique() < 2:
            raise HuaxiangError(f"{bc.target}: every {split} example has the same outcome; nothing to learn or "
                                "measure")
    feature_cols = [c for c in parts["train"].columns if c not in ("user_id", "text", "label", "cutoff")]
    out = Path(out_dir)
    started = time.perf_counter()
    gbdt = ScoreModel(bc.target, seed=bc.seed).fit(parts["train"][feature_cols], parts["train"]["label"])
    gbdt.save(out / "lightgbm")
    gbdt_seconds = time.perf_counter() - started
    labelled = lambda d: d[["text"]].assign(label=d["label"].astype(str))
    meta = train_classifier(labelled(parts["train"]), str(out / "text"),
                            TrainConfig(lora=bc.lora, epochs=bc.epochs, max_len=bc.max_len, balanced=True,
                                        freeze_embeddings=not bc.lora, seed=bc.seed),
                            progress, validation=labelled(parts["validation"]))
    model, tok, saved = load_classifier(str(out / "text"), "fp32")
    p = {split: {"text": predict_proba(model, tok, d["text"].tolist(), bc.max_len)[:, saved["labels"].index("1")],
                 "lightgbm": gbdt.predict(d[feature_cols])} for split, d in parts.items() if split != "train"}
    w = choose_weight(parts["validation"]["label"], p["validation"]["text"], p["validation"]["lightgbm"])
    scored = {split: {**{name: _summary(binary_metrics(parts[split]["label"], q)) for name, q in ps.items()},
                      "blend": _summary(binary_metrics(parts[split]["label"], _blend(ps["text"], ps["lightgbm"], w)))}
              for split, ps in p.items()}
    result = {"target": bc.target, "tenant": tenant, "cutoffs": {k: [f"{c:%Y-%m-%d %H:%M}" for c in v]
                                                                 for k, v in cuts.items()},
              "examples": {k: int(len(v)) for k, v in parts.items()}, "text_weight": w, "features": feature_cols,
              "train_seconds": {"text": meta["train_seconds"], "lightgbm": gbdt_seconds},
              "validation": scored["validation"], "test": scored["test"], "config": asdict(bc)}
    (out / "behaviour.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def score_behaviour(con, cfg: Config, model_dir: str, text_only: bool = False) -> pd.DataFrame:
    """Rows of `scores` (user_id, kind = the target, score, detail) for every user of the model's tenant now (at
    the end of its events): the blend chosen on validation, or the text model alone."""
    from ..text.classifier import load_classifier, predict_proba
    path = Path(model_dir) / "behaviour.json"
    if not path.exists():
        raise HuaxiangError(f"{model_dir}: not a behaviour model (no behaviour.json); train one with `huaxiang train "
                            "behaviour`")
    saved = json.loads(path.read_text())
    events = tenant_events(con, saved["tenant"])
    if events.empty:
        raise HuaxiangError(f"no events of tenant {saved['tenant']!r} in the store")
    now = events["ts"].max() + timedelta(microseconds=1)
    ex = examples(events, item_names(con, saved["tenant"]), saved["target"], now, saved["config"]["recent"],
                  labelled=False)
    model, tok, meta = load_classifier(str(Path(model_dir) / "text"))
    p_text = predict_proba(model, tok, ex["text"].tolist(), meta["max_len"])[:, meta["labels"].index("1")]
    w = 1.0 if text_only else saved["text_weight"]
    if w < 1:
        gbdt = ScoreModel.load(Path(model_dir) / "lightgbm", saved["target"])
        tx = store_transactions(con) if saved["target"] == "churn_90d" else None
        p_gbdt = gbdt.predict(features(con, cfg, tx, saved["target"], now, ex["user_id"])[saved["features"]])
    else:
        p_gbdt = np.zeros(len(ex))
    score = _blend(p_text, p_gbdt, w)
    return pd.DataFrame({"user_id": ex["user_id"], "kind": saved["target"], "score": score, "detail": [
        json.dumps({"text_model": float(a), "lightgbm": float(b) if w < 1 else None, "text_weight": w,
                    "model": str(Path(model_dir).resolve()), "variant": meta["variant"]})
        for a, b in zip(p_text, p_gbdt)]})
