"""Customer lifetime value: BG/NBD for how often a customer buys, Gamma-Gamma for how much, via PyMC-Marketing.

Time is measured in weeks (7 days), as in Fader, Hardie & Lee (2005). Purchases on the same day count as one
transaction (their values add up), the convention of the published CDNOW figures; a file is read into such
transactions by `ingest.transactions.read_transactions`.
"""
from __future__ import annotations

import json
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..errors import HuaxiangError
from ..ingest.transactions import Transactions

WEEK = pd.Timedelta(days=7)


def rfm_summary(tx: pd.DataFrame, calibration_end, holdout_end=None) -> pd.DataFrame:
    """Per customer who bought by `calibration_end` (inclusive): frequency (repeat transactions), recency and T in
    weeks, mean value of the repeat transactions; with `holdout_end`, the transactions after calibration."""
    cal_end = pd.Timestamp(calibration_end)
    cal = tx[tx["date"] <= cal_end]
    g = cal.groupby("customer_id")
    first, last, n = g["date"].min(), g["date"].max(), g["date"].count()
    total = g["value"].sum()
    first_value = cal.sort_values("date").groupby("customer_id")["value"].first()
    repeat = n - 1
    out = pd.DataFrame({"frequency": repeat.astype(float),
                        "recency": (last - first) / WEEK,
                        "T": (cal_end - first) / WEEK,
                        "monetary_value": ((total - first_value) / repeat.where(repeat > 0)).fillna(0.0)})
    if holdout_end is not None:
        hold = tx[(tx["date"] > cal_end) & (tx["date"] <= pd.Timestamp(holdout_end))]
        out["holdout_frequency"] = hold.groupby("customer_id")["date"].count().reindex(out.index, fill_value=0)
        out["holdout_value"] = hold.groupby("customer_id")["value"].sum().reindex(out.index, fill_value=0.0)
    return out.rename_axis("customer_id").reset_index()


def _flat(names):
    from pymc_extras.prior import Prior
    return {k: Prior("HalfFlat") for k in names}


@contextmanager
def _quiet():
    """PyMC and PyMC-Marketing are chatty (optimiser logs, experimental-API warnings)."""
    for name in ("pymc", "pytensor", "pymc_marketing"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _mean(a) -> np.ndarray:
    """A posterior quantity as one number per customer (a MAP fit has a single draw)."""
    return a.mean(("chain", "draw")).values


class CLVModel:
    """BG/NBD + Gamma-Gamma fitted by maximum likelihood (MAP with flat priors), as in the published papers.
    Predictions are PyMC-Marketing's; a summary frame comes from `rfm_summary`."""

    def __init__(self, discount_rate_monthly: float = 0.01):
        self.discount_rate_monthly = discount_rate_monthly

    def fit(self, summary: pd.DataFrame) -> "CLVModel":
        if len(summary) < 10 or summary["frequency"].sum() == 0:
            raise HuaxiangError(f"CLV needs repeat buyers to fit: {len(summary)} customers, "
                                f"{int(summary['frequency'].sum())} repeat transactions before the calibration end")
        try:
            self._fit(summary)
        except Exception as exc:  # the optimiser's own errors (e.g. a start point with -inf likelihood)
            raise HuaxiangError(f"BG/NBD fit failed: {str(exc).strip().splitlines()[0][:120]}") from exc
        return self

    def _fit(self, summary: pd.DataFrame) -> None:
        from pymc_marketing.clv import BetaGeoModel, GammaGammaModel
        with _quiet():
            self.bg_ = BetaGeoModel(data=summary[["customer_id", "frequency", "recency", "T"]],
                                    model_config=_flat(["r", "alpha", "a", "b"]))
            self.bg_.fit(method="map", progressbar=False)
            repeaters = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
            self.gg_ = None  # no spend model without priced repeat purchases: CLV is then unknown
            if len(repeaters) >= 10:
                self.gg_ = GammaGammaModel(data=repeaters[["customer_id", "frequency", "monetary_value"]],
                                           model_config=_flat(["p", "q", "v"]))
                self.gg_.fit(method="map", progressbar=False)

    @property
    def params_(self) -> dict:
        post = lambda m, k: float(m.idata.posterior[k].values.ravel()[0])
        return {**{k: post(self.bg_, k) for k in ("r", "alpha", "a", "b")},
                **({k: post(self.gg_, k) for k in ("p", "q", "v")} if self.gg_ else {})}

    def expected_purchases(self, summary: pd.DataFrame, weeks: float) -> np.ndarray:
        """Conditional expected number of transactions in the next `weeks` (BG/NBD eq. 10)."""
        return _mean(self.bg_.expected_purchases(data=summary, future_t=weeks))

    def probability_alive(self, summary: pd.DataFrame) -> np.ndarray:
        return _mean(self.bg_.expected_probability_alive(data=summary))

    def clv(self, summary: pd.DataFrame, months: int = 12) -> np.ndarray:
        """Expected value bought in the next `months`, discounted monthly."""
        if self.gg_ is None:
            raise HuaxiangError("no spend model: fewer than 10 repeat buyers with a known purchase value")
        return _mean(self.gg_.expected_customer_lifetime_value(
            transaction_model=self.bg_, data=summary, future_t=months,
            discount_rate=self.discount_rate_monthly, time_unit="W"))

    def save(self, d: Path) -> None:
        d = Path(d)
        d.mkdir(parents=True, exist_ok=True)
        self.bg_.save(str(d / "bgnbd.nc"))
        if self.gg_:
            self.gg_.save(str(d / "gamma_gamma.nc"))
        (d / "clv.json").write_text(json.dumps({"discount_rate_monthly": self.discount_rate_monthly}))

    @classmethod
    def load(cls, d: Path) -> "CLVModel":
        from pymc_marketing.clv import BetaGeoModel, GammaGammaModel
        d = Path(d)
        m = cls(**json.loads((d / "clv.json").read_text()))
        with _quiet():
            m.bg_ = BetaGeoModel.load(str(d / "bgnbd.nc"))
            m.gg_ = GammaGammaModel.load(str(d / "gamma_gamma.nc")) if (d / "gamma_gamma.nc").exists() else None
            for part in filter(None, (m.bg_, m.gg_)):  # load() restores the fit; predictions also need the model graph
                if not hasattr(part, "model"):
                    part.build_model(part.data)
        return m


CORRECTION_FEATURES = ["frequency", "recency", "T", "monetary_value", "p_alive", "horizon_weeks"]


class PurchaseCorrection:
    """A LightGBM (Poisson) boosted from the BG/NBD expectation: it learns, inside the calibration period only,
    where BG/NBD over- or under-predicts. Training windows: cut-offs at each month end from `start` (when the
    cohort is complete) to a month before the calibration end, each labelled with the transactions between its
    cut-off and the calibration end. No holdout transaction is seen."""

    def __init__(self, start: str | None = None, num_leaves: int = 8, n_estimators: int = 200, seed: int = 0):
        self.start, self.num_leaves, self.n_estimators, self.seed = start, num_leaves, n_estimators, seed

    def fit(self, tx: pd.DataFrame, calibration_end) -> "PurchaseCorrection":
        import lightgbm as lgb
        cal_end = pd.Timestamp(calibration_end)
        start = pd.Timestamp(self.start) if self.start else tx["date"].min() + pd.Timedelta(days=90)
        frames = []
        for cut in pd.date_range(start, cal_end - pd.Timedelta(days=30), freq="ME"):
            s = rfm_summary(tx, cut, cal_end)
            if s["frequency"].sum() == 0:
                continue
            frames.append(self._features(CLVModel().fit(s), s, (cal_end - cut) / WEEK))
        if not frames:
            raise HuaxiangError("the calibration period is too short for the correction (needs ≥ 4 months)")
        train = pd.concat(frames)
        self.booster_ = lgb.LGBMRegressor(objective="poisson", n_estimators=self.n_estimators, learning_rate=0.03,
                                          num_leaves=self.num_leaves, min_child_samples=50, random_state=self.seed,
                                          verbose=-1)
        self.booster_.fit(train[CORRECTION_FEATURES], train["holdout_frequency"], init_score=train["log_base"])
        self.windows_ = len(frames)
        return self

    @staticmethod
    def _features(model: CLVModel, summary: pd.DataFrame, weeks: float) -> pd.DataFrame:
        base = model.expected_purchases(summary, weeks)
        return summary.assign(p_alive=model.probability_alive(summary), horizon_weeks=weeks,
                              log_base=np.log(np.clip(base, 1e-9, None)))

    def expected_purchases(self, model: CLVModel, summary: pd.DataFrame, weeks: float) -> np.ndarray:
        f = self._features(model, summary, weeks)
        return np.exp(self.booster_.predict(f[CORRECTION_FEATURES], raw_score=True) + f["log_base"].to_numpy())


def holdout_report(summary: pd.DataFrame, predictions: dict[str, np.ndarray], top_bucket: int = 7) -> list[dict]:
    """Actual vs predicted holdout transactions per calibration-frequency bucket (0 … top_bucket+) and in total."""
    bucket = summary["frequency"].clip(upper=top_bucket).astype(int).to_numpy()
    actual = summary["holdout_frequency"].to_numpy(float)
    rows = []
    for b in [*range(top_bucket + 1), None]:
        mask = bucket == b if b is not None else np.ones(len(bucket), bool)
        label = "total" if b is None else f"{b}+" if b == top_bucket else str(b)
        rows.append({"bucket": label, "customers": int(mask.sum()), "actual": float(actual[mask].sum()),
                     **{k: float(v[mask].sum()) for k, v in predictions.items()}})
    return rows


def holdout_evaluation(tx: Transactions, calibration_end: str, holdout_end: str | None = None, blend: bool = True,
                       months: int = 12, progress: Callable[[str], None] | None = None) -> tuple[CLVModel, dict]:
    """The fitted model and what `huaxiang clv --json` reports: BG/NBD (and Gamma-Gamma) parameters, mean CLV and,
    with `holdout_end`, actual vs predicted holdout transactions per calibration-frequency bucket (`bgnbd`, and
    `blend` for the LightGBM correction fitted on calibration-period windows only)."""
    say = progress or (lambda text: None)
    summary = rfm_summary(tx.frame, calibration_end, holdout_end)
    say(f"fitting BG/NBD + Gamma-Gamma on {len(summary):,} customers")
    model = CLVModel().fit(summary)
    result = {**model.params_, "customers": len(summary), "calibration_end": calibration_end,
              "skipped_rows": tx.skipped, "clv_months": months,
              "mean_clv": float(model.clv(summary, months).mean()) if model.gg_ else None}
    if holdout_end is None:
        return model, result
    weeks = (pd.Timestamp(holdout_end) - pd.Timestamp(calibration_end)).days / 7
    if weeks <= 0:
        raise HuaxiangError("the holdout end must come after the calibration end")
    preds = {"bgnbd": model.expected_purchases(summary, weeks)}
    if blend:
        say("fitting the correction on calibration-period windows")
        preds["blend"] = PurchaseCorrection().fit(tx.frame, calibration_end).expected_purchases(model, summary, weeks)
    buckets = holdout_report(summary, preds)
    total = buckets[-1]
    result.update(holdout_end=holdout_end, holdout_weeks=round(weeks, 2), holdout_actual=total["actual"],
                  holdout_predicted=total["bgnbd"], buckets=buckets)
    if blend:
        result["holdout_predicted_blend"] = total["blend"]
    return model, result
