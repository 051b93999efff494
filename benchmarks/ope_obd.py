"""Benchmark: off-policy evaluation on the Open Bandit Dataset sample (ZOZOTOWN; ../shared/data/open_bandit_dataset_sample,
see its SOURCE.md) — does `huaxiang ope` reproduce a policy's on-policy CTR from another policy's log?

    .venv/bin/python benchmarks/ope_obd.py [--coverage-runs 500] [--cli-repeats 5]

Per campaign (all: 80 items, men: 34; 10,000 rows per log):
  * random → BTS: from the uniform-random log, Bernoulli Thompson Sampling's CTR by IPS, SNIPS and DR (value, 95%
    interval, relative error against BTS's own on-policy CTR, whether the interval covers it); the baseline is the
    naive estimate (the logging policy's own CTR, i.e. no correction);
  * BTS → random: the reverse direction (heavier weights: BTS gives some items propensities near 0.005);
  * our models (`popularity`, `ctr`) fitted on the first half of the random log (by time) and estimated on its second
    half, beside the random policy's own CTR on that half (with its Clopper–Pearson interval).
Then, as the check of the interval method, its coverage on seeded synthetic logs with a known truth and OBD-like rare
clicks (--coverage-runs runs per world), against the normal interval value ± 1.96·se of the same runs; and the wall
time of the command itself (`python -m huaxiang.cli ope … --json`, median of --cli-repeats runs, process start
included) and of the estimation in process.
Writes benchmarks/out/ope/obd.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from machine import stamp

OBD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "open_bandit_dataset_sample"
OUT = Path(__file__).resolve().parent / "out" / "ope"
CAMPAIGNS = ("all", "men")
ESTIMATORS = ("ips", "snips", "dr")


def path(policy: str, campaign: str) -> str:
    return str(OBD / policy / campaign / f"{campaign}.csv.gz")


def scored(result: dict, truth: float) -> dict:
    """Each estimate with its relative error against `truth` and whether its interval covers it."""
    return {name: {**e, "rel_error": (e["value"] - truth) / truth, "covered": e["ci_low"] <= truth <= e["ci_high"]}
            for name, e in result["estimates"].items()}


def direction(log: str, target: str) -> dict:
    from huaxiang.evaluate.ope import evaluate, read_log
    result = evaluate(read_log(log, "obd"), target_log=read_log(target, "obd"))
    truth = result["on_policy"]
    naive = result["log_ctr"]
    return {"log": log, "target": target, "on_policy": truth, "on_policy_ci": result["on_policy_ci"],
            "estimates": scored(result, truth), "naive": {"value": naive, "rel_error": (naive - truth) / truth},
            "effective_sample_size": result["effective_sample_size"], "max_weight": result["max_weight"]}


def models(log: str) -> dict:
    from huaxiang.evaluate.ope import clicks_interval, evaluate, read_log
    logged = read_log(log, "obd")
    out = {}
    for name in ("popularity", "ctr"):
        result = evaluate(logged, target_model=name)
        low, high = clicks_interval(result["log_clicks"], result["n"])
        out[name] = {"estimates": result["estimates"], "n": result["n"], "rows_with_weight": result["rows_with_weight"],
                     "random_same_half": {"value": result["log_ctr"], "ci_low": low, "ci_high": high,
                                          "clicks": result["log_clicks"]}}
    return out


def synthetic_coverage(runs: int) -> dict:
    """Coverage of ours and of value ± 1.96·se over `runs` seeded logs per world (truth known)."""
    from huaxiang.evaluate.ope import Target, off_policy
    items, positions = 80, 3
    worlds = {}
    for world, n in (("uniform → concentrated, 10,000 rows (~39 clicks)", 10_000),
                     ("concentrated → uniform, 10,000 rows (~36 clicks)", 10_000),
                     ("concentrated → uniform, 3,000 rows (~11 clicks)", 3_000)):
        g = np.random.default_rng(7)
        ctr = np.exp(g.normal(np.log(0.0035), 0.6, items))
        q = np.array([0.0, 1.2, 1.0, 0.8])[:, None] * ctr[None, :]
        uniform = np.full((positions + 1, items), 1.0 / items)
        concentrated = g.dirichlet(np.full(items, 0.3), size=positions + 1)
        logp, target = ((uniform, concentrated) if world.startswith("uniform")
                        else (0.9 * concentrated + 0.1 * uniform, uniform))
        truth = float((target[1:] * q[1:]).sum(axis=1).mean())
        policy, cum = Target("synthetic", "synthetic", table=target), logp.cumsum(axis=1)
        ours = {e: 0 for e in ESTIMATORS}
        normal = {e: 0 for e in ESTIMATORS}
        for seed in range(runs):
            r = np.random.default_rng(10_000 + seed)
            pos = r.integers(1, positions + 1, n)
            item = np.minimum((r.random(n)[:, None] > cum[pos]).sum(axis=1), items - 1)
            click = (r.random(n) < q[pos, item]).astype(float)
            est, _ = off_policy(item, pos, click, logp[pos, item], policy, items, positions)
            for e, d in est.items():
                ours[e] += d["ci_low"] <= truth <= d["ci_high"]
                normal[e] += d["value"] - 1.96 * d["se"] <= truth <= d["value"] + 1.96 * d["se"]
        worlds[world] = {"runs": runs, "truth": truth, "ours": {e: c / runs for e, c in ours.items()},
                         "normal": {e: c / runs for e, c in normal.items()}}
        print(f"  {world}: ours " + ", ".join(f"{e} {c / runs:.3f}" for e, c in ours.items())
              + "; normal " + ", ".join(f"{e} {c / runs:.3f}" for e, c in normal.items()), flush=True)
    return worlds


def timing(repeats: int) -> dict:
    from huaxiang.evaluate.ope import evaluate, read_log
    args = [sys.executable, "-m", "huaxiang.cli", "ope", "--log", path("random", "all"), "--format", "obd",
            "--target-log", path("bts", "all"), "--json"]
    cli = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        cli.append(time.perf_counter() - t)
    inproc = []
    for _ in range(repeats):
        t = time.perf_counter()
        evaluate(read_log(path("random", "all"), "obd"), target_log=read_log(path("bts", "all"), "obd"))
        inproc.append(time.perf_counter() - t)
    return {"what": "random → BTS on `all` (2 × 10,000 rows)", "repeats": repeats,
            "cli_median_s": float(np.median(cli)), "in_process_median_s": float(np.median(inproc))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coverage-runs", type=int, default=500)
    parser.add_argument("--cli-repeats", type=int, default=5)
    args = parser.parse_args()
    machine = stamp()
    print(f"OPE on the Open Bandit Dataset sample — {machine}")
    result = {"benchmark": "ope_obd", "machine": machine, "campaigns": {}}
    for campaign in CAMPAIGNS:
        rnd, bts = path("random", campaign), path("bts", campaign)
        result["campaigns"][campaign] = {"random_to_bts": direction(rnd, bts), "bts_to_random": direction(bts, rnd),
                                         "models_on_random_second_half": models(rnd)}
    print(f"\n{'campaign':8} {'direction':15} {'estimator':9} {'estimate':>8} {'95% interval':>20} {'on-policy':>9} "
          f"{'rel.err':>8} covered")
    for campaign, parts in result["campaigns"].items():
        for key, label in (("random_to_bts", "random → BTS"), ("bts_to_random", "BTS → random")):
            d = parts[key]
            for name in ESTIMATORS:
                e = d["estimates"][name]
                print(f"{campaign:8} {label:15} {name.upper():9} {e['value']:8.5f} [{e['ci_low']:.5f}, {e['ci_high']:.5f}]"
                      f" {d['on_policy']:9.5f} {e['rel_error']:+8.1%} {'yes' if e['covered'] else 'NO'}")
            print(f"{campaign:8} {label:15} {'naive':9} {d['naive']['value']:8.5f} {'':20} {d['on_policy']:9.5f} "
                  f"{d['naive']['rel_error']:+8.1%}   (the logging policy's own CTR; ESS {d['effective_sample_size']:,.0f}, "
                  f"max weight {d['max_weight']:.0f})")
    print(f"\n{'campaign':8} {'model':10} {'estimator':9} {'estimate':>8} {'95% interval':>20}   random, same half")
    for campaign, parts in result["campaigns"].items():
        for model, m in parts["models_on_random_second_half"].items():
            base = m["random_same_half"]
            for name in ESTIMATORS:
                e = m["estimates"][name]
                print(f"{campaign:8} {model:10} {name.upper():9} {e['value']:8.5f} [{e['ci_low']:.5f}, {e['ci_high']:.5f}]"
                      f"   {base['value']:.5f} [{base['ci_low']:.5f}, {base['ci_high']:.5f}] "
                      f"({m['rows_with_weight']} of {m['n']:,} rows carry weight)")
    print(f"\ninterval coverage on synthetic logs with a known truth ({args.coverage_runs} runs per world):")
    result["synthetic_coverage"] = synthetic_coverage(args.coverage_runs)
    result["timing"] = timing(args.cli_repeats)
    t = result["timing"]
    print(f"\n`huaxiang ope` {t['what']}: {t['cli_median_s']:.2f} s per command (median of {t['repeats']}, "
          f"Python start included); {t['in_process_median_s']:.2f} s reading + estimating in process")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "obd.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {OUT / 'obd.json'}")


if __name__ == "__main__":
    main()
