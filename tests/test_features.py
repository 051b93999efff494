"""Behaviour features, tags and segments checked against values computed by hand."""
from datetime import datetime

import pytest

from huaxiang.config import load_config
from huaxiang.ingest import ingest_file
from huaxiang.profile.build import build_profiles
from huaxiang.store import connect

EVENTS = """user_id,item_id,category_id,type,ts,price,quantity
u1,i1,c1,view,2024-01-01 10:00:00,10,
u1,i1,c1,cart,2024-01-01 10:10:00,,
u1,i1,c1,buy,2024-01-01 10:20:00,10,2
u1,i2,c2,view,2024-01-03 22:00:00,30,
u1,i1,c1,buy,2024-01-08 09:00:00,10,1
u2,i2,c2,view,2024-01-10 12:00:00,,
u2,i3,c2,pv,2024-01-10 12:50:00,,
"""
ITEMS = """item_id,title,brand,price
i1,Red Lipstick Matte,Acme,10
i2,红色 口红 哑光,Lumi,30
i3,Blue Eyeliner,Lumi,50
"""
AS_OF = datetime(2024, 1, 10, 12, 50)


def days(a: datetime, b: datetime) -> float:
    return (a - b).total_seconds() / 86400


@pytest.fixture(scope="module")
def profiles(tmp_path_factory):
    d = tmp_path_factory.mktemp("feat")
    (d / "events.csv").write_text(EVENTS)
    (d / "items.csv").write_text(ITEMS)
    con = connect(str(d / "s.duckdb"))
    ingest_file(con, str(d / "items.csv"), "csv", table="items")
    ingest_file(con, str(d / "events.csv"), "csv")
    build_profiles(con, load_config())
    cur = con.execute("SELECT * FROM profiles ORDER BY user_id")
    names = [c[0] for c in cur.description]
    rows = {r[0]: dict(zip(names, r)) for r in cur.fetchall()}
    yield rows, con
    con.close()


def test_counts_sessions_and_days(profiles):
    p = profiles[0]["u1"]
    assert (p["n_events"], p["n_view"], p["n_cart"], p["n_fav"], p["n_buy"]) == (5, 2, 1, 0, 2)
    assert p["active_days"] == 3  # Jan 1, 3 and 8
    assert p["n_sessions"] == 3  # gaps of 10 min, 10 min, 2.5 days, 4.5 days
    q = profiles[0]["u2"]
    assert q["n_sessions"] == 2  # a 50-minute gap is over the 30-minute session gap
    assert q["n_view"] == 2  # "pv" is an alias of view


def test_rfm_and_lifetime(profiles):
    p = profiles[0]["u1"]
    assert p["as_of"] == AS_OF
    assert p["frequency"] == 2
    assert p["monetary"] == pytest.approx(10 * 2 + 10 * 1)
    assert p["avg_order_value"] == pytest.approx(15)
    assert p["recency_days"] == pytest.approx(days(AS_OF, datetime(2024, 1, 8, 9)))
    assert p["tenure_days"] == pytest.approx(days(AS_OF, datetime(2024, 1, 1, 10)))
    assert p["idle_days"] == pytest.approx(days(AS_OF, datetime(2024, 1, 8, 9)))
    assert p["repeat_purchase_rate"] == 1.0  # i1 bought in two separate orders
    q = profiles[0]["u2"]
    assert q["frequency"] == 0 and q["monetary"] is None and q["recency_days"] is None


def test_funnel(profiles):
    p = profiles[0]["u1"]
    assert p["cart_rate"] == pytest.approx(1 / 2)
    assert p["buy_rate"] == pytest.approx(2 / 2)
    assert p["cart_to_buy"] == pytest.approx(2 / 1)
    assert profiles[0]["u2"]["cart_to_buy"] is None  # no cart: unknown, not zero


def test_category_affinity_is_time_decayed(profiles):
    p = profiles[0]["u1"]
    decay = lambda ts: 2 ** (-days(AS_OF, ts) / 14.0)  # half-life 14 days
    c1 = (1 * decay(datetime(2024, 1, 1, 10)) + 3 * decay(datetime(2024, 1, 1, 10, 10))
          + 5 * decay(datetime(2024, 1, 1, 10, 20)) + 5 * decay(datetime(2024, 1, 8, 9)))
    c2 = 1 * decay(datetime(2024, 1, 3, 22))
    assert [x["name"] for x in p["top_categories"]] == ["c1", "c2"]
    assert p["top_categories"][0]["share"] == pytest.approx(c1 / (c1 + c2))
    assert p["top_category"] == "c1"
    assert p["top_brand"] == "Acme"  # brands come from the item catalogue


def test_price_band(profiles):
    # price pool: catalogue 10, 30, 50 + event prices 10, 10, 30, 10 -> cuts at 10 (1/3) and 30 (2/3)
    assert profiles[0]["u1"]["median_price"] == 10 and profiles[0]["u1"]["price_band"] == "low"
    assert profiles[0]["u2"]["median_price"] == 40 and profiles[0]["u2"]["price_band"] == "high"


def test_time_habits(profiles):
    p = profiles[0]["u1"]
    hist = [0] * 24
    for h in (10, 10, 10, 22, 9):
        hist[h] += 1
    assert p["hour_hist"] == hist
    assert p["peak_hour"] == 10
    assert p["dow_hist"] == [4, 0, 1, 0, 0, 0, 0]  # 2024-01-01 and -08 are Mondays, -03 a Wednesday
    assert p["peak_weekday"] == 0
    assert p["weekend_share"] == 0 and p["night_share"] == 0
    assert p["daypart"] == "morning"


def test_keywords_tfidf_and_tags(profiles):
    p, q = profiles[0]["u1"], profiles[0]["u2"]
    # i1's words are unique to u1 (higher idf) and weigh most: ties broken alphabetically
    assert p["keywords"][:3] == ["lipstick", "matte", "red"]
    assert "口红" in p["keywords"] and "口红" in q["keywords"]  # jieba segments the Chinese title
    assert p["tags"][:2] == ["category:c1", "category:c2"]
    assert "brand:Acme" in p["tags"]
    assert "premium taste" in q["tags"] and "bargain hunter" in p["tags"]


def test_segments(profiles):
    rows, con = profiles
    assert rows["u2"]["segment"] == "new"  # first seen 50 minutes before the reference time
    assert rows["u1"]["segment"] != "new"
    sizes = dict(con.execute("SELECT segment, size FROM segment_rules").fetchall())
    assert sum(sizes.values()) == 2


def test_returns_reduce_spend_but_are_not_orders(tmp_path):
    (tmp_path / "o.csv").write_text("user_id,ts,amount,invoice\nx,2024-01-01,20,A\nx,2024-01-05,30,B\nx,2024-01-06,-5,CB\n")
    con = connect(str(tmp_path / "s.duckdb"))
    ingest_file(con, str(tmp_path / "o.csv"), "csv", table="orders")
    build_profiles(con, load_config())
    freq, money, returns, recency = con.execute(
        "SELECT frequency, monetary, n_returns, recency_days FROM profiles").fetchone()
    assert (freq, money, returns) == (2, 45.0, 1)
    assert recency == pytest.approx(1.0)  # last purchase Jan 5, reference time Jan 6 (the return)


def test_kmeans_option(tmp_path):
    from huaxiang.demo import demo_path
    con = connect(str(tmp_path / "s.duckdb"))
    ingest_file(con, demo_path("taobao_UserBehavior_head.csv.gz"), "taobao")
    report = build_profiles(con, load_config(kmeans=4))
    assert report.users == 814  # every user of the real Taobao slice gets a profile
    assert con.execute("SELECT count(DISTINCT user_id), count(DISTINCT cluster) FROM profiles").fetchone() == (814, 4)
    assert con.execute("SELECT sum(size) FROM clusters").fetchone()[0] == 814


def _rounded(rows: list[dict]) -> list[dict]:
    return [{k: float(f"{v:.10g}") if isinstance(v, float) else v for k, v in row.items()} for row in rows]


def _retail_store(path, parts: list[tuple[str, str | None]], cfg):
    """A store of the given Online Retail files, each ingested under its namespace (None: plain ids), built."""
    con = connect(str(path))
    for file, namespace in parts:
        ingest_file(con, file, "online-retail", namespace=namespace)
    build_profiles(con, cfg)
    return con


def test_every_population_statistic_is_per_tenant(tmp_path):
    """The same real Online Retail rows twice in one store: with plain ids (the default tenant '') and under `big`
    with every price times 100. Each tenant gets its own thresholds and price-band cuts (`big`'s 100 times the
    other's), and everything built on them (segments, sizes, price bands, keywords, k-means clusters, the live
    refresh) is what the tenant gets when built alone."""
    import csv
    import gzip

    import ibis

    from huaxiang.demo import demo_path
    from huaxiang.features import segments as sg
    from huaxiang.features.table import price_cuts
    from huaxiang.profile.build import ProfileRefresher
    from huaxiang.profile.segment_report import segment_report

    with gzip.open(demo_path("online_retail_ii_10countries.csv.gz"), "rt", newline="") as f:
        rows = list(csv.reader(f))[:8001]  # the header and 8,000 order lines
    files = {}
    for name, factor in (("plain", 1), ("big", 100)):
        files[name] = str(tmp_path / f"{name}.csv")
        with open(files[name], "w", newline="") as f:
            price = rows[0].index("Price")
            csv.writer(f).writerows([rows[0]] + [r[:price] + [f"{float(r[price]) * factor:g}"] + r[price + 1:]
                                                 for r in rows[1:]])
    cfg = load_config(kmeans=3)
    both = _retail_store(tmp_path / "both.duckdb", [(files["plain"], None), (files["big"], "big")], cfg)
    alone = {"": _retail_store(tmp_path / "plain.duckdb", [(files["plain"], None)], cfg),
             "big": _retail_store(tmp_path / "big.duckdb", [(files["big"], "big")], cfg)}

    th = sg.thresholds(ibis.duckdb.from_connection(both).table("features"), cfg.high_quantile, cfg.potential_quantile)
    assert set(th) == {"", "big"} and th[""]["monetary"] > 0
    assert th["big"]["monetary"] == pytest.approx(100 * th[""]["monetary"])
    cuts = price_cuts(ibis.duckdb.from_connection(both))
    assert cuts["big"] == pytest.approx([100 * c for c in cuts[""]])

    columns = "user_id, segment, segments, price_band, keywords, tags, cluster"
    mixed = both.execute(f"SELECT {columns} FROM profiles ORDER BY user_id").fetchall()
    report = segment_report(both)
    assert [p["tenant"] for p in report["tenants"]] == ["", "big"]
    for tenant, con in alone.items():
        mine = [r for r in mixed if (r[0].startswith("big:") == (tenant == "big"))]
        assert mine == con.execute(f"SELECT {columns} FROM profiles ORDER BY user_id").fetchall()
        part = next(p for p in report["tenants"] if p["tenant"] == tenant)
        by_itself = segment_report(con)["tenants"]
        assert [p["tenant"] for p in by_itself] == [tenant]
        for key in ("segments", "features", "value_tiers", "clusters"):  # (means: sums in another order)
            assert _rounded(part[key]) == _rounded(by_itself[0][key]), key
        assert sum(s["size"] for s in part["segments"]) == len(mine)
    high = {p["tenant"]: next(s for s in p["segments"] if s["segment"] == "high-value") for p in report["tenants"]}
    assert high[""]["definition"] != high["big"]["definition"] and high[""]["size"] == high["big"]["size"] > 0
    assert segment_report(both, tenants=["big"])["tenants"] == [report["tenants"][1]]
    assert segment_report(both, tenants=["nobody"]) == {"tenants": []}
    noisy = segment_report(both, epsilon=1.0, seed=0, tenants=["", "big"])
    assert [p["tenant"] for p in noisy["tenants"]] == ["", "big"] and noisy["privacy"]["epsilon"] == 1.0

    # the live refresh keeps to each tenant's own statistics too
    ProfileRefresher(both, cfg).refresh([r[0] for r in mixed])
    assert both.execute("SELECT user_id, segment, segments, price_band FROM profiles ORDER BY user_id").fetchall() \
        == [r[:4] for r in mixed]
