"""Off-policy evaluation (`huaxiang ope`): the intervals' coverage on synthetic logs with a known truth and rare clicks,
the estimates on the Open Bandit Dataset sample against the other policy's on-policy CTR, and bad input refused with
one line naming the file, the line and the column."""
import gzip
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import DATA
from huaxiang.errors import HuaxiangError
from huaxiang.evaluate.ope import Target, evaluate, off_policy, read_log

ITEMS, POSITIONS = 80, 3
OBD = {(policy, campaign): DATA / f"obd_{policy}_{campaign}.csv.gz"
       for policy in ("random", "bts") for campaign in ("all", "men")}
ON_POLICY = {"all": 0.00420, "men": 0.00690}  # BTS's own CTR on each campaign (tests/data/SOURCE.md)


def run(*args):
    return subprocess.run([sys.executable, "-m", "huaxiang.cli", "ope", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"})


# ------------------------------------------------------------------------------------------- synthetic, known truth

def world(seed, logging):
    """Item CTRs around 0.35% (× a position factor), a BTS-like concentrated policy and the uniform one: (click
    probability [position, item], logging policy, target policy, the target's true CTR)."""
    g = np.random.default_rng(seed)
    ctr = np.exp(g.normal(np.log(0.0035), 0.6, ITEMS))
    q = np.array([0.0, 1.2, 1.0, 0.8])[:, None] * ctr[None, :]
    uniform = np.full((POSITIONS + 1, ITEMS), 1.0 / ITEMS)
    concentrated = g.dirichlet(np.full(ITEMS, 0.3), size=POSITIONS + 1)
    if logging == "uniform":
        log_policy, target = uniform, concentrated
    else:  # a concentrated logging policy with a little exploration: weights up to ~10, rare heavy ones
        log_policy, target = 0.9 * concentrated + 0.1 * uniform, uniform
    truth = float((target[1:] * q[1:]).sum(axis=1).mean())
    return q, log_policy, target, truth


def coverage(logging, n, runs=100):
    """(runs covered per estimator, mean estimate per estimator, truth) over `runs` seeded logs of n rows."""
    q, log_policy, target, truth = world(7, logging)
    policy = Target("synthetic", "synthetic", table=target)
    cumulative = log_policy.cumsum(axis=1)
    covered = {"ips": 0, "snips": 0, "dr": 0}
    values = {name: [] for name in covered}
    for seed in range(runs):
        g = np.random.default_rng(1000 + seed)
        pos = g.integers(1, POSITIONS + 1, n)
        item = np.minimum((g.random(n)[:, None] > cumulative[pos]).sum(axis=1), ITEMS - 1)
        click = (g.random(n) < q[pos, item]).astype(float)
        estimates, _ = off_policy(item, pos, click, log_policy[pos, item], policy, ITEMS, POSITIONS)
        for name, e in estimates.items():
            covered[name] += e["ci_low"] <= truth <= e["ci_high"]
            values[name].append(e["value"])
    return covered, {name: float(np.mean(v)) for name, v in values.items()}, truth


@pytest.mark.parametrize("logging,n", [("uniform", 10_000), ("concentrated", 3_000)])
def test_intervals_cover_the_truth_with_rare_clicks(logging, n):
    """~40 clicks (uniform logging, as OBD's random → BTS) and ~11 clicks with heavier weights (the reverse): each
    estimator's interval must cover the truth in ≥ 90 of 100 runs (ours: 96–100; value ± 1.96·se: 94 and 70)."""
    covered, means, truth = coverage(logging, n)
    assert all(c >= 90 for c in covered.values()), covered
    # unbiased on average, and the three agree
    assert all(abs(m / truth - 1) < 0.06 for m in means.values()), (means, truth)
    assert abs(means["snips"] - means["ips"]) < 0.03 * truth and abs(means["dr"] - means["ips"]) < 0.03 * truth


def test_no_click_gives_an_interval_from_zero():
    pos = np.repeat([1, 2, 3], 100)
    item = np.arange(300) % ITEMS
    estimates, _ = off_policy(item, pos, np.zeros(300), np.full(300, 1 / ITEMS),
                              Target("t", "t", table=np.full((POSITIONS + 1, ITEMS), 1 / ITEMS)), ITEMS, POSITIONS)
    for e in estimates.values():
        assert e["value"] == e["ci_low"] == 0 and 0.005 < e["ci_high"] < 0.05  # ≈ 3.7 clicks in 300 rows


# ----------------------------------------------------------------------------------------- the public logs, via CLI

@pytest.mark.parametrize("campaign", ["all", "men"])
def test_random_log_estimates_bts(campaign):
    proc = run("--log", str(OBD["random", campaign]), "--format", "obd", "--target-log", str(OBD["bts", campaign]),
               "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["n"] == 10_000 and set(result["estimates"]) == {"ips", "snips", "dr"}
    assert all(set(e) >= {"value", "ci_low", "ci_high"} for e in result["estimates"].values())
    assert result["on_policy"] == pytest.approx(ON_POLICY[campaign])
    for name, e in result["estimates"].items():
        assert e["ci_low"] < e["value"] < e["ci_high"], name
        assert e["ci_low"] <= result["on_policy"] <= e["ci_high"], (name, e)


def test_model_target_runs_and_says_what_it_evaluated():
    proc = run("--log", str(OBD["random", "all"]), "--format", "obd", "--target-model", "popularity", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["n"] == 5_000 and result["on_policy"] is None and "second half" in result["evaluated_on"]
    # deterministic: the rows that carry weight are those where the logged item is the model's (1 in 80 here)
    assert 20 < result["rows_with_weight"] < 150 and result["max_weight"] == pytest.approx(80)
    assert all(0 <= e["ci_low"] <= e["value"] <= e["ci_high"] <= 1 for e in result["estimates"].values())
    text = run("--log", str(OBD["random", "men"]), "--format", "obd", "--target-model", "ctr")
    assert text.returncode == 0, text.stderr
    assert "SNIPS" in text.stdout and "second half" in text.stdout


def test_reverse_direction_has_heavy_weights_and_wider_intervals():
    bts, random = read_log(str(OBD["bts", "all"]), "obd"), read_log(str(OBD["random", "all"]), "obd")
    forward, reverse = evaluate(random, target_log=bts), evaluate(bts, target_log=random)
    assert reverse["max_weight"] > 10 * forward["max_weight"]
    assert reverse["effective_sample_size"] < forward["effective_sample_size"] / 3
    width = lambda r: r["estimates"]["ips"]["ci_high"] - r["estimates"]["ips"]["ci_low"]
    assert width(reverse) / reverse["on_policy"] > width(forward) / forward["on_policy"]


# --------------------------------------------------------------------------------------------------- bad input

def obd_rows(tmp_path, edit, name="bad.csv"):
    """The first 20 rows of the random `all` log, edited by `edit(frame)`, written as CSV; returns the path."""
    with gzip.open(OBD["random", "all"], "rt") as f:
        frame = pd.read_csv(io.StringIO("".join(f.readline() for _ in range(21))), dtype=str)
    frame = edit(frame)
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


def one_line_error(proc):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_missing_propensity_column_is_named(tmp_path):
    path = obd_rows(tmp_path, lambda f: f.drop(columns=["propensity_score"]))
    line = one_line_error(run("--log", path, "--format", "obd", "--target-model", "popularity"))
    assert path in line and "'propensity_score' missing" in line


def test_zero_propensity_names_its_line(tmp_path):
    def zero(frame):
        frame.loc[6, "propensity_score"] = "0"  # the 7th row: line 8 of the file (line 1 is the header)
        frame.loc[9, "propensity_score"] = "1.5"
        return frame
    path = obd_rows(tmp_path, zero)
    line = one_line_error(run("--log", path, "--format", "obd", "--target-log", str(OBD["bts", "all"])))
    assert f"{path} line 8: propensity_score is '0'" in line


def test_unknown_format_and_target_options(tmp_path):
    log = str(OBD["random", "men"])
    assert "unknown log format 'nope'" in one_line_error(run("--log", log, "--format", "nope", "--target-model",
                                                              "popularity"))
    both = one_line_error(run("--log", log, "--format", "obd", "--target-model", "popularity", "--target-log", log))
    neither = one_line_error(run("--log", log, "--format", "obd"))
    assert both == neither == "error: give exactly one of --target-log FILE and --target-model NAME"
    assert "unknown target model 'nope'" in one_line_error(run("--log", log, "--format", "obd", "--target-model",
                                                                "nope"))


@pytest.mark.parametrize("column,value,message", [
    ("click", "2", "click is '2', not 0 or 1"),
    ("position", "0", "position is '0', not a positive integer"),
    ("position", "1.5", "position is '1.5', not a positive integer"),
    ("propensity_score", "", "propensity_score is missing"),
    ("propensity_score", "-0.1", "propensity_score is '-0.1', not a probability in (0, 1]"),
    ("timestamp", "yesterday", "timestamp is 'yesterday', not a timestamp"),
])
def test_bad_values_refuse_the_file_at_their_line(tmp_path, column, value, message):
    def bad(frame):
        frame.loc[3, column] = value
        return frame
    path = obd_rows(tmp_path, bad)
    with pytest.raises(HuaxiangError, match="^" + re.escape(f"{path} line 5: {message}")):
        read_log(path, "obd")


def test_empty_log_is_refused(tmp_path):
    path = obd_rows(tmp_path, lambda f: f.iloc[:0])
    with pytest.raises(HuaxiangError, match="no rows"):
        read_log(path, "obd")
    (tmp_path / "zero.csv").write_bytes(b"")
    with pytest.raises(HuaxiangError, match="zero.csv"):
        read_log(str(tmp_path / "zero.csv"), "exposures")


# ------------------------------------------------------------------------------------------------ exposures logs

def exposures(frame: pd.DataFrame) -> pd.DataFrame:
    """An OBD log as our exposures export (user_id from the hashed user features, ts from the timestamp)."""
    return pd.DataFrame({"request_id": [f"r{i}" for i in range(len(frame))],
                         "user_id": frame["user_feature_0"].str[:8], "item_id": "obd:" + frame["item_id"],
                         "position": frame["position"].astype(int), "propensity": frame["propensity_score"].astype(float),
                         "click": frame["click"].astype(int), "ts": pd.to_datetime(frame["timestamp"], utc=True),
                         "model": "random", "variant": "control"})


def test_exposures_csv_and_parquet_give_the_obd_estimates(tmp_path):
    frames = {p: pd.read_csv(OBD[p, "men"], dtype=str) for p in ("random", "bts")}
    expected = evaluate(read_log(str(OBD["random", "men"]), "obd"), target_log=read_log(str(OBD["bts", "men"]), "obd"))
    paths = {}
    for policy, frame in frames.items():
        paths[policy, "csv"] = tmp_path / f"{policy}.csv"
        exposures(frame).to_csv(paths[policy, "csv"], index=False)
        paths[policy, "parquet"] = tmp_path / f"{policy}.parquet"
        exposures(frame).to_parquet(paths[policy, "parquet"])
    for kind in ("csv", "parquet"):
        got = evaluate(read_log(str(paths["random", kind]), "exposures"),
                       target_log=read_log(str(paths["bts", kind]), "exposures"))
        assert got["on_policy"] == expected["on_policy"]
        for name in ("ips", "snips", "dr"):
            assert got["estimates"][name]["value"] == pytest.approx(expected["estimates"][name]["value"]), (kind, name)
    # ctr on exposures: the context is the user id
    model = evaluate(read_log(str(paths["random", "parquet"]), "exposures"), target_model="ctr")
    assert model["n"] == 5_000 and model["rows_with_weight"] > 0


def test_exposures_parquet_bad_row_and_missing_column(tmp_path):
    frame = exposures(pd.read_csv(OBD["random", "men"], dtype=str, nrows=30))
    frame.loc[11, "click"] = 3
    frame.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(HuaxiangError, match=r"bad\.parquet row 12: click is '3', not 0 or 1"):
        read_log(str(tmp_path / "bad.parquet"), "exposures")
    frame.drop(columns=["propensity"]).to_csv(tmp_path / "nop.csv", index=False)
    with pytest.raises(HuaxiangError, match=r"nop\.csv: column 'propensity' missing"):
        read_log(str(tmp_path / "nop.csv"), "exposures")
