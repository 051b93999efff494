"""Forgetting a person: `huaxiang forget USER_ID` and `DELETE /v1/users/{id}` remove them from every stage that
holds them — every store table with a user_id, review sentiment and mentions of their reviews, cached vectors of
their reviews and of the searches only they made, the knowledge graph, the quarantine, and the recommender's
serving snapshot — matching the id exactly everywhere. Unless told to let them return, the id is then suppressed:
its SHA-256 goes into `forgotten_users` (the id itself is kept nowhere), and every ingest refuses their rows."""
from __future__ import annotations

import hashlib

from .errors import HuaxiangError
from .ingest.validate import blank_to_null
from .recommend.store_model import drop_user
from .store import has_table, transaction

SUPPRESSION = "suppression list"  # the place name, in what forget_user returns, of a lifted suppression
SUPPRESS = "INSERT OR IGNORE INTO forgotten_users (id_hash) VALUES (?)"


def _tables_with(con, column: str) -> list[str]:
    """The store's tables with `column` (not views, nor this connection's temporary tables)."""
    return [t for (t,) in con.execute("""SELECT c.table_name FROM information_schema.columns c
        JOIN information_schema.tables t USING (table_catalog, table_schema, table_name)
        WHERE c.column_name = ? AND c.table_schema = 'main' AND c.table_catalog = current_database()
          AND t.table_type = 'BASE TABLE' ORDER BY 1""", [column]).fetchall()]


def id_hash(user_id: str) -> str:
    """What `forgotten_users` holds for a user id: the hex SHA-256 of its UTF-8 (DuckDB's `sha256`)."""
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()


def forget_user(con, db: str, user_id: str, suppress: bool = True) -> dict[str, int]:
    """Removes `user_id` (as stored: namespaced, pseudonymised) from every table, the knowledge graph, the
    text-vector cache, the quarantine and the recommender's serving snapshot: the store in one transaction, the
    snapshot right after. `suppress`: from then on every ingest refuses the user's rows (stored nowhere, counted
    as `suppressed`); False lets them come back, and lifts an earlier suppression (counted under "suppression
    list"). Returns the rows removed per place; a user of whom nothing is found (and no suppression lifted) is an
    error. Trained model weights keep what they learned in aggregate until the next training."""
    try:
        digest = id_hash(user_id)
    except UnicodeEncodeError:  # a lone surrogate: no stored id holds one
        raise HuaxiangError(f"unknown user {user_id!r}: nothing of them is in the store") from None
    has = [t for t in _tables_with(con, "user_id") if t != "quarantine"]
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
        # a row quarantined before the quarantine had `user_id`: the user id its raw JSON holds, trimmed as stored
        # (a raw that is no JSON object, e.g. an unreadable line, names nobody that can be told for sure)
        old = blank_to_null("CASE WHEN json_valid(raw) THEN json_extract_string(raw, '$.user_id') END")
        delete("quarantine", f"DELETE FROM quarantine WHERE user_id = ? OR (user_id IS NULL AND {old} = ?)",
               [user_id, user_id])
        for table in has:
            delete(table, f"DELETE FROM {table} WHERE user_id = ?", [user_id])
        if suppress:
            if removed:  # only someone who was there: an unknown id stays an error, and records nothing
                con.execute(SUPPRESS, [digest])
        else:
            delete(SUPPRESSION, "DELETE FROM forgotten_users WHERE id_hash = ?", [digest])
    hits = drop_user(db, user_id)
    if hits:
        removed["recommender snapshot"] = hits
        if suppress:
            with transaction(con):
                con.execute(SUPPRESS, [digest])
    if not removed:
        raise HuaxiangError(f"unknown user {user_id!r}: nothing of them is in the store")
    return removed
