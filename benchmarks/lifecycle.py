"""Benchmark: every lifecycle number in the README — CLV, churn, purchase / cart propensity, risk flags.

    .venv/bin/python benchmarks/lifecycle.py [--parts clv,churn,propensity,risk] [--routes gbdt,frozen]

clv         CDNOW 1/10 sample (2,357 customers), calibration to 1997-09-30, holdout 39 weeks to 1998-06-30:
            BG/NBD parameters vs Fader, Hardie & Lee (2005); holdout repeat transactions per calibration-frequency
            bucket for BG/NBD and for the blend (LightGBM boosted from BG/NBD on calibration-period windows only).
churn       CDNOW (all 23,570 customers) and UCI Online Retail II (10 countries): churn = no purchase in the next
            90 days; rolling cut-offs 90 days apart, the last one (its window ends at the data's end) is the
            test, the earlier ones train; LightGBM; AUC, PR-AUC, Brier, expected calibration error, a
            calibration plot (out/lifecycle/churn_calibration.png); recency alone as the baseline.
propensity  Taobao slice, buy / add to cart on the next day (benchmarks/behaviour_text.py's time split):
            LightGBM on profile features vs the behaviour written as text through the encoder.
risk        Taobao slice with injected click farms, fake orders, account rings and night bots
            (huaxiang/evaluate/fraud.py): precision and recall of rules, of the IsolationForest, of both.

Results go to out/lifecycle/results.json, one key per part, with the ROC points and calibration bins of churn and
propensity for `huaxiang report`; a run replaces the parts it ran and keeps the others, and `machines` records the
machine and date of each part. The clv part also writes out/lifecycle/clv_cdnow.json: what `huaxiang clv FILE
--format cdnow --calibration-end 1997-09-30 --holdout-end 1998-06-30 --json` prints, plus the file and machine.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from huaxiang.evaluate.report import PUBLISHED_BGNBD
from machine import stamp

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
OUT = Path(__file__).resolve().parent / "out" / "lifecycle"
PUBLISHED = PUBLISHED_BGNBD["params"]
CLV_FILE = SHARED / "cdnow" / "CDNOW_sample.txt.gz"
CLV_DATES = ("1997-09-30", "1998-06-30")  # calibration end, holdout end


def clv_result(path: Path, fmt: str, calibration_end: str, holdout_end: str, machine: str, blend: bool = True) -> dict:
    """What `huaxiang clv PATH --format FMT --calibration-end … --holdout-end … --json` prints (the same function),
    with the command, the file and the machine and date: the content of out/lifecycle/clv_cdnow.json."""
    from huaxiang.ingest.transactions import read_transactions
    from huaxiang.models.clv import holdout_evaluation
    _, result = holdout_evaluation(read_transactions(str(path), fmt), calibration_end, holdout_end, blend=blend)
    return {"command": f"huaxiang clv {path.name} --format {fmt} --calibration-end {calibration_end} "
                       f"--holdout-end {holdout_end}{'' if blend else ' --no-blend'} --json",
            "file": path.name, "machine": machine, **result}


def clv_part() -> dict:
    t = time.perf_counter()
    result = clv_result(CLV_FILE, "cdnow", *CLV_DATES, stamp())
    (OUT / "clv_cdnow.json").write_text(json.dumps(result, indent=2))
    return {"params": {k: result[k] for k in ("r", "alpha", "a", "b", "p", "q", "v") if k in result},
            "published": PUBLISHED, "seconds": time.perf_counter() - t, "buckets": result["buckets"]}


def churn_result(path: Path, fmt: str, n_train: int) -> dict:
    """One data set's churn figures: binary_metrics (with the ROC points and calibration bins) of LightGBM trained on
    `n_train` rolling cut-offs and tested on the last one, the recency-only AUC and an explained example."""
    from sklearn.metrics import roc_auc_score
    from huaxiang.models.churn import churn_dataset, rolling_cutoffs
    from huaxiang.ingest.transactions import read_transactions
    from huaxiang.models.scores import ScoreModel, binary_metrics
    tx = read_transactions(str(path), fmt).frame
    cuts = rolling_cutoffs(tx["date"].max(), 90, n_train)
    X, y = churn_dataset(tx, cuts[:-1], 90)
    Xt, yt = churn_dataset(tx, cuts[-1:], 90)
    t = time.perf_counter()
    model = ScoreModel("churn").fit(X, y)
    secs = time.perf_counter() - t
    return {**binary_metrics(yt, model.predict(Xt)), "train_seconds": secs, "train_cases": len(X),
            "cutoffs": [str(c.date()) for c in cuts], "recency_only_auc": roc_auc_score(yt, Xt["recency_days"]),
            "example": model.explain(Xt.head(1))[0]}


def churn_part() -> dict:
    sets = {"CDNOW": (SHARED / "cdnow" / "CDNOW_master.txt.gz", "cdnow", 3),
            "Online Retail II": (SHARED / "online_retail_ii_10countries" / "online_retail_ii_10countries.csv.gz",
                                 "online-retail", 5)}
    out = {name: churn_result(*spec) for name, spec in sets.items()}
    plot_calibration(out, OUT / "churn_calibration.png")
    return out


def plot_calibration(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect")
    for name, r in results.items():
        c = r["calibration"]
        ax.plot([b["mean_predicted"] for b in c], [b["observed"] for b in c], marker="o",
                label=f"{name} (ECE {r['ece']:.3f})")
    ax.set(xlabel="predicted churn probability (decile mean)", ylabel="observed churn rate",
           title="Churn calibration, 90-day horizon")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def propensity_part(routes: list[str]) -> dict:
    from behaviour_text import ROUTES, taobao_examples, with_label
    parts = taobao_examples()
    args = argparse.Namespace(epochs=2, max_len=160)
    return {label: {route: ROUTES[route](with_label(parts, label), args) for route in routes}
            for label in ("buy", "cart")}


def risk_part() -> dict:
    from huaxiang.evaluate.fraud import inject_fraud, precision_recall
    from huaxiang.models.risk import RiskDetector, risk_features, rule_flags
    raw = pd.read_csv(SHARED / "taobao_userbehavior_head" / "UserBehavior_head.csv.gz", dtype=str)
    events = pd.DataFrame({"user_id": raw["user_id"], "item_id": raw["item_id"], "category_id": raw["category_id"],
                           "type": raw["behavior_type"].map({"pv": "view", "cart": "cart", "fav": "fav", "buy": "buy"}),
                           "ts": pd.to_datetime(raw["timestamp"].astype(int), unit="s")})
    out = {}
    for seed in range(3):
        with_fraud, truth = inject_fraud(events, per_pattern=10, utc_offset_hours=8, seed=seed)
        f = risk_features(with_fraud, utc_offset_hours=8)
        detector = RiskDetector(seed=seed).fit(f)
        forest = pd.Series(detector.forest_.predict(detector._x(f)) == -1, index=f.index)
        for name, flagged in (("rules", rule_flags(f).any(axis=1)), ("isolation forest", forest),
                              ("rules + forest", detector.flag(f)["risk_flagged"])):
            out.setdefault(name, []).append(precision_recall(flagged, truth))
    return {name: {k: float(np.mean([r[k] for r in runs])) for k in runs[0]} for name, runs in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="clv,churn,propensity,risk")
    ap.add_argument("--routes", default="gbdt,frozen", help="propensity routes (behaviour_text.py: gbdt, frozen, "
                                                             "full, lora)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    machine = stamp()
    print(machine, flush=True)
    parts = {"clv": clv_part, "churn": churn_part, "risk": risk_part,
             "propensity": lambda: propensity_part(args.routes.split(","))}
    path = OUT / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    for name in args.parts.split(","):
        t = time.perf_counter()
        results = merge_parts(results, {name: parts[name]()}, machine)
        print(f"{name} ({time.perf_counter() - t:.0f} s): {json.dumps(results[name], default=str)[:1500]}", flush=True)
        path.write_text(json.dumps(results, indent=2, default=str))
    report(results)


def merge_parts(old: dict, new: dict, machine: str) -> dict:
    """results.json after a run: the parts it ran replace earlier ones, the others stay; `machines` names the machine
    and date of each part (for parts written before it was recorded: the file's `machine` then)."""
    machines = {p: old["machine"] for p in old if p not in ("machine", "machines") and "machine" in old}
    machines.update({**old.get("machines", {}), **{p: machine for p in new}})
    return {**old, **new, "machine": machine, "machines": machines}


def table(header: list[str], rows: list[list]) -> None:
    """A markdown table: the first column left-aligned, the rest right-aligned."""
    print("\n| " + " | ".join(header) + " |\n|---|" + "---:|" * (len(header) - 1))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


def report(r: dict) -> None:
    if "clv" in r:
        p, tot = r["clv"]["params"], r["clv"]["buckets"][-1]
        table(["BG/NBD on CDNOW (39-week calibration)", "r", "α", "a", "b"],
              [["published (Fader, Hardie & Lee 2005)", *PUBLISHED.values()],
               ["huaxiang (PyMC-Marketing, MAP with flat priors)", *(f"{p[k]:.4f}" for k in PUBLISHED)]])
        table(["calibration repeat purchases", "customers", "actual holdout", "BG/NBD", "blend"],
              [[b["bucket"], f"{b['customers']:,}", f"{b['actual']:,.0f}", f"{b['bgnbd']:,.1f}", f"{b['blend']:,.1f}"]
               for b in r["clv"]["buckets"]]
              + [["(error of the total)", "", "", f"{tot['bgnbd'] / tot['actual'] - 1:+.1%}",
                  f"{tot['blend'] / tot['actual'] - 1:+.1%}"]])
    if "churn" in r:
        table(["churn, 90 days", "test customers", "churn rate", "AUC", "PR-AUC", "Brier", "ECE", "recency-only AUC"],
              [[name, f"{m['n']:,}", f"{m['positive_rate']:.1%}",
                *(f"{m[k]:.3f}" for k in ("auc", "pr_auc", "brier", "ece", "recency_only_auc"))]
               for name, m in r["churn"].items()])
    if "propensity" in r:
        table(["Taobao, next day", "route", "positive rate", "AUC", "PR-AUC"],
              [[label, route, f"{m['positive_rate']:.1%}", f"{m['auc']:.3f}", f"{m['pr_auc']:.3f}"]
               for label, routes in r["propensity"].items() for route, m in routes.items()])
    if "risk" in r:
        keys = ("precision", "recall", "recall_click_farm", "recall_fake_orders", "recall_ring", "recall_night_bot")
        table(["injected fraud (mean of 3 seeds)", "precision", "recall", "click farm", "fake orders", "ring",
               "night bot"], [[name, *(f"{m[k]:.2f}" for k in keys)] for name, m in r["risk"].items()])


if __name__ == "__main__":
    main()
