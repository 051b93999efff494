"""Recommendations and search never cross tenants (issue 19, finding 3), heavy users are bounded and a user is
forgotten without reloading the recommender (finding 7): on a store of two namespaces (beauty:, retail:) plus the
same Beauty slice without a namespace, so that every Beauty title exists in two tenants."""
import json
import shutil
import subprocess
import sys

import pytest

from huaxiang.ingest import ingest_file
from huaxiang.recommend.search import search_store
from huaxiang.recommend.store_model import HISTORY_LENGTH, load_store_recommender
from huaxiang.recommend.top_k import recommend
from huaxiang.recommend.user_view import user_view
from huaxiang.schema import tenant_of
from huaxiang.store import connect

from conftest import DEMO, cli, write_events

BEAUTY = DEMO / "Beauty_head2000.txt.gz"  # its items file (with titles) beside it is read too
RETAIL = DEMO / "online_retail_ii_10countries.csv.gz"
HEAVY = 3_000  # events of the heavy user (far over HISTORY_LENGTH)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tenancy")
    db = str(tmp / "t.duckdb")
    cli("ingest", str(BEAUTY), "--format", "s3rec", "--namespace", "beauty", "--db", db)
    cli("ingest", str(RETAIL), "--format", "online-retail", "--namespace", "retail", "--db", db)
    cli("ingest", str(BEAUTY), "--format", "s3rec", "--db", db)  # the same users and items, without a namespace
    # users who only searched, for words no title holds: after `build` they have a segment (segment cold start)
    seekers = write_events(tmp / "seekers.csv", [("seeker", "", "search", "2014-07-01", "qqxzv")])
    con = connect(db)
    for ns in ("beauty", None):
        ingest_file(con, seekers, "csv", namespace=ns)
    con.close()
    cli("build", "--db", db)
    cli("train", "recommender", "--model", "itemknn", "--db", db)
    # after training (read from the store): new users with one search, and a heavy user
    con = connect(db)
    newbies = write_events(tmp / "newbies.csv", [("newbie", "", "search", "2014-07-02", "lipstick")])
    for ns in ("beauty", None, "newns"):
        ingest_file(con, newbies, "csv", namespace=ns)
    items = [i for (i,) in con.execute("""SELECT item_id FROM events WHERE item_id IS NOT NULL
        AND NOT contains(item_id, ':') GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 400""").fetchall()]
    seq = [items[(n * 7919) % len(items)] if n % 5 else items[(n // 5) % 40] for n in range(HEAVY)]
    seq[-3:] = [seq[-4]] * 3  # ends on a repeated item
    when = [f"2014-0{1 + n // 1000}-01 00:{n % 1000 // 60:02d}:{n % 1000 % 60:02d}" for n in range(HEAVY)]  # rising
    ingest_file(con, write_events(tmp / "heavy.csv", [("heavy", item, "buy" if n % 11 == 0 else "view", when[n], "")
                                                       for n, item in enumerate(seq)]), "csv")
    con.close()
    return db, seq


@pytest.fixture()
def con(store):
    c = connect(store[0], read_only=True)
    yield c
    c.close()


def a_user(con, tenant: str) -> str:
    """The most active user of `tenant` with a history the recommender knows."""
    return con.execute("""SELECT user_id FROM events WHERE item_id IS NOT NULL AND (CASE WHEN ? = ''
        THEN NOT contains(user_id, ':') ELSE starts_with(user_id, ? || ':') END) AND user_id NOT IN ('heavy')
        GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1""", [tenant, tenant]).fetchone()[0]


def test_recommendations_stay_in_the_users_tenant(store, con):
    rec = load_store_recommender(store[0])
    cases = {a_user(con, "beauty"): "history", a_user(con, "retail"): "history", a_user(con, ""): "history",
             "beauty:newbie": "searches", "newbie": "searches",  # a new user with one search
             "beauty:seeker": "segment", "seeker": "segment",  # searches that match nothing, then the segment
             "beauty:nobody": "popularity", "nobody": "popularity"}  # nothing known at all
    for user, source in cases.items():
        result = recommend(con, rec, user, k=200, explain=True)
        tenants = {tenant_of(x["item_id"]) for x in result["items"]}
        assert result["source"] == source and tenants == {tenant_of(user)}, (user, result["source"], tenants)
        if source == "history":  # the reasons name the user's own items only
            assert len(result["items"]) == 200 and all(x["reason"] for x in result["items"])
    for user in ("newns:newbie", "newns:nobody"):  # a tenant with no items: nothing, and says so
        result = recommend(con, rec, user, k=10)
        assert result["items"] == [] and result["source"] == "no-tenant-items"


def test_search_stays_in_one_tenant(store, con):
    rec = load_store_recommender(store[0])
    for user in ("beauty:newbie", "newbie", a_user(con, "beauty"), a_user(con, ""), a_user(con, "retail")):
        found = search_store(con, "lipstick red", user, 100, rec=rec)
        assert found["tenant"] == tenant_of(user)
        assert {tenant_of(x["item_id"]) for x in found["items"]} <= {tenant_of(user)}
    assert search_store(con, "lipstick", "beauty:newbie", 5)["items"]  # (found, without a recommender too)
    assert not search_store(con, "lipstick", "newns:newbie", 5)["items"]  # a tenant with no titles: nothing
    mine = search_store(con, "lipstick", None, 100, tenant="beauty")
    plain = search_store(con, "lipstick", None, 100, tenant="")
    assert mine["items"] and {tenant_of(x["item_id"]) for x in mine["items"]} == {"beauty"}
    assert plain["items"] and {tenant_of(x["item_id"]) for x in plain["items"]} == {""}
    # the same titles in two tenants, each with an index of its own: the same ranking, the tenant's own ids
    assert [x["item_id"] for x in mine["items"]] == ["beauty:" + x["item_id"] for x in plain["items"]]
    from huaxiang.errors import HuaxiangError
    with pytest.raises(HuaxiangError, match="several tenants .*'beauty'.*--tenant.*tenant="):
        search_store(con, "lipstick", None, 5)
    with pytest.raises(HuaxiangError, match="not of tenant"):
        search_store(con, "lipstick", "beauty:newbie", 5, tenant="retail")


def test_search_cli_names_a_tenant(store):
    db = store[0]
    found = json.loads(cli("search", "lipstick", "--tenant", "beauty", "--db", db, "--no-embeddings", "--json"))
    assert found["items"] and all(x["item_id"].startswith("beauty:") for x in found["items"])
    plain = json.loads(cli("search", "lipstick", "--tenant", "", "--db", db, "--no-embeddings", "--json"))
    assert plain["items"] and all(":" not in x["item_id"] for x in plain["items"])
    proc = subprocess.run([sys.executable, "-m", "huaxiang.cli", "search", "lipstick", "--db", db, "--no-embeddings"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "--tenant" in proc.stderr and "several tenants" in proc.stderr
    assert "No items of newns:x's tenant" in cli("recommend", "newns:x", "--db", db)


def test_a_heavy_users_history_is_their_latest_items(store, con):
    db, seq = store
    rec = load_store_recommender(db)
    expected = [item for n, item in enumerate(seq) if n == 0 or seq[n - 1] != item][-HISTORY_LENGTH:]
    view = user_view(con, rec, "heavy")  # read from the store: not in the recommender's snapshot
    assert [rec.items[i - 1] for i, _ in view.history] == expected
    assert user_view(con, rec, "heavy") is view  # kept until the user's data changes
    result = recommend(con, rec, "heavy", k=10)
    assert result["source"] == "history" and len(result["items"]) == 10
    short = load_store_recommender(db, history_length=5)
    assert [short.items[i - 1] for i, _ in user_view(con, short, "heavy").history] == expected[-5:]
    known = a_user(con, "beauty")  # from the snapshot: bounded alike
    assert 0 < len(user_view(con, short, known).history) <= 5


def test_forget_user_keeps_serving_without_a_reload(store, tmp_path):
    db = str(tmp_path / "copy.duckdb")  # (a copy: this test deletes users)
    shutil.copy(store[0], db)
    shutil.copytree(store[0] + ".models", db + ".models")
    rw = connect(db)
    try:
        rec = load_store_recommender(db)
        known = a_user(rw, "retail")
        assert recommend(rw, rec, known)["source"] == "history" and known in rec.snapshot["histories"]
        assert recommend(rw, rec, "heavy")["source"] == "history"  # (its view is now kept)
        for user in (known, "heavy"):
            for table in ("events", "reviews", "profiles"):
                rw.execute(f"DELETE FROM {table} WHERE user_id = ?", [user])
        assert rec.forget_user(known) >= 1 and rec.forget_user("heavy") == 0  # the latter held in no snapshot part
        assert all(known not in rec.snapshot[part] for part in ("histories", "liked", "queries", "profiles"))
        for user in (known, "heavy"):
            after = recommend(rw, rec, user)
            assert after["source"] == "popularity" and after["items"], user
            assert {tenant_of(x["item_id"]) for x in after["items"]} == {tenant_of(user)}
    finally:
        rw.close()
