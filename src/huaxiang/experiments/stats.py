"""What an A/B experiment's outcome says: per-variant metrics with 95% intervals, the lift of each variant against the
control with its interval and p-value, the sample-ratio-mismatch check and the latency guardrail.

The unit of randomisation is the user (assignment hashes the user id), so the unit of analysis is the user too: the
input per variant is one entry per exposed user, and every variance below treats users as the independent draws.
Impressions and clicks of one user are not independent (a user who likes the recommendations clicks many of them),
so a per-impression binomial interval for the CTR would be too narrow; the delta method over users is not.

Per variant (N exposed users; for user u: n_u impressions, c_u clicks, b_u ∈ {0, 1} bought, r_u revenue):
  CTR = Σc/Σn = c̄/n̄, a ratio of two means. Delta method (first-order Taylor of c̄/n̄ around its limit):
      Var(CTR) ≈ (s_c² − 2·CTR·s_cn + CTR²·s_n²) / (N·n̄²)
  with s_c², s_n², s_cn the sample variances and covariance over users (ddof 1); 95% CI = CTR ± 1.96·se.
  conversion = Σb/N, a proportion: Wilson score interval; se = √(p(1−p)/N) for the lift and the test.
  revenue per exposed user = r̄, a mean: r̄ ± 1.96·s_r/√N (central limit theorem over users). Revenue is skewed (most
      users buy nothing, a few buy much), so the report also gives the sample skewness G and Cochran's rule of thumb
      `normal_ok` = N > 25·G²; below it the normal interval is not to be trusted (collect more users).
Against the control (estimates t and c, independent because the arms hold disjoint users):
  lift = t/c − 1. Its interval is built on the log scale, where the ratio is closer to normal:
      Var(log t/c) ≈ (se_t/t)² + (se_c/c)²,  95% CI = exp(log(t/c) ± 1.96·√Var) − 1   (none when t or c is 0)
  p-value: two-sided z-test of t − c, z = (t − c)/√(se_t² + se_c²) — no correction for several treatments.
Sample-ratio mismatch: Pearson's chi-square goodness of fit of exposed users per variant against the configured
  split (expected_v = N_total·w_v, k − 1 degrees of freedom); flagged when p < SRM_P_THRESHOLD. A flag means the
  assignment or the logging is broken (bots, crashes, a variant that fails to log), and no lift should be believed.
Latency guardrail: p50 and p99 of the per-request latencies of each variant, and p99 treatment / p99 control.

Assumptions: users are independent and each stays in one variant; N is large enough for the normal approximations
(hundreds of users per arm; the intervals are first-order); metrics are fixed in advance (no peeking at p-values
as data arrive — a p-value is valid for one look at a sample size chosen beforehand).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats as _st

from ..errors import HuaxiangError

CONFIDENCE = 0.95
Z = float(_st.norm.ppf(0.5 + CONFIDENCE / 2))  # 1.959963984540054
SRM_P_THRESHOLD = 0.001  # a split is flagged as broken when the chi-square p-value is below this
COCHRAN_FACTOR = 25.0  # the normal interval of a mean is trusted when N > COCHRAN_FACTOR · skewness²
USER_FIELDS = ("impressions", "clicks", "buyer", "revenue")  # one entry per exposed user, equal lengths
LATENCY_FIELD = "latency_ms"  # one entry per request, any length


def _f(x: Any) -> float | None:
    """A JSON-ready float: None for None, NaN or infinity."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def estimate(value: float | None, se: float | None, low: float | None = None, high: float | None = None) -> dict:
    """{"value", "se", "ci_low", "ci_high"}; the interval is value ± Z·se unless given."""
    if value is not None and se is not None and low is None and high is None:
        low, high = value - Z * se, value + Z * se
    return {"value": _f(value), "se": _f(se), "ci_low": _f(low), "ci_high": _f(high)}


def ratio_metric(num: np.ndarray, den: np.ndarray) -> dict:
    """Σnum/Σden over users with its delta-method standard error and 95% interval (users are the units)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    n = num.size
    total = den.sum()
    if n == 0 or total <= 0:
        return estimate(None, None)
    r = num.sum() / total
    if n < 2:
        return estimate(r, None)
    mn, md = num.mean(), den.mean()
    dn, dd = num - mn, den - md
    s_nn = dn @ dn / (n - 1)
    s_dd = dd @ dd / (n - 1)
    s_nd = dn @ dd / (n - 1)
    var = max(s_nn - 2 * r * s_nd + r * r * s_dd, 0.0) / (n * md * md)
    return estimate(r, math.sqrt(var))


def proportion(successes: int, n: int) -> dict:
    """successes/n with its standard error √(p(1−p)/n) and the Wilson score 95% interval."""
    if n <= 0:
        return estimate(None, None)
    p = successes / n
    z2 = Z * Z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return estimate(p, math.sqrt(p * (1 - p) / n), max(centre - half, 0.0), min(centre + half, 1.0))


def mean_metric(x: np.ndarray) -> dict:
    """The mean over users with its normal 95% interval, the sample skewness and Cochran's `normal_ok` (N > 25·G²)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    if n == 0:
        return {**estimate(None, None), "skewness": None, "normal_ok": False}
    m = x.mean()
    if n < 2:
        return {**estimate(m, None), "skewness": None, "normal_ok": False}
    d = x - m
    m2 = d @ d / n
    sd = math.sqrt(m2 * n / (n - 1))
    skew = float(np.mean(d * d * d) / m2 ** 1.5) if m2 > 0 else 0.0
    return {**estimate(m, sd / math.sqrt(n)), "skewness": _f(skew), "normal_ok": bool(n > COCHRAN_FACTOR * skew * skew)}


def lift(treatment: dict, control: dict) -> dict:
    """The relative lift t/c − 1 of two independent estimates ({"value", "se"}), its 95% interval on the log scale
    and the two-sided z-test p-value of t − c. Fields are None where undefined (an empty arm, c = 0, no se)."""
    t, c = treatment.get("value"), control.get("value")
    st, sc = treatment.get("se"), control.get("se")
    out = {"lift": None, "ci_low": None, "ci_high": None, "difference": None, "p_value": None}
    if t is None or c is None:
        return out
    out["difference"] = _f(t - c)
    if c > 0:
        out["lift"] = _f(t / c - 1)
    if st is None or sc is None:
        return out
    se_diff = math.sqrt(st * st + sc * sc)
    if se_diff > 0:
        out["p_value"] = _f(2 * _st.norm.sf(abs(t - c) / se_diff))
    elif t == c:
        out["p_value"] = 1.0
    if t > 0 and c > 0:
        half = Z * math.sqrt((st / t) ** 2 + (sc / c) ** 2)
        log_ratio = math.log(t / c)
        out["ci_low"] = _f(math.expm1(log_ratio - half))
        out["ci_high"] = _f(math.expm1(log_ratio + half))
    return out


def srm_test(observed: dict[str, int], split: dict[str, float]) -> dict:
    """Pearson's chi-square goodness of fit of users per variant against the split; `flag` when p < 0.001."""
    names = list(split)
    counts = np.array([observed.get(v, 0) for v in names], dtype=np.float64)
    weights = np.array([split[v] for v in names], dtype=np.float64)
    weights = weights / weights.sum()
    total = counts.sum()
    out = {"chi2": None, "df": len(names) - 1, "p_value": None, "threshold": SRM_P_THRESHOLD, "flag": False,
           "observed": {v: int(k) for v, k in zip(names, counts)},
           "expected_share": {v: float(w) for v, w in zip(names, weights)}}
    if total <= 0 or len(names) < 2:
        return out
    expected = total * weights
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    p = float(_st.chi2.sf(chi2, len(names) - 1))
    out.update(chi2=chi2, p_value=p, flag=bool(p < SRM_P_THRESHOLD))
    return out


def latency_summary(latency_ms: np.ndarray) -> dict:
    """Requests, p50 and p99 (ms, linear interpolation) of one variant's per-request latencies."""
    lat = np.asarray(latency_ms, dtype=np.float64)
    if lat.size == 0:
        return {"requests": 0, "p50_ms": None, "p99_ms": None}
    p50, p99 = np.percentile(lat, [50, 99])
    return {"requests": int(lat.size), "p50_ms": _f(p50), "p99_ms": _f(p99)}


def _arrays(name: str, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The variant's arrays checked: absent ones are empty; per-user ones of equal length and valid values."""
    unknown = set(data) - set(USER_FIELDS) - {LATENCY_FIELD}
    if unknown:
        raise HuaxiangError(f"variant {name!r}: unknown field(s) {sorted(unknown)}; expected "
                            f"{list(USER_FIELDS) + [LATENCY_FIELD]}")
    out = {}
    for field in (*USER_FIELDS, LATENCY_FIELD):
        try:
            a = np.asarray(data.get(field, ()), dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise HuaxiangError(f"variant {name!r}: {field} is not numeric") from None
        if not np.isfinite(a).all():
            raise HuaxiangError(f"variant {name!r}: {field} has NaN or infinite values")
        out[field] = a
    sizes = {field: out[field].size for field in USER_FIELDS}
    n = sizes["impressions"]
    for field, size in sizes.items():
        if size != n:
            raise HuaxiangError(f"variant {name!r}: {field} has {size} users, impressions has {n}")
    checks = (("impressions", out["impressions"] >= 1, "≥ 1"), ("clicks", out["clicks"] >= 0, "≥ 0"),
              ("buyer", (out["buyer"] == 0) | (out["buyer"] == 1), "0 or 1"),
              ("revenue", out["revenue"] >= 0, "≥ 0"), (LATENCY_FIELD, out[LATENCY_FIELD] >= 0, "≥ 0"))
    for field, ok, rule in checks:
        if not ok.all():
            bad = out[field][~ok][0]
            raise HuaxiangError(f"variant {name!r}: {field} must be {rule} per entry, found {bad:g}")
    return out


def variant_metrics(name: str, data: dict[str, np.ndarray]) -> dict:
    """One variant's counts, CTR (delta method), conversion (Wilson), revenue per user (normal) and latency."""
    a = _arrays(name, data)
    users = int(a["impressions"].size)
    buyers = int(a["buyer"].sum())
    return {
        "exposed_users": users,
        "impressions": int(a["impressions"].sum()),
        "clicks": int(a["clicks"].sum()),
        "buyers": buyers,
        "revenue": float(a["revenue"].sum()),
        "ctr": ratio_metric(a["clicks"], a["impressions"]),
        "conversion": proportion(buyers, users),
        "revenue_per_user": mean_metric(a["revenue"]),
        "latency": latency_summary(a[LATENCY_FIELD]),
    }


METRICS = ("ctr", "conversion", "revenue_per_user")


def experiment_report(per_variant: dict[str, dict[str, np.ndarray]], split: dict[str, float], control: str) -> dict:
    """The experiment's report as a JSON-ready dict (plain floats, ints, bools, None).

    per_variant: variant -> {"impressions", "clicks", "buyer", "revenue": one entry per exposed user;
    "latency_ms": one per request}; a variant of the split that is absent or empty reports zeros and None.
    split: variant -> configured weight (any positive scale); control: the variant the others are compared with.
    Returns {"control", "confidence", "variants": {v: metrics}, "comparisons": {v: {metric: lift, "p99_ratio"}},
    "srm": srm_test(...)}, variants in the split's order."""
    if not split:
        raise HuaxiangError("the experiment's split is empty")
    weights = {}
    for v, w in split.items():
        try:
            weights[v] = float(w)
        except (TypeError, ValueError):
            raise HuaxiangError(f"split weight {w!r} of variant {v!r} is not a number") from None
        if not (math.isfinite(weights[v]) and weights[v] > 0):
            raise HuaxiangError(f"split weight {w!r} of variant {v!r} must be a positive number")
    split = weights
    if control not in split:
        raise HuaxiangError(f"control {control!r} is not a variant of the split {list(split)}")
    extra = [v for v in per_variant if v not in split]
    if extra:
        raise HuaxiangError(f"variant(s) {extra} have data but are not in the split {list(split)}")
    total = math.fsum(split.values())
    variants = {v: {"split": split[v] / total, **variant_metrics(v, per_variant.get(v, {}))} for v in split}
    base = variants[control]
    comparisons = {}
    for v, m in variants.items():
        if v == control:
            continue
        p99_t, p99_c = m["latency"]["p99_ms"], base["latency"]["p99_ms"]
        comparisons[v] = {**{k: lift(m[k], base[k]) for k in METRICS},
                          "p99_ratio": _f(p99_t / p99_c) if p99_t is not None and p99_c else None}
    srm = srm_test({v: m["exposed_users"] for v, m in variants.items()}, split)
    return {"control": control, "confidence": CONFIDENCE, "variants": variants, "comparisons": comparisons,
            "srm": srm}


def interval_text(m: dict, spec: str) -> str:
    """An estimate as text: "value [low, high]" with the format `spec` (e.g. ".2%"), "–" when it has no value."""
    if m.get("value") is None:
        return "–"
    ci = f" [{format(m['ci_low'], spec)}, {format(m['ci_high'], spec)}]" if m.get("ci_low") is not None else ""
    return format(m["value"], spec) + ci
