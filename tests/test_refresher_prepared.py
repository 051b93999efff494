"""The profile refresher's prepared statements against a store whose contents move after they were prepared.

DuckDB 1.4 plans a prepared statement with the tables' statistics of the moment it is prepared and reuses that plan
(duckdb issue 23704): the refresher's temp tables are empty then, and the store changes afterwards. A refresh must
still give what a full build gives."""
import math
import random
import shutil

from huaxiang.config import load_config
from huaxiang.ingest import ingest_file, ingest_records
from huaxiang.profile.build import ProfileRefresher, build_profiles
from huaxiang.store import connect

# not defined as a full build defines them: keywords (a refresh takes their idf among the users it refreshes, a
# build among the tenant's users) and price_band (the refresher keeps the cut points it was made with)
OWN_TERMS = ("keywords", "price_band")
READ_OFF_PRICE_BAND = {"bargain hunter", "premium taste"}


def _write_store(path, tmp_path):
    """A small built store: 60 users' seeded events over a week on items with titles and (three of them) a brand;
    the last five users' on items the store knows nothing of (no keywords)."""
    rng = random.Random(21)
    items = [f"i{k}" for k in range(30)]
    words = ["red", "matte", "lipstick", "blue", "eyeliner", "silk", "scarf", "wool", "hat"]
    (tmp_path / "items.csv").write_text("item_id,title,brand,price\n" + "".join(
        f"{i},{' '.join(rng.sample(words, 3))},{'Acme' if k < 3 else ''},{rng.randint(5, 90)}\n"
        for k, i in enumerate(items)))
    lines = []
    for u in range(60):
        for _ in range(rng.randint(2, 25)):
            typ = rng.choice(["view", "view", "view", "cart", "fav", "buy"])
            price = f"{rng.randint(5, 90)}" if typ == "buy" else ""
            item = rng.choice(items) if u < 55 else f"unknown{rng.randint(1, 9)}"
            lines.append(f"u{u},{item},c{rng.randint(1, 6)},{typ},"
                         f"2024-01-{rng.randint(1, 7):02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00,"
                         f"{price},{'1' if price else ''}\n")
    (tmp_path / "events.csv").write_text("user_id,item_id,category_id,type,ts,price,quantity\n" + "".join(lines))
    con = connect(str(path))
    ingest_file(con, str(tmp_path / "items.csv"), "csv", table="items")
    ingest_file(con, str(tmp_path / "events.csv"), "csv")
    build_profiles(con, load_config())
    return con


def _norm(v):
    """A value with floats to 10 significant digits (sums taken in another order) and NaN as None."""
    if isinstance(v, float):
        return None if math.isnan(v) else float(f"{v:.10g}")
    if isinstance(v, list):
        return [_norm(x) for x in v]
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    return v


def _rows(con, table, columns, users):
    rows = con.execute(f"SELECT {', '.join(columns)} FROM {table} WHERE list_contains(?, user_id) ORDER BY user_id",
                       [users]).fetchall()
    return [dict(zip(columns, map(_norm, r))) for r in rows]


def _differences(got, want, own=("keywords",)):
    """(user, column) of every value that differs between two lists of rows of the same users, leaving out the
    columns in `own` and the tags read off them."""
    assert [r["user_id"] for r in got] == [r["user_id"] for r in want]
    for a, b in zip(got, want):
        other = set(a.pop("keywords", None) or []) | set(b.pop("keywords", None) or [])
        if "price_band" in own:
            other |= READ_OFF_PRICE_BAND
        for r in (a, b):
            for column in own:
                r.pop(column, None)
            if "tags" in r:
                r["tags"] = [t for t in r["tags"] or [] if t not in other]
    return sorted({(a["user_id"], k) for a, b in zip(got, want) for k in a if a[k] != b[k]})


def test_a_refresh_right_after_a_build_changes_nothing(tmp_path):
    """Nothing moved since the build: the refreshed rows are the built ones, every column but keywords (the
    thresholds and cut points the refresher keeps are the build's). DuckDB 1.4 planned `coalesce(keywords, [])`
    over the temp table, empty then, as `keywords` ("no NULLs there"): every refreshed profile's tags were NULL."""
    con = _write_store(tmp_path / "s.duckdb", tmp_path)
    users = ["u3", "u42", "u57"]
    columns = [c for (c,) in con.execute("SELECT column_name FROM (DESCRIBE profiles)").fetchall()]
    built = _rows(con, "profiles", columns, users)
    assert all(r["tags"] for r in built) and [r["keywords"] is None for r in built] == [False, False, True]
    ProfileRefresher(con, load_config()).refresh(users)
    assert _differences(_rows(con, "profiles", columns, users), built) == []


def test_refreshes_match_a_full_build_as_the_store_moves(tmp_path):
    """Events later than any the refresher's plans were made with, a new user with a longer id, a new tenant, new
    items, orders in a table that was empty: after each refresh (1 user, then 50, then 1), the refreshed users'
    rows equal those of a full build of the same store (the columns both define the same way)."""
    db = tmp_path / "s.duckdb"
    con = _write_store(db, tmp_path)
    con.execute("SET threads = 1")  # as the online writer's live path runs
    cfg = load_config()
    refresher = ProfileRefresher(con, cfg)
    features = [c for (c,) in con.execute("SELECT column_name FROM (DESCRIBE features)").fetchall()]
    profiles = features + ["tags", "cluster", "habit_utc_offset"]  # (segments: by the thresholds kept)

    def check(users):
        con.execute("CHECKPOINT")
        shutil.copy(db, tmp_path / "full.duckdb")
        full = connect(str(tmp_path / "full.duckdb"))
        try:
            build_profiles(full, cfg)
            for table, columns in (("features", features), ("profiles", profiles)):
                got, want = (_rows(c, table, columns, users) for c in (con, full))
                assert len(got) == len(users) and _differences(got, want, OWN_TERMS) == []
        finally:
            full.close()

    def event(user, item, typ, ts, **more):
        return {"user_id": user, "item_id": item, "type": typ, "ts": ts, **more}

    # one known user, later than anything in the store
    report = ingest_records(con, [event("u5", "i1", "view", "2024-03-01T23:10:00"),
                                  event("u5", "i1", "buy", "2024-03-01T23:15:00", price=70.0, quantity=2)], "one")
    assert refresher.refresh(report.users) == 1
    check(["u5"])

    # 50 users: known ones, a new user with a longer id, one of a new tenant, new items with long ids, searches
    rng = random.Random(5)
    fresh = ["u-" + "n" * 60, "shop-with-a-longer-name:u1"]
    batch = []
    for user in rng.sample([f"u{k}" for k in range(60)], 48) + fresh:
        for _ in range(rng.randint(1, 5)):
            typ = rng.choice(["view", "cart", "fav", "buy", "search"])
            more = {"price": float(rng.randint(1, 500))} if typ == "buy" else {}
            if typ == "search":
                more["query"] = rng.choice(["hat", "a long query " * 10])
            batch.append(event(user, rng.choice(["i2", "item-" + "x" * 80]), typ,
                               f"2024-04-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00",
                               category_id=rng.choice(["c1", "category-" + "z" * 40]), **more))
    report = ingest_records(con, batch, "fifty")
    assert len(report.users) == 50 and refresher.refresh(report.users) == 50
    check(report.users)

    # one user again: orders (a table empty until now), later still
    ingest_records(con, [{"user_id": "u7", "ts": "2024-06-01T10:00:00", "amount": 120.0, "order_id": "o1"},
                         {"user_id": "u7", "ts": "2024-06-03T10:00:00", "amount": -20.0, "order_id": "o2"}],
                   "orders", table="orders")
    assert refresher.refresh(["u7"]) == 1
    check(["u7"])
