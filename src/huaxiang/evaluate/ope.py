"""Off-policy evaluation (OPE): the click-through rate a target policy would have had, estimated from a log of what
another policy (the logging policy) showed, with the probability it had of showing it (its propensity).

A log row is one shown item: (context x, position k, item a, click r ∈ {0, 1}, propensity p = π_b(a | x, k)).
The target policy gives π_e(a | x, k) for every item; its value is V = E[Σ_a π_e(a | x, k) · P(click | x, k, a)],
the expected CTR per shown row. With the importance weight w = π_e(a | x, k) / p of each logged row:

  IPS    V = mean(w·r)
  SNIPS  V = Σw·r / Σw                        (self-normalised: ratio of two means)
  DR     V = mean(Σ_a π_e(a | x, k)·q̂(a, k) + w·(r − q̂(a_logged, k)))
         q̂(a, k) = θ_a·β_k, a reward model fitted with cross-fitting (the rows are split into 2 seeded folds, each
         fold's q̂ is fitted on the other fold, plus the training half for a model target): β_k is position k's CTR
         over the overall CTR μ, θ_a the item's clicks over its position-adjusted exposure Σβ_k, both shrunk to μ by
         empirical Bayes (gamma–Poisson, the prior's spread by the method of moments; no tuned constant).

95% intervals. Clicks are rare (0.4%: a 10,000-row log holds ~40), and every estimate is a constant plus a weighted
count of clicks Σ c_i·r_i (IPS: c = w/n; SNIPS: c = w/Σw; DR: IPS's count plus a constant): skewed to the right, and
with unequal weights the heavy clicks that did not happen are missing from the sample variance, so a normal interval
misses high. Each interval is a gamma interval for a weighted count of rare events (Fay & Feuer 1997), as Garwood's
exact Poisson interval is for an unweighted one:
  low  = the α/2 quantile of the gamma law with mean y and variance v,
  high = the 1 − α/2 quantile of the gamma law with mean y + s and variance v + s²,
where y is the click part of the estimate, v the estimate's variance (IPS and DR: the sample variance of the per-row
terms over n; SNIPS: the delta method, Σ(w·(r − V))²/(Σw)²), and s the size of one more click: Σc²q̂/Σcq̂ over the
rows (each row's weight, weighted by its expected share of the variance, with q̂ the cross-fitted reward model) —
Fay & Feuer take the largest weight, which is far too wide when a few propensities are tiny. The interval is shifted
by DR's constant part and clipped to [0, 1]; with no click, it is [0, −ln(α/2)·s]. Coverage on seeded synthetic
logs with a known truth and OBD-like rare clicks (benchmarks/ope_obd.py, tests/test_ope.py): 93–99%, where value ±
1.96·se covers 69–91%. The variance is first order: the uncertainty of q̂ and of a --target-log's empirical shares is
not included (small against the click noise: on the public data, the shares' sampling adds a few per cent
to the standard error at most).

Assumptions: (1) unconfoundedness — the logged propensity is the probability the logging policy really had of
showing that item at that position in that context (nothing else it looked at influences clicks); (2) overlap —
π_e(a | x, k) > 0 only where p > 0 (items the logging policy never shows cannot be evaluated: IPS and SNIPS count
them as no clicks, DR as q̂; `support_gap` reports the target's share of such rows); (3) position-wise independence —
a click at position k depends on the item at k (and the context), not on the items beside it, so the rows of one
slate are evaluated separately; (4) rows are independent (OBD has no user id to cluster by; a user who clicks often
makes the intervals too narrow); (5) stationarity — click probabilities do not drift over the log's time span, so
an adaptive policy (BTS) is evaluated as its average over the log, and a model's second half is like its first.

Target policies: another log's empirical item shares per position (context-free, as the Open Bandit Dataset's
Bernoulli Thompson Sampling and uniform-random policies are), or one of our models fitted on the first half of the
log (by time) and evaluated on the second: `popularity` (items by shrunk CTR; position k shows the k-th) or `ctr`
(per context: the mean over the context features of the item's CTR among users with that feature value, shrunk to
the item's CTR by empirical Bayes; position k shows that context's k-th item). Both are deterministic (π_e ∈ {0, 1}),
so only rows where the logged item is the one the model would show carry weight: expect wide intervals.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.special import betaincinv, gammaincinv

from ..errors import HuaxiangError

FORMATS = ("obd", "exposures")
TARGET_MODELS = ("popularity", "ctr")
CONFIDENCE = 0.95
FOLDS = 2  # cross-fitting folds of the reward model
SEED = 0  # the folds' shuffle
# the columns of each format: ours (item_id, position, click, propensity, ts) -> the file's
COLUMNS = {"obd": {"item_id": "item_id", "position": "position", "click": "click", "propensity": "propensity_score",
                   "ts": "timestamp"},
           "exposures": {"item_id": "item_id", "position": "position", "click": "click", "propensity": "propensity",
                         "ts": "ts"}}
OPTIONAL = ("request_id", "ts", "model", "variant")  # exposures' optional columns (kept; ts orders the halves)
REQUIRED = {"obd": ("timestamp", "item_id", "position", "click", "propensity_score"),
            "exposures": ("user_id", "item_id", "position", "propensity", "click")}


@dataclass
class Log:
    """A validated log: one row per shown item, in file order."""
    path: str
    fmt: str
    item: np.ndarray  # item ids as text
    position: np.ndarray  # int64, ≥ 1
    click: np.ndarray  # int64, 0 / 1
    propensity: np.ndarray  # float64, (0, 1]
    ts: pd.Series | None  # UTC timestamps (None: the exposures file has no ts column)
    context: pd.DataFrame = field(default_factory=pd.DataFrame)  # the context features (text), one column each

    def __len__(self) -> int:
        return len(self.item)

    def take(self, rows: np.ndarray) -> "Log":
        return Log(self.path, self.fmt, self.item[rows], self.position[rows], self.click[rows], self.propensity[rows],
                   None if self.ts is None else self.ts.iloc[rows].reset_index(drop=True),
                   self.context.iloc[rows].reset_index(drop=True))


# ---------------------------------------------------------------------------------------------------------- reading

def _is_parquet(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PAR1"


def read_log(path: str, fmt: str) -> Log:
    """Reads and validates a log: `obd` (Open Bandit Dataset CSV, .gz ok; the unnamed index column is ignored) or
    `exposures` (CSV or Parquet: user_id, item_id, position, propensity, click; optional request_id, ts, model,
    variant). A missing column, an empty log or any bad value (the first one's line is named) is a HuaxiangError:
    an estimate over silently dropped rows would be wrong."""
    if fmt not in FORMATS:
        raise HuaxiangError(f"unknown log format {fmt!r}: use one of {', '.join(FORMATS)}")
    try:
        parquet = _is_parquet(path)
        if parquet:
            import pyarrow.parquet as pq
            frame = pq.read_table(path).to_pandas()
            frame = frame.astype({c: "string" for c in frame.columns})
        else:
            header = pd.read_csv(path, nrows=0).columns
            wanted = [c for c in header if c in OPTIONAL or c in REQUIRED[fmt] or c.startswith("user_feature_")]
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], skip_blank_lines=False,
                                usecols=wanted)
    except FileNotFoundError:
        raise HuaxiangError(f"log not found: {path}") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        if isinstance(exc, (IsADirectoryError, PermissionError)):
            raise
        raise HuaxiangError(f"{path}: not a readable {fmt} log ({str(exc).strip().splitlines()[0]})") from None
    frame = frame.drop(columns=[c for c in frame.columns if c.startswith("Unnamed:")])
    missing = [c for c in REQUIRED[fmt] if c not in frame.columns]
    if missing:
        raise HuaxiangError(f"{path}: column {missing[0]!r} missing (a {fmt} log needs {', '.join(REQUIRED[fmt])})")
    if frame.empty:
        raise HuaxiangError(f"{path}: no rows (an empty log)")
    where = (lambda i: f"row {i + 1}") if parquet else (lambda i: f"line {i + 2}")  # line 1 is the header
    cols = COLUMNS[fmt]
    checks = {}  # the file's column -> (bad-row mask, what it must be)
    item = frame[cols["item_id"]]
    checks[cols["item_id"]] = (item.isna().to_numpy() | (item.str.strip() == "").to_numpy(), "an item id")
    pos = pd.to_numeric(frame[cols["position"]], errors="coerce").to_numpy(dtype=float)
    checks[cols["position"]] = (~((pos >= 1) & (np.floor(pos) == pos)), "a positive integer")
    click = pd.to_numeric(frame[cols["click"]], errors="coerce").to_numpy(dtype=float)
    checks[cols["click"]] = (~np.isin(click, (0.0, 1.0)), "0 or 1")
    prop = pd.to_numeric(frame[cols["propensity"]], errors="coerce").to_numpy(dtype=float)
    checks[cols["propensity"]] = (~((prop > 0) & (prop <= 1)), "a probability in (0, 1]")
    ts = None
    if cols["ts"] in frame.columns:
        ts = pd.to_datetime(frame[cols["ts"]], errors="coerce", utc=True, format="mixed")
        checks[cols["ts"]] = (ts.isna().to_numpy(), "a timestamp")
    first = {c: int(np.argmax(bad)) for c, (bad, _) in checks.items() if bad.any()}
    if first:
        col = min(first, key=lambda c: (first[c], list(checks).index(c)))
        i = first[col]
        raw = frame[col].iloc[i]
        shown = "missing" if pd.isna(raw) or str(raw).strip() == "" else repr(str(raw))
        raise HuaxiangError(f"{path} {where(i)}: {col} is {shown}, not {checks[col][1]}")
    context_cols = ([c for c in frame.columns if c.startswith("user_feature_")] if fmt == "obd" else ["user_id"])
    context = frame[context_cols].fillna("").astype(str).reset_index(drop=True)
    return Log(path, fmt, item.str.strip().to_numpy(dtype=object), pos.astype(np.int64), click.astype(np.int64),
               prop, ts, context)


def first_half(log: Log) -> tuple[np.ndarray, np.ndarray]:
    """(rows of the first half by time, rows of the second half): a stable sort on the timestamp (file order without
    one); the first ⌊n/2⌋ rows train, the rest are evaluated."""
    order = (np.arange(len(log)) if log.ts is None
             else np.argsort(log.ts.to_numpy(dtype="datetime64[ns]"), kind="stable"))
    half = len(log) // 2
    if half == 0:
        raise HuaxiangError(f"{log.path}: {len(log)} row(s) — a model target needs at least 2 (half to fit it)")
    return np.sort(order[:half]), np.sort(order[half:])


# --------------------------------------------------------------------------------------------------- reward model

def shrunk_rates(clicks: np.ndarray, exposure: np.ndarray, prior: np.ndarray | float) -> np.ndarray:
    """Per-cell rates clicks/exposure shrunk toward `prior` (a rate per cell, or one) by empirical Bayes: the true
    rates are taken as gamma-distributed around the prior with a common relative variance τ² (estimated by the method
    of moments, E[(c − e·prior)²] = e·prior + τ²·(e·prior)²), giving (c + m·prior)/(e + m) with m = 1/(τ²·prior).
    τ² ≤ 0 (no more spread than chance gives) returns the prior."""
    clicks = np.asarray(clicks, float)
    exposure = np.asarray(exposure, float)
    prior = np.broadcast_to(np.asarray(prior, float), clicks.shape)
    expected = exposure * prior
    denom = float((expected ** 2).sum())
    tau2 = float((((clicks - expected) ** 2) - expected).sum()) / denom if denom > 0 else 0.0
    if not tau2 > 0:
        return prior.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        m = 1.0 / (tau2 * prior)
        rate = np.where(prior > 0, (clicks + m * prior) / (exposure + m), 0.0)
    return rate


@dataclass
class RewardModel:
    """q̂(a, k) = θ_a·β_k (see the module docstring)."""
    theta: np.ndarray  # per item code
    beta: np.ndarray  # per position (index = position; 0 unused)

    def table(self) -> np.ndarray:
        """q̂ as a [positions + 1, items] array."""
        return self.beta[:, None] * self.theta[None, :]


def fit_reward(item: np.ndarray, position: np.ndarray, click: np.ndarray, n_items: int, n_positions: int
               ) -> RewardModel:
    """Fits q̂ on rows (item codes, positions, clicks)."""
    mu = click.mean() if click.size else 0.0
    pos_n = np.bincount(position, minlength=n_positions + 1).astype(float)
    pos_c = np.bincount(position, weights=click, minlength=n_positions + 1)
    if mu <= 0:
        return RewardModel(np.zeros(n_items), np.ones(n_positions + 1))
    beta = shrunk_rates(pos_c[1:], pos_n[1:], mu) / mu
    beta = np.concatenate([[1.0], beta])
    exposure = np.bincount(item, weights=beta[position], minlength=n_items)
    clicks = np.bincount(item, weights=click, minlength=n_items)
    return RewardModel(shrunk_rates(clicks, exposure, mu), beta)


# ------------------------------------------------------------------------------------------------ target policies

@dataclass
class Target:
    """π_e on the evaluated rows: a context-free table [positions + 1, items] or one item code per row."""
    name: str
    note: str
    table: np.ndarray | None = None
    choice: np.ndarray | None = None
    on_policy: dict | None = None  # the target log's own CTR: {"value", "ci_low", "ci_high", "n", "clicks"}

    def prob_logged(self, item: np.ndarray, position: np.ndarray) -> np.ndarray:
        """π_e of each evaluated row's logged item at its position."""
        if self.table is not None:
            return self.table[position, item]
        return (self.choice == item).astype(float)

    def expected(self, q: np.ndarray, position: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Σ_a π_e(a | row)·q̂(a, k) for the evaluated rows `rows` (q: a [positions + 1, items] table)."""
        if self.table is not None:
            return (self.table * q).sum(axis=1)[position[rows]]
        return q[position[rows], self.choice[rows]]


def clicks_interval(clicks: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Clopper–Pearson interval of a CTR with `clicks` out of `n` rows."""
    a = 1 - confidence
    low = float(betaincinv(clicks, n - clicks + 1, a / 2)) if clicks > 0 else 0.0
    high = float(betaincinv(clicks + 1, n - clicks, 1 - a / 2)) if clicks < n else 1.0
    return low, high


def codes_of(values: np.ndarray, items: dict[str, int]) -> np.ndarray:
    """The item codes of item ids (every id must be in `items`)."""
    return pd.Index(list(items)).get_indexer(values).astype(np.int64)


def log_target(target: Log, items: dict[str, int], n_positions: int) -> Target:
    """π_e(a | k) = the share of `target`'s rows at position k that show item a."""
    codes = codes_of(target.item, items)
    pos_max = max(n_positions, int(target.position.max()))
    counts = np.zeros((pos_max + 1, len(items)))
    np.add.at(counts, (target.position, codes), 1.0)
    per_pos = counts.sum(axis=1, keepdims=True)
    table = np.divide(counts, per_pos, out=np.zeros_like(counts), where=per_pos > 0)[:n_positions + 1]
    clicks = int(target.click.sum())
    low, high = clicks_interval(clicks, len(target))
    return Target(f"log {target.path}", f"the item shares per position of {target.path} (context-free)", table=table,
                  on_policy={"value": clicks / len(target), "ci_low": low, "ci_high": high, "n": len(target),
                             "clicks": clicks})


def _need_positions(log: Log, target: Log) -> None:
    missing = sorted(set(np.unique(log.position)) - set(np.unique(target.position)))
    if missing:
        raise HuaxiangError(f"{target.path}: no rows at position {missing[0]}, which {log.path} shows: the target "
                            "log's policy is undefined there")


def model_target(name: str, train: Log, evaluated: Log, items: dict[str, int], n_positions: int) -> Target:
    """One of our models fitted on `train`, its deterministic choice for each row of `evaluated`."""
    if name not in TARGET_MODELS:
        raise HuaxiangError(f"unknown target model {name!r}: use one of {', '.join(TARGET_MODELS)}")
    t_item = codes_of(train.item, items)
    n_items = len(items)
    base = fit_reward(t_item, train.position, train.click, n_items, n_positions)
    present = np.bincount(t_item, minlength=n_items) > 0  # a model shows only items it has seen
    raw = np.bincount(t_item, weights=train.click, minlength=n_items)
    codes = np.arange(n_items)
    if name == "popularity":
        ranked = np.lexsort((codes, -raw, -base.theta))  # shrunk CTR, then clicks, then id order
        ranked = ranked[present[ranked]]
        if len(ranked) < n_positions:
            raise HuaxiangError(f"{train.path}: {len(ranked)} item(s) in the training half, fewer than the "
                                f"{n_positions} positions to fill")
        choice = ranked[evaluated.position - 1]
        note = "popularity (items by shrunk CTR on the first half; position k shows the k-th)"
        return Target("model popularity", note, choice=choice)
    # ctr: score(a | x) = θ_a + mean over features j of (θ_{a | j = x_j} − θ_a), each cell shrunk to θ_a
    beta_rows = base.beta[train.position]
    deviations = []
    for col in train.context.columns:
        values, v_codes = np.unique(np.concatenate([train.context[col].to_numpy(), evaluated.context[col].to_numpy()]),
                                    return_inverse=True)
        tv, ev = v_codes[:len(train)], v_codes[len(train):]
        cell = tv * n_items + t_item
        uniq, inv = np.unique(cell, return_inverse=True)
        c = np.bincount(inv, weights=train.click)
        e = np.bincount(inv, weights=beta_rows)
        prior = base.theta[uniq % n_items]
        dev = shrunk_rates(c, e, prior) - prior
        keep = dev != 0
        deviations.append((sparse.csr_matrix((dev[keep], (uniq[keep] // n_items, uniq[keep] % n_items)),
                                             shape=(len(values), n_items)), ev))
    if present.sum() < n_positions:
        raise HuaxiangError(f"{train.path}: {int(present.sum())} item(s) in the training half, fewer than the "
                            f"{n_positions} positions to fill")
    choice = np.empty(len(evaluated), dtype=np.int64)
    chunk = max(1, 2_000_000 // max(n_items, 1))
    order_key = np.where(present, 0.0, -np.inf)
    for start in range(0, len(evaluated), chunk):
        rows = slice(start, start + chunk)
        score = np.broadcast_to(base.theta + order_key, (len(evaluated.item[rows]), n_items)).copy()
        for dev, ev in deviations:
            score += dev[ev[rows]].toarray() / max(len(deviations), 1)
        top = np.argsort(-score, axis=1, kind="stable")[:, :n_positions]
        choice[rows] = top[np.arange(top.shape[0]), evaluated.position[rows] - 1]
    note = (f"ctr (per context: the item's CTR among users sharing each of {', '.join(train.context.columns)}, "
            "shrunk to its CTR, fitted on the first half; position k shows the context's k-th)")
    return Target("model ctr", note, choice=choice)


# ------------------------------------------------------------------------------------------------------ estimators

def count_interval(y: float, var: float, size: float, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The interval of a weighted count of rare events (clicks), estimated as y with variance var, when one more
    event would add `size`: the lower end is the α/2 quantile of the gamma law with mean y and variance var, the
    upper end the 1 − α/2 quantile of the one with mean y + size and variance var + size² (with equal weights,
    Garwood's exact Poisson interval; with unequal ones, the gamma interval of Fay & Feuer 1997)."""
    a = 1 - confidence
    low = float(var / y * gammaincinv(y * y / var, a / 2)) if y > 0 and var > 0 else 0.0
    mean, v = y + size, var + size * size
    if not mean > 0:
        return low, max(low, y)
    return low, float(v / mean * gammaincinv(mean * mean / v, 1 - a / 2))


def _size(c: np.ndarray, q: np.ndarray) -> float:
    """The size of one more click for click weights c and click probabilities q: Σc²q / Σcq (a click's weight, each
    weighted by its share of the variance — the variance-to-mean ratio of the weighted count); the mean positive
    weight when q̂ is all zero."""
    cq = c * q
    if cq.sum() > 0:
        return float((c * cq).sum() / cq.sum())
    return float(c[c > 0].mean()) if (c > 0).any() else 0.0


def estimate(click: np.ndarray, weight: np.ndarray, q_logged: np.ndarray, q_target: np.ndarray,
             confidence: float = CONFIDENCE) -> dict:
    """IPS, SNIPS and DR of per-row clicks r, weights w = π_e/π_b, q̂ of the logged item and Σ_a π_e(a)·q̂(a), each
    {"value", "ci_low", "ci_high", "se"} (see the module docstring for the interval)."""
    r = np.asarray(click, float)
    w = np.asarray(weight, float)
    q = np.clip(np.asarray(q_logged, float), 0.0, 1.0)
    n = r.size
    ddof = 1 if n > 1 else 0
    wr = w * r
    ips = wr.mean()
    var_ips = wr.var(ddof=ddof) / n
    size_ips = _size(w / n, q)
    sw = w.sum()
    if sw > 0:
        snips = wr.sum() / sw
        var_sn = float(((w * (r - snips)) ** 2).sum()) / sw ** 2  # delta method
        size_sn = size_ips * n / sw
    else:
        snips, var_sn, size_sn = 0.0, 0.0, 0.0
    terms = q_target + w * (r - q_logged)
    dr = terms.mean()
    var_dr = terms.var(ddof=ddof) / n
    out = {}
    # (name, value, its click part, variance, one more click's size): DR = its click part (IPS) + a constant
    for name, value, y, var, size in (("ips", ips, ips, var_ips, size_ips), ("snips", snips, snips, var_sn, size_sn),
                                      ("dr", dr, ips, var_dr, size_ips)):
        low, high = count_interval(y, var, size, confidence)
        shift = value - y
        clip = lambda x: float(min(max(x, 0.0), 1.0))  # a CTR lies in [0, 1]; DR's constant part can step outside
        out[name] = {"value": clip(value), "ci_low": clip(low + shift), "ci_high": clip(high + shift),
                     "se": float(math.sqrt(max(var, 0.0)))}
    return out


def off_policy(item: np.ndarray, position: np.ndarray, click: np.ndarray, propensity: np.ndarray, target: Target,
               n_items: int, n_positions: int, extra: tuple | None = None) -> tuple[dict, np.ndarray]:
    """(IPS, SNIPS and DR of `target` on logged rows given as item codes, positions, clicks and propensities; the
    importance weights). The reward model is cross-fitted: each of FOLDS seeded folds gets q̂ fitted on the other
    rows, plus `extra` rows (item codes, positions, clicks) when given (a model target's training half)."""
    r = np.asarray(click, float)
    w = target.prob_logged(item, position) / propensity
    n = r.size
    fold = np.random.default_rng(SEED).permutation(n) % FOLDS
    q_logged, q_target = np.empty(n), np.empty(n)
    for f in range(FOLDS):
        fit = fold != f
        f_item, f_pos, f_click = item[fit], position[fit], r[fit]
        if extra is not None:
            f_item, f_pos, f_click = (np.concatenate([a, b]) for a, b in zip((f_item, f_pos, f_click), extra))
        q = fit_reward(f_item, f_pos, f_click, n_items, n_positions).table()
        rows = np.flatnonzero(fold == f)
        q_logged[rows] = q[position[rows], item[rows]]
        q_target[rows] = target.expected(q, position, rows)
    return estimate(r, w, q_logged, q_target), w


def evaluate(log: Log, target_log: Log | None = None, target_model: str | None = None) -> dict:
    """The target's estimated CTR on `log` by IPS, SNIPS and DR, with what it was estimated on (see `ope` in the CLI
    for the JSON shape)."""
    if (target_log is None) == (target_model is None):
        raise HuaxiangError("give exactly one target: a target log or a target model")
    names = sorted(set(log.item) | (set(target_log.item) if target_log is not None else set()))
    items = {name: code for code, name in enumerate(names)}
    n_positions = int(log.position.max())
    if target_log is not None:
        _need_positions(log, target_log)
        evaluated, extra = log, None
        target = log_target(target_log, items, n_positions)
        evaluated_on = "all rows of the log"
    else:
        train_rows, eval_rows = first_half(log)
        extra, evaluated = log.take(train_rows), log.take(eval_rows)
        target = model_target(target_model, extra, evaluated, items, n_positions)
        evaluated_on = (f"the second half of the log by {'timestamp' if log.ts is not None else 'file order'} "
                        f"({len(evaluated):,} rows; the model is fitted on the first {len(extra):,})")
    code = codes_of(evaluated.item, items)
    pos, r = evaluated.position, evaluated.click.astype(float)
    fit_extra = None if extra is None else (codes_of(extra.item, items),
                                            extra.position, extra.click.astype(float))
    estimates, w = off_policy(code, pos, r, evaluated.propensity, target, len(items), n_positions, fit_extra)
    if target.table is not None:
        logged_share = np.zeros_like(target.table)
        np.add.at(logged_share, (pos, code), 1.0)
        gap_pos = (target.table * (logged_share == 0)).sum(axis=1)
        support_gap = float(gap_pos[pos].mean())
    else:
        support_gap = None  # a model shows only items the log holds
    ess = float(w.sum() ** 2 / (w ** 2).sum()) if (w > 0).any() else 0.0
    return {"n": int(r.size), "estimates": estimates,
            "on_policy": None if target.on_policy is None else target.on_policy["value"],
            "on_policy_ci": None if target.on_policy is None else [target.on_policy["ci_low"],
                                                                   target.on_policy["ci_high"]],
            "target": target.name, "target_policy": target.note, "log": log.path, "format": log.fmt,
            "evaluated_on": evaluated_on, "log_ctr": float(r.mean()), "log_clicks": int(r.sum()),
            "effective_sample_size": ess, "max_weight": float(w.max()), "rows_with_weight": int((w > 0).sum()),
            "support_gap": support_gap, "confidence": CONFIDENCE,
            "interval": "scaled exact-Poisson (gamma) interval on the click part; variance by the sample variance "
                        "(IPS, DR) or the delta method (SNIPS)"}
