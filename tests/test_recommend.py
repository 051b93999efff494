"""Recommendations and search from a store: trained model, bought items filtered, readable reasons,
cold start, tenants kept apart, BM25 by hand, personalised re-ranking."""
import json

import numpy as np
import pytest

from huaxiang.config import load_config
from huaxiang.ingest import ingest_file
from huaxiang.profile.build import build_profiles
from huaxiang.recommend.search import TitleIndex, personalise, search_store
from huaxiang.recommend.store_model import load_store_recommender, train_store_recommender
from huaxiang.recommend.top_k import recommend, top_indices
from huaxiang.store import connect

from conftest import cli

TITLES = {"i1": "Red Lipstick Matte", "i2": "Lip Liner Pencil", "i3": "Lip Gloss Shine", "i4": "Claw Hammer Steel",
          "i5": "Screwdriver Set", "i6": "Tape Measure", "i7": "Nail Polish Red"}


@pytest.fixture()
def store(tmp_path):
    (tmp_path / "items.csv").write_text("item_id,title,category\n" + "".join(
        f"{i},{t},{'beauty' if i in ('i1', 'i2', 'i3', 'i7') else 'tools'}\n" for i, t in TITLES.items()))
    rows = ["user_id,item_id,type,ts,query"]
    day = 1
    for u in range(12):  # beauty shoppers go lipstick -> liner -> gloss, tool shoppers hammer -> screwdriver -> tape
        seq = ["i1", "i2", "i3"] if u % 2 == 0 else ["i4", "i5", "i6"]
        for n, item in enumerate(seq):
            rows.append(f"u{u},{item},{'buy' if n == 2 else 'view'},2024-01-{day + n:02d},")
    rows += ["alice,i1,buy,2024-01-05,", "alice,i2,view,2024-01-06,", "bob,,search,2024-01-06,red nail polish"]
    (tmp_path / "events.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "reviews.csv").write_text("user_id,item_id,text,rating\nalice,i1,Lovely colour,5\n")
    db = str(tmp_path / "s.duckdb")
    con = connect(db)
    ingest_file(con, str(tmp_path / "items.csv"), "csv", table="items")
    ingest_file(con, str(tmp_path / "events.csv"), "csv")
    ingest_file(con, str(tmp_path / "reviews.csv"), "csv", table="reviews")
    build_profiles(con, load_config())
    train_store_recommender(con, db, "itemknn", "none")
    yield db, con
    con.close()


def test_top_indices_skips_padding_and_excluded():
    s = np.array([9.0, 1.0, 5.0, 5.0, 3.0])
    assert top_indices(s, 3, {4}) == [2, 3, 1]
    assert top_indices(s, 10, {1, 2, 3, 4}) == []


def test_recommend_filters_bought_and_explains(store):
    db, con = store
    rec = load_store_recommender(db)
    result = recommend(con, rec, "alice", k=3)
    ids = [x["item_id"] for x in result["items"]]
    assert result["source"] == "history" and "i1" not in ids  # bought (and reviewed): never again
    assert ids[0] == "i3"  # what lipstick-and-liner shoppers go on to
    assert result["items"][0]["reason"] in ("because you viewed “Lip Liner Pencil”", "because you bought “Red Lipstick Matte”")


def test_cold_start_from_searches_then_popularity(store):
    db, con = store
    rec = load_store_recommender(db)
    bob = recommend(con, rec, "bob", k=2)
    assert bob["source"] == "searches" and bob["items"][0]["item_id"] == "i7"
    assert bob["items"][0]["reason"] == "matches your search “red nail polish”"
    nobody = recommend(con, rec, "nobody", k=2)
    assert nobody["source"] == "popularity" and len(nobody["items"]) == 2


def test_recommend_cli_json(store):
    db, con = store
    con.close()  # the command opens the store itself
    result = json.loads(cli("recommend", "u0", "--db", db, "-k", "2", "--explain", "--json"))
    assert len(result["items"]) == 2 and all(x["reason"] for x in result["items"])


def test_bm25_by_hand():
    index = TitleIndex().fit(["", "red lipstick", "red hammer steel", "blue lipstick"])
    s = index.scores("red lipstick")
    # both words appear in 2 of 3 titles: idf = ln(1 + (3 - 2 + .5) / (2 + .5)); avg length 7/3
    idf = np.log(1 + 1.5 / 2.5)
    tf_part = lambda length: 2.2 / (1 + 1.2 * (0.25 + 0.75 * length / (7 / 3)))
    assert s[1] == pytest.approx(2 * idf * tf_part(2)) and s[2] == pytest.approx(idf * tf_part(3))
    assert s[0] == 0 and index.scores("unknown words").sum() == 0


def test_personalise_adds_scaled_user_scores():
    rel = np.array([1.0, 0.9, 0.1])
    assert personalise(rel, None, 0.5).tolist() == rel.tolist()
    assert personalise(rel, np.array([3.0, 3.0, 3.0]), 0.5).tolist() == rel.tolist()
    out = personalise(rel, np.array([0.0, 10.0, 5.0]), 0.5)
    assert out.tolist() == pytest.approx([1.0, 1.4, 0.35])  # scaled to [0, 1], then weighted
    assert out[1] > out[0]  # the user's preference lifts a slightly less relevant item


def test_search_store_personalised(store):
    db, con = store
    plain = search_store(con, "red", None, 5)
    assert {x["item_id"] for x in plain["items"]} == {"i1", "i7"} and not plain["personalised"]
    mine = search_store(con, "red", "alice", 5, rec=load_store_recommender(db))
    assert mine["personalised"]


def test_search_index_is_kept_until_the_titles_change(store, tmp_path):
    from huaxiang.recommend.search import title_catalogue
    _, con = store
    first = title_catalogue(con, "")
    assert title_catalogue(con, "")[2] is first[2]  # the same index object: not rebuilt
    (tmp_path / "more.csv").write_text("item_id,title\ni8,Red Velvet Lip Tint\n")
    ingest_file(con, str(tmp_path / "more.csv"), "csv", table="items")
    assert title_catalogue(con, "")[2] is not first[2]
    assert "i8" in {x["item_id"] for x in search_store(con, "red", None, 5)["items"]}
    con.execute("UPDATE items SET title = 'Claw Hammer Red' WHERE item_id = 'i4'")  # a changed title counts too
    assert "i4" in {x["item_id"] for x in search_store(con, "red", None, 5)["items"]}


def test_tenant_prefix_test_is_the_schema_rule():
    import duckdb
    from huaxiang.schema import tenant_is_sql, tenant_of
    ids = ["plain", ":lead", "shop:1", "shop:a:b", "shopx:1", "sho:1", "it's:1", "", "a:"]
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT unnest(?) AS id", [ids])
    for tenant in ("", "shop", "it's", "a", "none"):
        got = {i for (i,) in con.execute(f"SELECT id FROM t WHERE {tenant_is_sql('id', tenant)}").fetchall()}
        assert got == {i for i in ids if tenant_of(i) == tenant}, tenant


def test_each_tenant_has_its_own_title_index(tmp_path):
    from huaxiang.recommend.search import title_catalogue
    con = connect(str(tmp_path / "t.duckdb"))
    (tmp_path / "items.csv").write_text("item_id,title\na:1,Red Lipstick\na:2,Blue Lipstick\nb:1,Red Hammer\n"
                                        "3,Red Lipstick\n")
    ingest_file(con, str(tmp_path / "items.csv"), "csv", table="items")
    a, b = title_catalogue(con, "a"), title_catalogue(con, "b")
    assert a[0] == [None, "a:1", "a:2"] and b[0] == [None, "b:1"] and title_catalogue(con, "")[0] == [None, "3"]
    (tmp_path / "more.csv").write_text("item_id,title\nb:2,Red Saw\n")
    ingest_file(con, str(tmp_path / "more.csv"), "csv", table="items")
    assert title_catalogue(con, "a")[2] is a[2] and title_catalogue(con, "b")[2] is not b[2]  # only b's rebuilt
    assert search_store(con, "red", None, 5, tenant="b")["items"][0]["item_id"] in ("b:1", "b:2")
    with pytest.raises(Exception, match="several tenants"):
        search_store(con, "red", None, 5)
    con.close()


def test_serving_fast_paths_equal_the_sparse_products():
    """One user's item-KNN scores and the reasons' similarity block, read straight from the CSR rows, equal
    scipy's matrix products (which the batch path and evaluation use)."""
    import numpy as np
    from scipy import sparse
    from huaxiang.models.seqrec.itemknn import ItemKNN
    from huaxiang.recommend.top_k import _links
    rng = np.random.default_rng(7)
    train = [list(rng.integers(1, 300, rng.integers(2, 30))) for _ in range(400)]
    knn = ItemKNN().fit(train, 300)
    for h in train[:50] + [[5], []]:
        assert np.allclose(knn.score([h])[0], knn.score([h, h])[0], rtol=1e-5, atol=1e-6)
    sim = knn.sim_
    for _ in range(50):
        rows = rng.integers(0, sim.shape[0], rng.integers(1, 40))
        cols = list(dict.fromkeys(int(c) for c in rng.integers(1, sim.shape[0], 12)))
        assert np.allclose(_links(sim, rows, cols), sparse.csr_matrix(sim)[rows][:, cols].toarray())
