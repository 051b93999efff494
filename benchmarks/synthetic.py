"""Synthetic e-commerce behaviour logs with realistic skew, for ingest and profile benchmarks.

    python benchmarks/synthetic.py 1000000 --out /tmp/synth [--users 10000]

writes `events.csv` (user_id,item_id,category_id,type,ts,price,quantity,query,session_id) and
`items.csv` (item_id,title,brand,category,price). Shape of the data:

- items: ~N/10 (1M items for 10M events), popularity Zipf(1.0); categories Zipf over up to 5,000
  categories, brands Zipf over ~N/5,000 brands, prices lognormal around a per-category level;
  titles are 3-6 English words, ~10% are Chinese.
- users: ~N/100, activity lognormal(sigma 1.5) — most users do little, a few do a lot (some draw no event).
  `--users U` sets exactly U distinct users instead, each with at least one event and the other N − U events
  spread by the same lognormal activity (10M events with `--users 1000000`: 1M users, 10 events each on average).
- sessions: ~8 events on average, started at a random day of a 30-day window (June 2024, UTC) and
  an hour drawn from a daily pattern (quiet at night, peaks at lunch and in the evening); events
  a few tens of seconds apart. Most events of a session stay in the category of its first item.
- event types: view 88%, cart 6%, fav 3%, buy 2%, search 1%. A cart/fav/buy acts on the item viewed
  just before it; a search has a query and no item. price is set on item events, quantity on buys.

Rows are written user by user (like Taobao UserBehavior), in chunks, so memory stays small.
Everything is numpy-vectorised; 10M events take seconds.
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

START = 1717200000  # 2024-06-01 00:00:00 UTC
DAYS = 30
TYPES = ["view", "cart", "fav", "buy", "search"]
TYPE_P = [0.88, 0.06, 0.03, 0.02, 0.01]
VIEW, CART, FAV, BUY, SEARCH = range(5)
MEAN_SESSION_EVENTS = 8
MEAN_GAP_SECONDS = 40
SAME_CATEGORY_SHARE = 0.6  # events (after the first) of a session that stay in its category
CHUNK_EVENTS = 2_000_000

# Share of sessions starting in each hour of the day (UTC): quiet at night, lunch and evening peaks.
HOUR_WEIGHTS = np.array([3, 2, 1.2, 0.8, 0.6, 0.7, 1.2, 2.5, 4, 5, 5.5, 6,
                         7, 6.5, 5.5, 5, 5, 5.5, 6.5, 8, 9.5, 10, 8.5, 5.5])
HOUR_P = HOUR_WEIGHTS / HOUR_WEIGHTS.sum()

ADJECTIVES = """classic slim portable wireless waterproof lightweight premium vintage smart organic
soft warm cotton leather wooden steel ceramic compact foldable ergonomic rechargeable mini large
deluxe casual sporty elegant modern retro durable quick-dry breathable stretch heavy-duty silent
cordless digital handmade natural bamboo silk wool linen glass matte glossy""".split()
COLOURS = "black white red blue green grey pink beige navy brown gold silver purple orange".split()
NOUNS = """headphones earbuds speaker charger cable keyboard mouse monitor laptop tablet phone case
backpack handbag wallet belt sneakers boots sandals jacket hoodie sweater t-shirt dress skirt jeans
shorts socks scarf hat gloves watch bracelet necklace ring sunglasses lamp chair desk pillow blanket
mug bottle kettle teapot pan knife cutting-board blender toaster vacuum towel shampoo soap lotion
serum lipstick perfume toothbrush notebook pen pencil stapler toy puzzle lego doll ball racket
yoga-mat dumbbell tent sleeping-bag umbrella""".split()
EXTRAS = "set pack kit edition pro plus max for-men for-women for-kids 2-pack gift".split()
ZH_WORDS = """无线 蓝牙 耳机 充电器 数据线 键盘 鼠标 显示器 手机壳 背包 钱包 运动鞋 连衣裙 牛仔裤 外套 卫衣
毛衣 围巾 帽子 手表 项链 台灯 椅子 抱枕 毛毯 水杯 保温杯 茶壶 平底锅 吸尘器 毛巾 洗发水 香皂 面霜 口红
香水 笔记本 钢笔 玩具 拼图 瑜伽垫 帐篷 雨伞 新款 正品 包邮 男士 女士 儿童 加厚 轻薄 便携 防水 纯棉 真皮
复古 简约 大容量 黑色 白色 红色 蓝色""".split()
SYLLABLES = "lu mo ra ka ve ni so ta zen qi xa no ri pe do mi ko ba fe gu".split()


def zipf_sampler(k: int, a: float) -> np.ndarray:
    """The cumulative distribution of Zipf(a) over ranks 0..k-1 (for `np.searchsorted`)."""
    w = np.arange(1, k + 1, dtype=np.float64) ** -a
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    return cdf


def draw(rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, rng.random(n)), len(cdf) - 1)


def join_words(rng, vocab: list[str], n: int, lo: int, hi: int, sep: str) -> pa.Array:
    """n strings of lo..hi words each drawn from vocab, joined by sep."""
    words = pa.array(vocab)
    lengths = rng.integers(lo, hi + 1, n)
    cols = [words.take(pa.array(rng.integers(0, len(vocab), n), mask=lengths <= i)) for i in range(hi)]
    return pc.binary_join_element_wise(*cols, sep, null_handling="skip")


@dataclass
class World:
    item_cdf: np.ndarray  # popularity of item rank r (item id = rank_to_item[r])
    rank_to_item: np.ndarray
    item_cat: np.ndarray
    item_price: np.ndarray
    by_cat: np.ndarray  # item ids sorted by category, then popularity
    cat_start: np.ndarray
    cat_size: np.ndarray
    queries: pa.Array
    query_cdf: np.ndarray


def make_items(rng, n_items: int) -> tuple[World, pa.Table]:
    n_cats = int(min(5000, max(20, n_items // 50)))
    n_brands = int(max(20, n_items // 500))
    cat = draw(rng, zipf_sampler(n_cats, 1.0), n_items)
    cat_level = rng.lognormal(3.5, 1.0, n_cats)  # typical price of a category (~33, wide spread)
    price = np.round(np.floor(cat_level[cat] * rng.lognormal(0.0, 0.5, n_items)) + 0.99, 2)
    brand = draw(rng, zipf_sampler(n_brands, 1.1), n_items)
    rank_to_item = rng.permutation(n_items)  # item ids carry no hint of popularity
    item_rank = np.empty(n_items, np.int64)
    item_rank[rank_to_item] = np.arange(n_items)
    by_cat = np.lexsort((item_rank, cat))
    cat_size = np.bincount(cat, minlength=n_cats)
    cat_start = np.concatenate(([0], np.cumsum(cat_size)[:-1]))

    brand_names = pa.array(["".join(rng.choice(SYLLABLES, rng.integers(2, 4))).capitalize() for _ in range(n_brands)])
    english = join_words(rng, ADJECTIVES + COLOURS, n_items, 1, 3, " ")
    english = pc.binary_join_element_wise(
        brand_names.take(pa.array(brand)), english,
        pa.array(NOUNS).take(pa.array(rng.integers(0, len(NOUNS), n_items))),
        pa.array(EXTRAS).take(pa.array(rng.integers(0, len(EXTRAS), n_items),
                                       mask=rng.random(n_items) > 0.3)), " ", null_handling="skip")
    chinese = join_words(rng, ZH_WORDS, n_items, 3, 6, "")
    title = pc.if_else(pa.array(rng.random(n_items) < 0.1), chinese, english)
    items = pa.table({"item_id": np.arange(n_items), "title": title,
                      "brand": brand_names.take(pa.array(brand)), "category": cat, "price": price})

    n_queries = int(min(20_000, max(100, n_items // 20)))
    queries = pc.if_else(pa.array(rng.random(n_queries) < 0.15),
                         join_words(rng, ZH_WORDS, n_queries, 1, 2, ""),
                         join_words(rng, ADJECTIVES + COLOURS + NOUNS, n_queries, 1, 3, " "))
    world = World(zipf_sampler(n_items, 1.0), rank_to_item, cat, price, by_cat, cat_start, cat_size,
                  queries, zipf_sampler(n_queries, 1.0))
    return world, items


EVENTS_SCHEMA = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("category_id", pa.int64()),
                           ("type", pa.string()), ("ts", pa.int64()), ("price", pa.float64()),
                           ("quantity", pa.int64()), ("query", pa.string()), ("session_id", pa.int64())])


def make_events(rng, w: World, users: np.ndarray, counts: np.ndarray, first_session: int) -> pa.Table:
    """Events of the given users (each with its event count), user by user, sessions in order."""
    n = int(counts.sum())
    user = np.repeat(users, counts)
    user_start = np.concatenate(([0], np.cumsum(counts)[:-1]))
    new_session = rng.random(n) < 1 / MEAN_SESSION_EVENTS
    new_session[user_start] = True
    session = np.cumsum(new_session) - 1
    session_first = np.flatnonzero(new_session)
    n_sessions = len(session_first)

    # timestamps: a session starts on a random day at an hour from the daily pattern
    session_ts = (START + rng.integers(0, DAYS, n_sessions) * 86400
                  + rng.choice(24, n_sessions, p=HOUR_P) * 3600 + rng.integers(0, 3600, n_sessions))
    elapsed = np.cumsum(rng.exponential(MEAN_GAP_SECONDS, n).astype(np.int64) + 1)
    ts = session_ts[session] + elapsed - elapsed[session_first][session]
    ts = np.minimum(ts, START + DAYS * 86400 - 1)

    etype = np.searchsorted(np.cumsum(TYPE_P), rng.random(n) * 0.999999).astype(np.int8)

    # items: popular ones more often; most of a session stays in the category of its first item
    item = w.rank_to_item[draw(rng, w.item_cdf, n)]
    stay = ~new_session & (rng.random(n) < SAME_CATEGORY_SHARE)
    cat = w.item_cat[item[session_first]][session[stay]]
    skew = rng.random(len(cat)) ** 3  # favour the category's popular items
    item[stay] = w.by_cat[w.cat_start[cat] + (w.cat_size[cat] * skew).astype(np.int64)]
    # funnel: a cart / fav / buy acts on the item of the event before it in the session
    follows = np.isin(etype, (CART, FAV, BUY)) & ~new_session
    source = np.where(follows, 0, np.arange(n))
    np.maximum.accumulate(source, out=source)
    item = item[source]

    search = etype == SEARCH
    buy = etype == BUY
    quantity = np.minimum(rng.geometric(0.7, n), 10)
    query = w.queries.take(pa.array(draw(rng, w.query_cdf, n), mask=~search))
    return pa.table([
        pa.array(user),
        pa.array(item, mask=search),
        pa.array(w.item_cat[item], mask=search),
        pa.array(TYPES).take(pa.array(etype)),
        pa.array(ts),
        pa.array(w.item_price[item], mask=search),
        pa.array(quantity, mask=~buy),
        query,
        pa.array(first_session + session),
    ], schema=EVENTS_SCHEMA)


def generate(n_events: int, out_dir: str, seed: int = 0, n_users: int | None = None) -> tuple[str, str]:
    """Writes `events.csv` (n_events rows) and `items.csv` under out_dir; returns their paths. `n_users`: exactly
    that many distinct users, each with at least one event (default: ~n_events / 100 users, some with none)."""
    if n_users is not None and not 1 <= n_users <= n_events:
        raise ValueError(f"--users must be between 1 and the number of events ({n_events:,}), not {n_users:,}")
    rng = np.random.default_rng(seed)
    os.makedirs(out_dir, exist_ok=True)
    events_path, items_path = os.path.join(out_dir, "events.csv"), os.path.join(out_dir, "items.csv")
    world, items = make_items(rng, max(1000, n_events // 10))
    pacsv.write_csv(items, items_path)
    del items

    if n_users is None:
        n_users = max(10, n_events // 100)
        activity = rng.lognormal(0.0, 1.5, n_users)
        counts = rng.multinomial(n_events, activity / activity.sum())
    else:
        activity = rng.lognormal(0.0, 1.5, n_users)
        counts = 1 + rng.multinomial(n_events - n_users, activity / activity.sum())
    users = rng.permutation(n_users)[counts > 0]  # user ids carry no hint of activity
    counts = counts[counts > 0]
    ends = np.cumsum(counts)
    with pacsv.CSVWriter(events_path, EVENTS_SCHEMA) as writer:
        lo, session = 0, 0
        while lo < len(users):
            hi = max(lo + 1, int(np.searchsorted(ends, ends[lo] - counts[lo] + CHUNK_EVENTS)))
            chunk = make_events(rng, world, users[lo:hi], counts[lo:hi], session)
            session = int(pc.max(chunk["session_id"]).as_py()) + 1
            writer.write_table(chunk)
            lo = hi
    return events_path, items_path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n_events", type=lambda s: int(float(s)), help="number of events, e.g. 1000000 or 1e7")
    ap.add_argument("--out", default="benchmarks/out/synthetic", help="output folder (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--users", type=lambda s: int(float(s)), default=None,
                    help="exactly this many distinct users, each with ≥ 1 event (default: ~n_events / 100)")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    try:
        events, items = generate(args.n_events, args.out, args.seed, args.users)
    except ValueError as e:
        ap.error(str(e))
    mb = (os.path.getsize(events) + os.path.getsize(items)) / 2**20
    print(f"wrote {events} and {items} ({mb:,.0f} MiB) in {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
