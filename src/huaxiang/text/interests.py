"""Semantic interest tags: the interests (from a bilingual list, `Config.interests`) nearest to a
user's embedding.

Each interest is a short description in English and Chinese, embedded as an E5 query; a user's
score for it is the cosine with their embedding (items and reviews they engaged with), minus that
interest's mean cosine over all users (some descriptions sit near everything — "hubs" — and would
otherwise win for everyone; skipped below `MIN_POPULATION` users). Scores of one user are then
compared with each other (z-score over the interest list), so a tag means "clearly nearer to this
than to the other interests", not an absolute threshold that shifts with the encoder.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

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


MIN_POPULATION = 10


def nearest_interests(user_vecs: np.ndarray, interest_vecs: np.ndarray, names: list[str], k: int = 3,
                      min_z: float = 2.0) -> list[tuple[list[str], list[float]]]:
    """Pure: per user, up to k interest names whose (population-centred) cosine is ≥ `min_z`
    standard deviations above that user's mean over all interests, best first, with their cosines."""
    sims = user_vecs @ interest_vecs.T
    centred = sims - sims.mean(axis=0, keepdims=True) if len(sims) >= MIN_POPULATION else sims
    z = (centred - centred.mean(axis=1, keepdims=True)) / np.maximum(centred.std(axis=1, keepdims=True), 1e-9)
    out = []
    for row_sims, row_z in zip(sims, z):
        best = [j for j in np.argsort(-row_z, kind="stable")[:k] if row_z[j] >= min_z]
        out.append(([names[j] for j in best], [float(row_sims[j]) for j in best]))
    return out


def write_user_interests(con, encoder, interests: dict[str, str], k: int = 3) -> int:
    """Replaces `user_interests(user_id, model, interests, scores)` for the encoder's user embeddings."""
    names = list(interests)
    interest_vecs = encoder.encode([interests[n] for n in names], "query")
    rows = con.execute("SELECT user_id, vector FROM user_embeddings WHERE model = ? ORDER BY user_id",
                       [encoder.name]).fetchall()
    con.execute("""CREATE TABLE IF NOT EXISTS user_interests (user_id VARCHAR, model VARCHAR,
                   interests VARCHAR[], scores DOUBLE[])""")
    con.execute("BEGIN TRANSACTION")
    con.execute("DELETE FROM user_interests WHERE model = ?", [encoder.name])
    if rows:
        tags = nearest_interests(np.asarray([r[1] for r in rows], dtype=np.float32), interest_vecs, names, k)
        con.register("_interests", pd.DataFrame({"user_id": [r[0] for r in rows],
                                                 "interests": [t[0] for t in tags], "scores": [t[1] for t in tags]}))
        con.execute("INSERT INTO user_interests SELECT user_id, ?, interests, scores FROM _interests", [encoder.name])
        con.unregister("_interests")
    con.execute("COMMIT")
    return len(rows)
