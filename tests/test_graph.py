"""The knowledge graph: triples from a tiny store, a user's neighbourhood, CSV and GraphML export."""
import csv

import networkx as nx
import pytest

from huaxiang.config import load_config
from huaxiang.errors import HuaxiangError
from huaxiang.graph.triples import build_triples, export, neighbourhood
from huaxiang.ingest import ingest_file
from huaxiang.profile.build import build_profiles
from huaxiang.store import connect


@pytest.fixture()
def con(tmp_path):
    (tmp_path / "items.csv").write_text("item_id,title,brand,category\ni1,Red Lipstick,Acme,beauty\n"
                                        "i2,Claw Hammer,Forge,tools\n")
    (tmp_path / "events.csv").write_text("user_id,item_id,type,ts,query\nu1,i1,view,2024-01-01,\n"
                                         "u1,i1,view,2024-01-02,\nu1,i1,buy,2024-01-02,\n"
                                         "u1,,search,2024-01-03,Lipstick \nu2,i2,view,2024-01-03,\n")
    c = connect(str(tmp_path / "s.duckdb"))
    ingest_file(c, str(tmp_path / "items.csv"), "csv", table="items")
    ingest_file(c, str(tmp_path / "events.csv"), "csv")
    build_profiles(c, load_config())
    yield c
    c.close()


def test_triples_and_neighbourhood(con):
    counts = build_triples(con)
    assert counts["behaviour"] == 3  # u1 viewed i1 (×2), u1 bought i1, u2 viewed i2
    assert counts["brands"] == 2 and counts["categories"] == 2 and counts["searches"] == 1
    edges = {(s, p, o): w for s, p, o, w in neighbourhood(con, "user:u1", depth=2)}
    assert edges[("user:u1", "viewed", "item:i1")] == 2
    assert edges[("user:u1", "bought", "item:i1")] == 1
    assert edges[("user:u1", "searched", "query:lipstick")] == 1
    assert edges[("user:u1", "prefers_category", "category:beauty")] == 1.0
    assert edges[("user:u1", "prefers_brand", "brand:Acme")] == 1.0
    assert ("item:i1", "has_brand", "brand:Acme") in edges  # depth 2: the items' brands
    assert not any("u2" in s or "u2" in o for s, _, o in edges)
    with pytest.raises(HuaxiangError, match="not in the knowledge graph"):
        neighbourhood(con, "user:nobody")


def test_export_csv_and_graphml(con, tmp_path):
    build_triples(con)
    n = export(con, str(tmp_path / "g.csv"), "csv")
    rows = list(csv.DictReader(open(tmp_path / "g.csv")))
    assert len(rows) == n and {"subject", "predicate", "object", "weight"} == set(rows[0])
    m = export(con, str(tmp_path / "g.graphml"), "graphml")
    g = nx.read_graphml(tmp_path / "g.graphml")
    assert g.number_of_edges() == m == n
    assert g.nodes["brand:Acme"]["kind"] == "brand"
