"""Aspects (with polarity) and entities from review text, Chinese and English."""
import numpy as np
from hypothesis import given, settings, strategies as st

from huaxiang.text.aspects import ASPECT_NAMES, extract, review_mentions
from huaxiang.text.interests import nearest_interests


def aspects(text, **kw):
    return {m.aspect: m.polarity for m in extract(text, **kw).aspects}


def test_chinese_aspects_clauses_negation_and_excess():
    assert aspects("物流很快，质量不错，就是价格有点贵") == {"delivery": 1, "quality": 1, "price": -1}
    assert aspects("客服态度不好，包装也破了") == {"service": -1, "packaging": -1}
    assert aspects("衣服尺码偏小") == {"size": -1}  # "偏小" is a complaint though 小 is no opinion word
    assert aspects("房间不大但是很干净") == {"environment": 1}  # the clause after 但是 decides
    assert aspects("这本书内容没有想象中好") == {"content": -1}  # 没有 … 好


def test_context_decides_taste_or_scent_and_room_or_product():
    assert aspects("味道很香，很好喝", category="蒙牛") == {"taste": 1}
    assert aspects("味道很香，头发很柔顺", category="洗发水") == {"scent": 1, "performance": 1}
    assert aspects("晚上噪音很大", category="酒店") == {"environment": -1}
    assert aspects("噪音很大", category="热水器") == {"performance": -1}


def test_english_aspects():
    assert aspects("Works great and smells lovely. Shipping was slow.") == {"performance": 1, "scent": 1,
                                                                          "delivery": -1}
    assert aspects("Did not work at all.") == {"performance": -1}
    assert aspects("Feels cheap.") == {"quality": -1}  # cheap as a judgement of quality, not price
    assert aspects("The bottle is too small") == {"size": -1}
    assert aspects("The smell goes away after an hour") == {"scent": None}  # no opinion: review decides


def test_entities():
    e = extract("买了黑色的手机，联想的，电池不耐用")
    assert e.brands == ["联想"] and e.colours == ["黑色"] and e.products == ["手机", "电池"]
    e = extract("Love this pink nail polish from Essie, better than my Acme one", brands=["Acme", "x"])
    assert e.brands == ["Essie", "Acme"] and e.colours == ["pink"] and e.products == ["nail polish"]


def test_review_mentions_rows():
    rows = review_mentions([("r1", "质量很好，物流慢", None), ("r2", "", None), ("r3", "Great red lipstick", None)])
    assert ("r1", "aspect", "quality", 1, "质量") in rows and ("r1", "aspect", "delivery", -1, "物流") in rows
    assert ("r3", "colour", "red", None, "red") in rows and ("r3", "product", "lipstick", None, "lipstick") in rows
    assert not [r for r in rows if r[0] == "r2"]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_safe(text):
    e = extract(text)
    assert all(m.aspect in ASPECT_NAMES and m.polarity in (1, -1, None) for m in e.aspects)


def test_nearest_interests_compares_a_users_scores_with_each_other():
    interests = np.eye(4, dtype=np.float32)
    users = np.array([[0.9, 0.1, 0.1, 0.1], [0.5, 0.5, 0.5, 0.5]], dtype=np.float32)
    tags = nearest_interests(users, interests, ["a", "b", "c", "d"], k=2, min_z=1.0)
    assert tags[0][0] == ["a"] and abs(tags[0][1][0] - 0.9) < 1e-6
    assert tags[1] == ([], [])  # equally near to everything: no tag


def test_nearest_interests_discounts_a_hub():
    # interest "hub" is near every user; each user is also near one interest of their own
    rng = np.random.default_rng(0)
    users = np.zeros((12, 5), dtype=np.float32)
    users[:, 0] = 0.8
    users[np.arange(12), 1 + np.arange(12) % 4] = 0.6 + rng.uniform(0, 0.01, 12)
    tags = nearest_interests(users, np.eye(5, dtype=np.float32), ["hub", "a", "b", "c", "d"], k=1, min_z=1.0)
    assert [t[0] for t in tags] == [[n] for n in "abcd" * 3]


def test_labelled_set_floor():
    """The hand-labelled set (benchmarks/data): guards against regressions of the lexicons and rules."""
    import importlib.util
    from pathlib import Path
    import json
    root = Path(__file__).resolve().parents[1] / "benchmarks"
    spec = importlib.util.spec_from_file_location("aspects_bench", root / "aspects.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = [json.loads(line) for line in open(root / "data" / "aspects_eval.jsonl", encoding="utf-8")]
    assert len(rows) >= 200 and {r["lang"] for r in rows} == {"zh", "en"}
    result = bench.evaluate(rows)
    assert result["detection"]["micro"]["f1"] >= 0.7 and result["polarity"]["micro"]["f1"] >= 0.6
