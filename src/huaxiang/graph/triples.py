"""Triples `(subject, predicate, object, weight)` built from the store, one SQL statement each.

Nodes are typed by a prefix: `user:…`, `item:…`, `brand:…`, `category:…`, `segment:…`, `query:…`,
`aspect:…`. Edges from behaviour carry counts; preference edges carry the profile's affinity share;
edges from reviews (praises / criticises an aspect, mentions a brand) carry the number of reviews.
"""
from __future__ import annotations

import duckdb
import networkx as nx

from ..errors import HuaxiangError
from ..store import has_table, transaction

PREDICATE = {"view": "viewed", "click": "clicked", "cart": "carted", "fav": "favourited", "buy": "bought",
             "review": "reviewed", "search": "searched"}

_BEHAVIOUR = "CASE type " + " ".join(f"WHEN '{t}' THEN '{p}'" for t, p in PREDICATE.items()) + " END"

RULES = {
    "behaviour": f"""SELECT 'user:' || user_id, {_BEHAVIOUR}, 'item:' || item_id, count(*)::DOUBLE
                     FROM events WHERE item_id IS NOT NULL GROUP BY ALL""",
    "searches": """SELECT 'user:' || user_id, 'searched', 'query:' || lower(trim(query)), count(*)::DOUBLE
                   FROM events WHERE type = 'search' AND query IS NOT NULL GROUP BY ALL""",
    "ratings": """SELECT 'user:' || user_id, 'rated', 'item:' || item_id, avg(rating)
                  FROM reviews WHERE user_id IS NOT NULL AND item_id IS NOT NULL AND rating IS NOT NULL GROUP BY ALL""",
    "brands": "SELECT 'item:' || item_id, 'has_brand', 'brand:' || brand, 1.0 FROM items WHERE brand IS NOT NULL",
    "categories": """SELECT 'item:' || item_id, 'in_category', 'category:' || category, 1.0 FROM (
                       SELECT item_id, category FROM items WHERE category IS NOT NULL
                       UNION SELECT DISTINCT item_id, category_id FROM events
                       WHERE item_id IS NOT NULL AND category_id IS NOT NULL)""",
    # from the built profiles
    "preferred categories": """SELECT 'user:' || user_id, 'prefers_category', 'category:' || c.name, c.share
                               FROM (SELECT user_id, unnest(top_categories) AS c FROM profiles)""",
    "preferred brands": """SELECT 'user:' || user_id, 'prefers_brand', 'brand:' || b.name, b.share
                           FROM (SELECT user_id, unnest(top_brands) AS b FROM profiles)""",
    "segments": "SELECT 'user:' || user_id, 'in_segment', 'segment:' || segment, 1.0 FROM profiles",
    # from what users write (weight = reviews)
    "praised aspects": """SELECT 'user:' || user_id, 'praises', 'aspect:' || a.name, a.n
                          FROM (SELECT user_id, unnest(aspects_praised) AS a FROM profiles)""",
    "criticised aspects": """SELECT 'user:' || user_id, 'criticises', 'aspect:' || a.name, a.n
                             FROM (SELECT user_id, unnest(aspects_criticised) AS a FROM profiles)""",
    "mentioned brands": """SELECT 'user:' || user_id, 'mentions_brand', 'brand:' || b.name, b.n
                           FROM (SELECT user_id, unnest(brands_mentioned) AS b FROM profiles)""",
}


def build_triples(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Replaces the `triples` table; returns the number of triples per rule."""
    if not has_table(con, "profiles"):
        raise HuaxiangError("no profiles in this store yet: run `huaxiang build` first")
    counts = {}
    with transaction(con):
        con.execute("CREATE OR REPLACE TABLE triples (subject VARCHAR, predicate VARCHAR, object VARCHAR, "
                    "weight DOUBLE, rule VARCHAR)")
        for rule, sql in RULES.items():
            counts[rule] = con.execute(f"INSERT INTO triples SELECT *, ? FROM ({sql})", [rule]).fetchone()[0]
    return counts


def neighbourhood(con: duckdb.DuckDBPyConnection, node: str, depth: int = 1, limit: int = 20) -> list[tuple]:
    """Edges around `node` (e.g. `user:42`): its own (both directions, strongest first, `limit` per
    predicate), then at depth 2 the edges of the items it touched to their brands and categories."""
    if not has_table(con, "triples"):
        raise HuaxiangError("no knowledge graph in this store yet: run `huaxiang graph --build` first")
    edges = con.execute("""SELECT subject, predicate, object, weight FROM (
            SELECT *, row_number() OVER (PARTITION BY predicate ORDER BY weight DESC, object, subject) AS rn
            FROM triples WHERE subject = ? OR object = ?) WHERE rn <= ? ORDER BY predicate, weight DESC, object""",
                        [node, node, limit]).fetchall()
    if not edges:
        raise HuaxiangError(f"{node!r} is not in the knowledge graph (nodes look like user:ID, item:ID, brand:NAME)")
    if depth >= 2:
        items = sorted({o for s, _, o, _ in edges if o.startswith("item:")} | {s for s, _, o, _ in edges if s.startswith("item:")})
        if items:
            edges += con.execute("""SELECT subject, predicate, object, weight FROM triples
                WHERE subject IN (SELECT unnest(?)) AND predicate IN ('has_brand', 'in_category')
                ORDER BY subject, predicate, object""", [items]).fetchall()
    return edges


def to_networkx(con: duckdb.DuckDBPyConnection) -> nx.MultiDiGraph:
    g = nx.MultiDiGraph()
    for s, p, o, w in con.execute("SELECT subject, predicate, object, weight FROM triples").fetchall():
        g.add_edge(s, o, key=p, predicate=p, weight=float(w))
    for node in g.nodes:
        g.nodes[node]["kind"] = node.split(":", 1)[0]
    return g


def export(con: duckdb.DuckDBPyConnection, path: str, fmt: str) -> int:
    """Writes the triples as CSV (subject,predicate,object,weight) or GraphML; returns the edge count."""
    if not has_table(con, "triples"):
        raise HuaxiangError("no knowledge graph in this store yet: run `huaxiang graph --build` first")
    if fmt == "csv":
        con.execute(f"COPY (SELECT subject, predicate, object, weight FROM triples ORDER BY ALL) TO '{_path(path)}' "
                    "(HEADER, DELIMITER ',')")
        return con.execute("SELECT count(*) FROM triples").fetchone()[0]
    if fmt == "graphml":
        g = to_networkx(con)
        nx.write_graphml(g, path)
        return g.number_of_edges()
    raise HuaxiangError(f"unknown export format {fmt!r} (csv or graphml)")


def _path(path: str) -> str:
    return path.replace("'", "''")
