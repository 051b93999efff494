"""Benchmark: an experiment's report over 1M exposures — attribution of clicks and purchases to what was shown
(DuckDB ASOF join, `huaxiang.experiments.attribution.outcomes`) plus the statistics (`stats.experiment_report`),
against the same attribution done with pandas (`merge_asof`, then a group-by) in the same run. Target: <= 5 s.

    .venv/bin/python benchmarks/experiment_report.py [--users 200000] [--items-per-answer 5] [--repeats 3]

Data (seeded, synthetic, in a fresh DuckDB store): `--users` users split 50/50 between two variants, one answer
of `--items-per-answer` items each (1M exposures by default), over a week; each shown item clicked with
probability 3% (treatment 3.3%) within a day, a click bought with probability 10% at a price of 5–50; plus as
many unrelated view events as exposures. Times are medians of `--repeats`; both paths must give the same per-user
clicks, buyers and revenue. Writes benchmarks/out/latency/experiment_report.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from machine import stamp

OUT = Path(__file__).resolve().parent / "out" / "latency" / "experiment_report.json"


def build(db: str, users: int, per: int, seed: int = 0) -> None:
    from huaxiang import store
    rng = np.random.default_rng(seed)
    con = store.connect(db)
    t0 = np.datetime64("2026-11-01T00:00:00")
    uid = np.repeat(np.arange(users), per)
    variant = np.where(uid % 2 == 0, "control", "treatment")
    shown_at = t0 + np.repeat(rng.integers(0, 7 * 86400, users), per).astype("timedelta64[s]")
    item = rng.integers(0, 5_000, users * per)
    shown = pd.DataFrame({
        "request_id": [f"r{u}" for u in uid], "ts": shown_at, "user_id": [f"u{u}" for u in uid],
        "item_id": [f"i{i}" for i in item], "position": np.tile(np.arange(1, per + 1), users).astype(np.int32),
        "score": rng.random(users * per), "surface": "recommendations", "model": "m", "version": None,
        "experiment": "bench", "variant": variant, "latency_ms": np.repeat(rng.gamma(2.0, 2.0, users), per)})
    con.register("shown", shown)
    con.execute("INSERT INTO exposures SELECT * FROM shown")
    clicked = rng.random(users * per) < np.where(variant == "treatment", 0.033, 0.03)
    click_at = shown_at + rng.integers(1, 86400, users * per).astype("timedelta64[s]")
    bought = clicked & (rng.random(users * per) < 0.10)
    views = users * per
    happened = pd.concat([
        pd.DataFrame({"event_id": [f"c{n}" for n in range(clicked.sum())], "user_id": shown["user_id"][clicked],
                      "item_id": shown["item_id"][clicked], "type": "click", "ts": click_at[clicked],
                      "price": np.nan}),
        pd.DataFrame({"event_id": [f"b{n}" for n in range(bought.sum())], "user_id": shown["user_id"][bought],
                      "item_id": shown["item_id"][bought], "type": "buy",
                      "ts": click_at[bought] + np.timedelta64(60, "s"), "price": rng.uniform(5, 50, bought.sum())}),
        pd.DataFrame({"event_id": [f"v{n}" for n in range(views)], "user_id": [f"u{u}" for u in
                                                                                 rng.integers(0, users, views)],
                      "item_id": [f"i{i}" for i in rng.integers(0, 5_000, views)], "type": "view",
                      "ts": t0 + rng.integers(0, 8 * 86400, views).astype("timedelta64[s]"), "price": np.nan})])
    con.register("happened", happened)
    con.execute("""INSERT INTO events (event_id, user_id, item_id, type, ts, price)
                   SELECT event_id, user_id, item_id, type, ts, price FROM happened""")
    con.close()


def with_pandas(con, window_hours: float = 24.0) -> pd.DataFrame:
    """The same attribution in pandas: per (variant, user) clicks, buyer, revenue."""
    x = con.execute("SELECT user_id, item_id, ts, variant FROM exposures WHERE experiment = 'bench'").df()
    e = con.execute("SELECT user_id, item_id, type, ts, price, quantity FROM events "
                    "WHERE type IN ('click', 'cart', 'buy') AND item_id IS NOT NULL").df()
    x, e = x.sort_values("ts"), e.sort_values("ts")
    m = pd.merge_asof(e, x, on="ts", by=["user_id", "item_id"], direction="backward",
                      tolerance=pd.Timedelta(hours=window_hours)).dropna(subset=["variant"])
    m["revenue"] = np.where(m["type"] == "buy", m["price"].fillna(0) * m["quantity"].fillna(1), 0.0)
    return m.assign(click=m["type"] == "click", buy=m["type"] == "buy").groupby(["variant", "user_id"]).agg(
        clicks=("click", "sum"), buyer=("buy", "max"), revenue=("revenue", "sum"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--items-per-answer", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from huaxiang import store
    from huaxiang.experiments.attribution import outcomes
    from huaxiang.experiments.stats import experiment_report
    with tempfile.TemporaryDirectory() as d:
        db = f"{d}/bench.duckdb"
        t = time.perf_counter()
        build(db, args.users, args.items_per_answer)
        print(f"built {args.users * args.items_per_answer:,} exposures in {time.perf_counter() - t:.1f} s")
        con = store.connect(db, read_only=True)
        n = con.execute("SELECT count(*) FROM exposures").fetchone()[0]
        ours, peer = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            report = experiment_report(outcomes(con, "bench"), {"control": 0.5, "treatment": 0.5}, "control")
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            theirs = with_pandas(con)
            peer.append(time.perf_counter() - t)
        got = outcomes(con, "bench")
        for variant, per in got.items():  # the same clicks, buyers and revenue per variant as pandas
            mine = theirs.loc[variant]
            assert int(per["clicks"].sum()) == int(mine["clicks"].sum()), variant
            assert int(per["buyer"].sum()) == int(mine["buyer"].sum()), variant
            assert abs(float(per["revenue"].sum()) - float(mine["revenue"].sum())) < 1e-6 * max(1.0, per[
                "revenue"].sum()), variant
        con.close()
    result = {"benchmark": "experiment_report", "machine": stamp(), "exposures": n, "users": args.users,
              "repeats": args.repeats, "report_seconds_median": statistics.median(ours),
              "pandas_attribution_seconds_median": statistics.median(peer),
              "ratio_to_pandas": statistics.median(ours) / statistics.median(peer),
              "lift_ctr": report["comparisons"]["treatment"]["ctr"], "srm": report["srm"]}
    print(f"report over {n:,} exposures: {result['report_seconds_median']:.2f} s (median of {args.repeats}); "
          f"pandas attribution alone {result['pandas_attribution_seconds_median']:.2f} s "
          f"({result['ratio_to_pandas']:.2f}×); target <= 5 s; {result['machine']}")
    print(f"CTR lift {report['comparisons']['treatment']['ctr']['lift']:+.3f} "
          f"[{report['comparisons']['treatment']['ctr']['ci_low']:+.3f}, "
          f"{report['comparisons']['treatment']['ctr']['ci_high']:+.3f}] (simulated +10%); "
          f"SRM p = {report['srm']['p_value']:.3f}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
