"""Forgetting a person: `huaxiang forget USER_ID` and `DELETE /v1/users/{id}` remove them from every stage that
holds them — every store table with a user_id, review sentiment and mentions of their reviews, cached vectors of
their reviews and of the searches only they made, the knowledge graph, the quarantine, and the recommender's
serving snapshot."""
from __future__ import annotations

from .errors import HuaxiangError
from .recommend.store_model import drop_user
from .store import has_table, transaction


def _tables_with(con, column: str) -> list[str]:
    return [t for (t,) in con.execute("""SELECT table_name FROM information_schema.columns
        WHERE column_name = ? AND table_schema = 'main' ORDER BY 1""", [column]).fetchall()]


def forget_user(con, db: str, user_id: str) -> dict[str, int]:
    """Removes `user_id` from every table, the knowledge graph, the text-vector cache, the quarantine and the
    recommender's serving snapshot: the store in one transaction, the snapshot right after. Returns the rows
    removed per place; a user of whom nothing is found is an error. Trained model weights keep what they learned
    in aggregate until the next training."""
    has = _tables_with(con, "user_id")
    removed: dict[str, int] = {}

    def delete(place: str, sql: str, params: list) -> None:
        n = con.execute(sql, params).fetchone()[0]  # DuckDB's DELETE returns the number of rows it removed
        if n:
            removed[place] = removed.get(place, 0) + n

    with transaction(con):
        reviews = [r for (r,) in con.execute("SELECT review_id FROM reviews WHERE user_id = ?", [user_id]).fetchall()]
        queries = [q for (q,) in con.execute("""SELECT DISTINCT query FROM events WHERE user_id = ? AND query IS NOT NULL
            AND query NOT IN (SELECT query FROM events WHERE user_id <> ? AND query IS NOT NULL)""",
                                             [user_id, user_id]).fetchall()]
        for table in ("review_sentiment", "review_mentions"):
            if has_table(con, table):
                delete(table, f"DELETE FROM {table} WHERE review_id IN (SELECT unnest(?))", [reviews])
        if has_table(con, "embeddings"):
            delete("embeddings", """DELETE FROM embeddings WHERE (kind = 'review'
                AND key IN (SELECT unnest(?))) OR (kind = 'query' AND key IN (SELECT unnest(?)))""",
                   [reviews, queries])
        if has_table(con, "triples"):
            node = "user:" + user_id
            delete("triples", "DELETE FROM triples WHERE subject = ? OR object = ?", [node, node])
        delete("quarantine", "DELETE FROM quarantine WHERE contains(raw, ?)", [user_id])
        for table in has:
            delete(table, f"DELETE FROM {table} WHERE user_id = ?", [user_id])
    hits = drop_user(db, user_id)
    if hits:
        removed["recommender snapshot"] = hits
    if not removed:
        raise HuaxiangError(f"unknown user {user_id!r}: nothing of them is in the store")
    return removed
