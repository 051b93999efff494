"""Differential privacy for segment reports: the noise has the scale ε promises, CLV is clipped before summing,
and a private report withholds what it cannot protect."""
import duckdb
import numpy as np
import pytest

from huaxiang.errors import HuaxiangError
from huaxiang.privacy import pseudonym
from huaxiang.profile.scores import value_tiers
from huaxiang.profile.segment_report import _private


def test_count_noise_is_unbiased_with_the_scale_epsilon_sets():
    rows = [("a", "rule a", 1000), ("b", "rule b", 50)]
    eps = 1.0
    noisy = np.array([[s["size"] for s in _private(rows, [], eps, 100.0, seed)["segments"]] for seed in range(600)])
    err = noisy[:, 0] - 1000
    p = np.exp(-eps / 3)  # each histogram gets ε/3; two-sided geometric noise, variance 2p / (1 - p)²
    assert abs(err.mean()) < 0.6
    assert 0.85 < err.std() / np.sqrt(2 * p / (1 - p) ** 2) < 1.15
    assert (noisy != [1000, 50]).any(axis=1).mean() > 0.9  # noise is really added
    tight = np.array([_private(rows, [], 50.0, 100.0, seed)["segments"][0]["size"] for seed in range(200)])
    assert np.abs(tight - 1000).mean() < np.abs(err).mean() / 5  # a larger ε, less noise


def test_clv_is_clipped_before_it_is_summed():
    con = duckdb.connect()
    con.execute("CREATE TABLE profiles AS SELECT * FROM (VALUES ('u1', 'regular'), ('u2', 'regular')) t(user_id, segment)")
    con.execute("""CREATE TABLE scores AS SELECT * FROM (VALUES ('u1', 'clv', 5.0, '{"value_tier": "top"}'),
                   ('u2', 'clv', 1e9, '{"value_tier": "top"}')) t(user_id, kind, score, detail)""")
    assert value_tiers(con)[0]["mean_clv"] == pytest.approx((5 + 1e9) / 2)
    assert value_tiers(con, clv_cap=100.0)[0]["mean_clv"] == pytest.approx(52.5)
    cells = [_private([], value_tiers(con, 100.0), 10.0, 100.0, seed)["value_tiers"][0] for seed in range(100)]
    assert np.median([c["mean_clv"] for c in cells]) < 200  # the 1e9 outlier cannot leak through the mean


def test_a_private_report_says_so_and_withholds_rule_text():
    report = _private([("a", "monetary ≥ 123.45", 10)], [], 1.0, 100.0, 0)
    assert report["privacy"]["epsilon"] == 1.0 and "definition" not in report["segments"][0]
    for bad in (0.0, -1.0, 1e-9, 1e9):
        with pytest.raises(HuaxiangError, match="epsilon must be"):
            _private([], [], bad, 100.0, 0)


def test_a_pseudonym_keeps_the_tenant_and_hides_the_rest_of_the_id():
    key = b"k"
    p = pseudonym("shop:session:42", key)
    assert p.startswith("shop:u_") and "session" not in p and len(p) == len("shop:u_") + 20
    assert pseudonym("shop:session:42", key) == p and pseudonym("shop:session:43", key) != p
    assert pseudonym("42", key).startswith("u_") and pseudonym(None, key) is None
