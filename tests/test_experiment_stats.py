"""A/B experiments: assignment (sticky, proportional, independent across experiments, the same in every process)
and the statistics (intervals that cover the truth in ≥ 90 of 100 seeded simulations, uniform A/A p-values, the
sample-ratio-mismatch check, empty variants)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as st

from huaxiang.errors import HuaxiangError
from huaxiang.experiments.assign import bucket, new_salt, parse_split, variant_of, variants_of
from huaxiang.experiments.stats import (SRM_P_THRESHOLD, Z, experiment_report, lift, mean_metric, proportion,
                                        ratio_metric, srm_test)

IDS = [f"user{i}" for i in range(100_000)]

# ---------------------------------------------------------------------------------------------------- assignment


def test_pinned_bucket_value():
    # sha256(b"salt\x00user") begins ee636e347794429c: (that >> 11) / 2**53. A change of the hash breaks this.
    assert bucket("salt", "user") == (0xEE636E347794429C >> 11) / 2**53 == 0.9312046888440628
    assert bucket("", "") == 0.4304816492364817
    assert bucket("s", "用户") == bucket("s", "用户") != bucket("s", "用户 ")
    assert variant_of("salt", "user", parse_split(["control", "treatment"])) == "treatment"
    assert variant_of("salt", "user", parse_split(["a", "b"], [95, 5])) == "a"


def test_sticky_and_vectorised_agree():
    variants = parse_split(["control", "treatment", "other"], [2, 1, 1])
    ids = IDS[:2000] + ["", "shop:ünï", "a\x00b"]
    once = [variant_of("exp1", u, variants) for u in ids]
    assert once == [variant_of("exp1", u, variants) for u in ids]
    assert once == variants_of("exp1", ids, variants)
    points = np.array([bucket("exp1", u) for u in ids])
    assert ((points >= 0) & (points < 1)).all()


def test_split_proportions_on_100k_ids():
    variants = parse_split(["a", "b", "c"], [50, 30, 20])
    got = variants_of(new_salt(), IDS, variants)
    for name, share in variants:
        assert abs(got.count(name) / len(IDS) - share) < 0.01


def test_independent_across_experiments():
    split = parse_split(["control", "treatment"])
    first = np.array(variants_of("salt-one", IDS, split)) == "treatment"
    second = np.array(variants_of("salt-two", IDS, split)) == "treatment"
    table = [[np.sum(first & second), np.sum(first & ~second)], [np.sum(~first & second), np.sum(~first & ~second)]]
    assert st.chi2_contingency(table)[1] > 0.001
    same_salt = np.array(variants_of("salt-one", IDS, split)) == "treatment"
    table = [[np.sum(first & same_salt), np.sum(first & ~same_salt)],
             [np.sum(~first & same_salt), np.sum(~first & ~same_salt)]]
    assert st.chi2_contingency(table)[1] < 1e-100  # the check can fail: one salt twice is fully dependent


def test_same_variants_in_another_process():
    ids = IDS[:3000] + ["用户", "t:ü"]
    variants = parse_split(["control", "treatment"], [70, 30])
    code = ("import json, sys; from huaxiang.experiments.assign import variants_of; "
            "a = json.load(sys.stdin); print(json.dumps(variants_of(a['salt'], a['ids'], a['variants'])))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps({"salt": "3f2a", "ids": ids,
                                                                         "variants": variants}),
                         capture_output=True, text=True, check=True, env=env).stdout
    assert json.loads(out) == variants_of("3f2a", ids, variants)


def test_new_salt():
    salts = {new_salt() for _ in range(50)}
    assert len(salts) == 50
    assert all(len(s) == 16 and int(s, 16) >= 0 for s in salts)


def test_parse_split():
    assert parse_split(["a", "b"]) == [("a", 0.5), ("b", 0.5)]
    assert parse_split(["x", "y", "z"], [50, 25, 25]) == [("x", 0.5), ("y", 0.25), ("z", 0.25)]
    assert parse_split(["a", "b"], [0.1, 0.3]) == [("a", pytest.approx(0.25)), ("b", pytest.approx(0.75))]


@pytest.mark.parametrize("variants, split, named", [
    (["a"], None, "'a'"),
    ([], None, "at least 2"),
    (["a", "a"], None, "'a'"),
    (["a", " "], None, "empty"),
    (["a", "b"], [50, -50], "-50"),
    (["a", "b"], [50, 0], "0"),
    (["a", "b"], [50, float("nan")], "nan"),
    (["a", "b"], ["x", 1], "'x'"),
    (["a", "b"], [100], "[100]"),
    (["a", "b"], [40, 30, 30], "[40, 30, 30]"),
])
def test_parse_split_errors(variants, split, named):
    with pytest.raises(HuaxiangError) as e:
        parse_split(variants, split)
    message = str(e.value)
    assert named in message and "\n" not in message


# -------------------------------------------------------------------------------------------- estimators, by hand


def test_ratio_metric_equals_the_linearised_form():
    rng = np.random.default_rng(1)
    n = rng.integers(1, 20, 500)
    c = rng.binomial(n, rng.beta(1, 9, 500))
    got = ratio_metric(c, n)
    r = c.sum() / n.sum()
    # Var(R) = Σ(c_u − R n_u)² / (N (N−1) n̄²): the same first-order variance written through residuals
    se = np.sqrt(np.sum((c - r * n) ** 2) / (500 * 499 * n.mean() ** 2))
    assert got["value"] == pytest.approx(r)
    assert got["se"] == pytest.approx(se, rel=1e-9)
    assert got["ci_low"] == pytest.approx(r - Z * se) and got["ci_high"] == pytest.approx(r + Z * se)


def test_proportion_wilson_and_mean():
    zero = proportion(0, 10)
    assert zero["value"] == 0 and zero["ci_low"] == 0
    assert zero["ci_high"] == pytest.approx(Z**2 / (10 + Z**2))  # Wilson's upper bound at 0 successes
    half = proportion(50, 100)
    assert half["ci_low"] == pytest.approx(1 - half["ci_high"]) and half["se"] == pytest.approx(0.05)
    m = mean_metric(np.array([0.0, 0.0, 0.0, 10.0]))
    assert m["value"] == 2.5 and m["se"] == pytest.approx(np.std([0, 0, 0, 10], ddof=1) / 2)
    assert m["normal_ok"] is False  # 4 users with skewness 1.15: 4 < 25·1.33


def test_lift_undefined_cases():
    assert lift({"value": 0.2, "se": 0.01}, {"value": 0.0, "se": 0.0})["lift"] is None
    assert lift({"value": None, "se": None}, {"value": 0.1, "se": 0.01})["p_value"] is None
    both_zero = lift({"value": 0.0, "se": 0.0}, {"value": 0.0, "se": 0.0})
    assert both_zero["p_value"] == 1.0 and both_zero["ci_low"] is None
    same = lift({"value": 0.1, "se": 0.01}, {"value": 0.1, "se": 0.01})
    assert same["lift"] == 0 and same["p_value"] == 1.0 and same["ci_low"] < 0 < same["ci_high"]


# ------------------------------------------------------------------------------------------- coverage, simulated

CTR = {"control": 0.10, "treatment": 0.11}
CONV = {"control": 0.05, "treatment": 0.06}
VALUE = {"control": 20.0, "treatment": 21.0}  # mean revenue of a buyer
SIGMA = 1.0  # log-normal spread of a buyer's revenue: heavy-ish right tail


def simulate(rng, arm, users):
    """Users with heterogeneous impression counts and a user-level click propensity (so a user's clicks are
    correlated), buying more often when they click more; truths: CTR[arm], CONV[arm], CONV[arm]·VALUE[arm]."""
    impressions = 1 + rng.poisson(rng.gamma(1.5, 4.0, users))
    propensity = rng.beta(0.5 * CTR[arm] / 0.1, 0.5 * (1 - CTR[arm]) / 0.1, users)  # mean CTR[arm], concentration 5
    clicks = rng.binomial(impressions, propensity)
    buyer = (rng.random(users) < CONV[arm] * propensity / CTR[arm]).astype(np.int8)  # mean CONV[arm]
    revenue = buyer * rng.lognormal(np.log(VALUE[arm]) - SIGMA**2 / 2, SIGMA, users)
    return {"impressions": impressions, "clicks": clicks, "buyer": buyer, "revenue": revenue}


def truth(arm, metric):
    return {"ctr": CTR, "conversion": CONV}[metric][arm] if metric != "revenue_per_user" else CONV[arm] * VALUE[arm]


def covers(est, value, low="ci_low", high="ci_high"):
    return est[low] <= value <= est[high]


def test_intervals_cover_the_truth():
    rng = np.random.default_rng(20240521)
    metrics = ("ctr", "conversion", "revenue_per_user")
    hits = {(arm, m): 0 for arm in CTR for m in metrics} | {("lift", m): 0 for m in metrics}
    naive = 0
    for _ in range(100):
        data = {arm: simulate(rng, arm, 3000) for arm in CTR}
        report = experiment_report(data, {"control": 50, "treatment": 50}, "control")
        for m in metrics:
            for arm in CTR:
                hits[arm, m] += covers(report["variants"][arm][m], truth(arm, m))
            true_lift = truth("treatment", m) / truth("control", m) - 1
            hits["lift", m] += covers(report["comparisons"]["treatment"][m], true_lift)
        # the per-impression binomial interval ignores that a user's clicks are correlated
        ctr = report["variants"]["control"]["ctr"]["value"]
        n = report["variants"]["control"]["impressions"]
        naive += abs(ctr - CTR["control"]) <= Z * np.sqrt(ctr * (1 - ctr) / n)
    assert min(hits.values()) >= 90, hits
    assert naive < 85, naive  # so the simulation does test the user-level variance


def test_aa_p_values_are_uniform():
    rng = np.random.default_rng(7)
    p = {m: [] for m in ("ctr", "conversion", "revenue_per_user")}
    for _ in range(200):
        data = {arm: simulate(rng, "control", 1500) for arm in ("a", "b")}
        report = experiment_report(data, {"a": 1, "b": 1}, "a")
        for m in p:
            p[m].append(report["comparisons"]["b"][m]["p_value"])
    for m, values in p.items():
        values = np.array(values)
        assert 0.01 <= np.mean(values < 0.05) <= 0.10, (m, np.mean(values < 0.05))
        assert 0.40 <= np.mean(values < 0.5) <= 0.60, (m, np.mean(values < 0.5))
        assert st.kstest(values, "uniform").pvalue > 0.001, m


def test_a_real_difference_is_found():
    rng = np.random.default_rng(3)
    data = {arm: simulate(rng, arm, 40_000) for arm in CTR}
    cmp = experiment_report(data, {"control": 1, "treatment": 1}, "control")["comparisons"]["treatment"]
    assert cmp["ctr"]["p_value"] < 0.001 and cmp["ctr"]["ci_low"] > 0
    assert cmp["ctr"]["lift"] == pytest.approx(0.1, abs=0.04)


# --------------------------------------------------------------------------------------- SRM, guardrail, edges


def test_srm():
    assert srm_test({"a": 50_000, "b": 50_000}, {"a": 50, "b": 50})["flag"] is False
    broken = srm_test({"a": 51_000, "b": 49_000}, {"a": 50, "b": 50})
    assert broken["flag"] is True and broken["p_value"] < SRM_P_THRESHOLD and broken["chi2"] == pytest.approx(40)
    three = {"a": 50, "b": 25, "c": 25}
    fine = srm_test({"a": 50_000, "b": 25_000, "c": 25_000}, three)
    assert fine["flag"] is False and fine["df"] == 2 and fine["p_value"] == pytest.approx(1.0)
    assert srm_test({"a": 50_000, "b": 26_000, "c": 24_000}, three)["flag"] is True
    assert srm_test({"a": 50_400, "b": 24_800, "c": 24_800}, three)["flag"] is False  # p ≈ 0.04: noise, not broken


def test_report_srm_and_latency_guardrail():
    rng = np.random.default_rng(5)
    data = {}
    for arm, users, slow in (("control", 51_000, 1.0), ("treatment", 49_000, 1.5)):
        data[arm] = simulate(rng, "control", users)
        data[arm]["latency_ms"] = slow * rng.exponential(10.0, 5 * users)
    report = experiment_report(data, {"control": 50, "treatment": 50}, "control")
    assert report["srm"]["flag"] is True
    lat = report["variants"]["treatment"]["latency"]
    assert lat["requests"] == 5 * 49_000
    assert lat["p99_ms"] == pytest.approx(15 * np.log(100), rel=0.05) and lat["p50_ms"] < lat["p99_ms"]
    assert report["comparisons"]["treatment"]["p99_ratio"] == pytest.approx(1.5, rel=0.06)


def test_empty_variant_and_json():
    rng = np.random.default_rng(11)
    data = {"control": simulate(rng, "control", 500), "empty": {}}
    report = experiment_report(data, {"control": 1, "empty": 1, "absent": 1}, "control")
    json.dumps(report, allow_nan=False)  # plain types only, no NaN
    for v in ("empty", "absent"):
        m = report["variants"][v]
        assert m["exposed_users"] == m["impressions"] == m["buyers"] == 0 and m["revenue"] == 0
        assert m["ctr"]["value"] is None and m["conversion"]["value"] is None and m["latency"]["p99_ms"] is None
        assert all(x is None for x in report["comparisons"][v]["ctr"].values())
        assert report["comparisons"][v]["p99_ratio"] is None
    assert report["srm"]["flag"] is True
    no_control = experiment_report({"t": simulate(rng, "control", 10)}, {"c": 1, "t": 1}, "c")
    json.dumps(no_control, allow_nan=False)
    assert no_control["comparisons"]["t"]["ctr"]["lift"] is None
    one_user = experiment_report({"c": simulate(rng, "control", 1), "t": simulate(rng, "control", 1)},
                                 {"c": 1, "t": 1}, "c")
    json.dumps(one_user, allow_nan=False)
    assert one_user["variants"]["c"]["ctr"]["ci_low"] is None and one_user["comparisons"]["t"]["ctr"]["p_value"] is None
    types = {type(x) for x in _leaves(report)}
    assert types <= {int, float, bool, str, type(None)}, types


def _leaves(x):
    if isinstance(x, dict):
        for v in x.values():
            yield from _leaves(v)
    else:
        yield x


@pytest.mark.parametrize("data, split, control, named", [
    ({"c": {"impressions": [1, 0], "clicks": [0, 0], "buyer": [0, 0], "revenue": [0, 0]}}, {"c": 1, "t": 1}, "c",
     "impressions"),
    ({"c": {"impressions": [1, 2], "clicks": [0], "buyer": [0, 0], "revenue": [0, 0]}}, {"c": 1, "t": 1}, "c",
     "clicks"),
    ({"c": {"impressions": [1], "clicks": [0], "buyer": [2], "revenue": [0]}}, {"c": 1, "t": 1}, "c", "buyer"),
    ({"c": {"impressions": [1], "clicks": [0], "buyer": [0], "revenue": [-1]}}, {"c": 1, "t": 1}, "c", "revenue"),
    ({"c": {"impressions": [1], "clicks": [0], "buyer": [0], "revenue": [float("nan")]}}, {"c": 1, "t": 1}, "c",
     "revenue"),
    ({"c": {"impressions": [1], "click": [0]}}, {"c": 1, "t": 1}, "c", "click"),
    ({}, {"c": 1, "t": 1}, "x", "'x'"),
    ({}, {"c": 1, "t": -1}, "c", "-1"),
    ({"z": {}}, {"c": 1, "t": 1}, "c", "'z'"),
])
def test_report_errors(data, split, control, named):
    with pytest.raises(HuaxiangError) as e:
        experiment_report(data, split, control)
    assert named in str(e.value) and "\n" not in str(e.value)
