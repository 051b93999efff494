"""Benchmark: the behaviour model (`huaxiang train behaviour`) against LightGBM on the profile features, and their
blend, on real logs — does a user's history written as text, read by the fine-tuned encoder, predict what they do
next?

    .venv/bin/python benchmarks/behaviour.py [--cases taobao-buy,taobao-cart,retail-churn,cdnow-churn] [--epochs 2]
        [--max-len 256] [--lora]

Cases (data from ../shared/data, each ingested into a scratch store and built):
  taobao-buy, taobao-cart  Taobao UserBehavior slice (814 users, 2017-11-25 .. 12-03): buy_next_day / cart_next_day;
                           items are bare ids (the log names only item and category ids);
  retail-churn             Online Retail II, 10 countries: churn_90d; items named by their descriptions and prices;
  cdnow-churn              CDNOW (a seeded 2,000 of its 23,570 customers): churn_90d; purchases have amounts, no items.
Protocol (`huaxiang.models.behaviour`): time-based split — test the last cut-off whose label window ends within the
data, validation the one before, training the 5 before that, no label window reaching the next split's cut-off;
LightGBM on the same cut-offs' features; the blend weight chosen on validation log loss. Every figure is on test:
ROC AUC, PR-AUC, Brier, expected calibration error, with the train time. Results go to
out/behaviour/{case}.json (with the calibration curves), the machine and the date.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from machine import stamp

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
OUT = Path(__file__).resolve().parent / "out" / "behaviour"
CASES = {  # case: (file, ingest format, tenant, target, users sampled)
    "taobao-buy": ("taobao_userbehavior_head/UserBehavior_head.csv.gz", "taobao", "taobao", "buy_next_day", None),
    "taobao-cart": ("taobao_userbehavior_head/UserBehavior_head.csv.gz", "taobao", "taobao", "cart_next_day", None),
    "retail-churn": ("online_retail_ii_10countries/online_retail_ii_10countries.csv.gz", "online-retail", "retail",
                     "churn_90d", None),
    "cdnow-churn": ("cdnow/CDNOW_master.txt.gz", "cdnow", "cdnow", "churn_90d", 2_000),
}


def run(case: str, args) -> dict:
    from huaxiang.config import load_config
    from huaxiang.ingest import ingest_file
    from huaxiang.models.behaviour import BehaviourConfig, train_behaviour
    from huaxiang.profile.build import build_profiles
    from huaxiang.store import connect
    path, fmt, tenant, target, users = CASES[case]
    with tempfile.TemporaryDirectory() as tmp:
        con = connect(str(Path(tmp) / "s.duckdb"))
        ingest_file(con, str(SHARED / path), fmt, namespace=tenant)
        cfg = load_config(utc_offset_hours=8) if tenant == "taobao" else load_config()  # (China time)
        build_profiles(con, cfg)
        started = time.perf_counter()

        def progress(desc: str, done: int, total: int) -> None:
            if done % 50 == 0 or done == total:
                print(f"    {case} {desc} {done}/{total} ({time.perf_counter() - started:,.0f} s)", flush=True)
        result = train_behaviour(con, cfg, BehaviourConfig(target=target, tenant=tenant, lora=args.lora,
                                                           epochs=args.epochs, max_len=args.max_len,
                                                           max_users=users), str(OUT / case), progress)
    return {**result, "case": case, "machine": stamp(), "args": vars(args)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=",".join(CASES), help=f"any of {', '.join(CASES)}")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--lora", action="store_true")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in args.cases.split(","):
        if case not in CASES:
            raise SystemExit(f"unknown case {case!r} (one of: {', '.join(CASES)})")
        rows.append(run(case, args))
        (OUT / f"{case}.json").write_text(json.dumps(rows[-1], indent=2, default=str))
        print(f"{case}: {rows[-1]['examples']} examples; text weight {rows[-1]['text_weight']}; "
              f"{rows[-1]['machine']}", flush=True)
    print("\n| case | target | route | ROC AUC | PR-AUC | Brier | ECE | positive rate | train s |\n"
          "|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        for route, m in r["test"].items():
            secs = sum(r["train_seconds"].values()) if route == "blend" else r["train_seconds"][route]
            print(f"| {r['case']} | {r['target']} | {route} | {m['auc']:.4f} | {m['pr_auc']:.4f} | {m['brier']:.4f} | "
                  f"{m['ece']:.4f} | {m['positive_rate']:.1%} | {secs:.0f} |")


if __name__ == "__main__":
    main()
