"""Protecting the people behind the data: PII masked at ingest, user ids pseudonymised with a keyed HMAC.

Masking runs inside the ingest SQL (DuckDB's RE2), on review text and search queries, before a row is stored
or any model reads it. Patterns (applied in this order; each match becomes its tag):
  [email]    name@domain.tld
  [id-card]  Chinese resident ID: 6-digit area, birth date 18/19/20YYMMDD, 3 digits, check digit or X
  [phone]    Chinese mobiles (optional +86), and any +/digit run of 9–15 digits with spaces or dashes
  [address]  Chinese: …路/街/道/巷/弄 + number + 号; English: number + 1–4 capitalised words + St/Road/Ave/…
Pseudonymisation: when the environment variable HUAXIANG_ID_KEY is set, every user id becomes
`[namespace:]u_<first 20 hex of HMAC-SHA256(key, id)>` at ingest. The key is never written to the store;
the same key maps the same person to the same pseudonym, so later batches join up.
"""
from __future__ import annotations

import hashlib
import hmac
import os

from .errors import HuaxiangError
from .schema import sql_literal

KEY_ENV = "HUAXIANG_ID_KEY"
_HAN = r"[\x{4e00}-\x{9fff}]"
PII_PATTERNS = [
    ("email", r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
    ("id-card", r"[1-9][0-9]{5}(18|19|20)[0-9]{2}(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx]"),
    ("phone", r"(\+?86[ -]?)?1[3-9][0-9]{9}|\+?[0-9][0-9 -]{7,17}[0-9]"),
    ("address", _HAN + r"{0,12}(路|街|道|巷|弄)[0-9]{1,5}号(" + _HAN + r"|[0-9A-Za-z])*"
     r"|\b[0-9]{1,5} ([A-Z][a-z]+ ){1,4}(Street|St|Road|Rd|Avenue|Ave|Boulevard|Blvd|Lane|Ln|Drive|Dr|Way|Court|Ct)\b\.?"),
]
MASKED = {"reviews": ("text",), "events": ("query",)}  # free text that people write about themselves


def mask_sql(expr: str) -> str:
    """SQL: `expr` with every PII pattern replaced by its tag."""
    for name, pattern in PII_PATTERNS:
        expr = f"regexp_replace({expr}, {sql_literal(pattern)}, '[{name}]', 'g')"
    return expr


def id_key() -> bytes | None:
    key = os.environ.get(KEY_ENV)
    return key.encode() if key else None


def pseudonym(raw_id: str | None, key: bytes) -> str | None:
    """`shop:123` -> `shop:u_<hmac>`: the namespace stays readable, the person does not."""
    if raw_id is None:
        return None
    ns, sep, local = raw_id.rpartition(":") if ":" in raw_id else ("", "", raw_id)
    return f"{ns}{sep}u_{hmac.new(key, local.encode('utf-8', 'surrogatepass'), hashlib.sha256).hexdigest()[:20]}"


def register_pseudonym(con) -> str | None:
    """Registers `hx_pseudonym(VARCHAR)` on `con` when a key is configured; returns the SQL function name."""
    key = id_key()
    if key is None:
        return None
    try:
        con.create_function("hx_pseudonym", lambda v: pseudonym(v, key), ["VARCHAR"], "VARCHAR",
                            null_handling="special", side_effects=False)
    except Exception as exc:  # already registered on this connection
        if "already exists" not in str(exc):
            raise
    return "hx_pseudonym"


def _tables_with(con, column: str) -> list[str]:
    return [t for (t,) in con.execute("""SELECT table_name FROM information_schema.columns
        WHERE column_name = ? AND table_schema = 'main' ORDER BY 1""", [column]).fetchall()]


def forget_user(con, db: str, user_id: str) -> dict[str, int]:
    """Removes `user_id` from every table, the knowledge graph, the text-vector cache, the quarantine and the
    recommender's serving snapshot: the store in one transaction, the snapshot right after. Returns the rows
    removed per place; a user of whom nothing is found is an error. Trained model weights keep what they learned
    in aggregate until the next training."""
    import json

    from .recommend.store_model import model_dir
    from .store import has_table
    has = _tables_with(con, "user_id")
    removed: dict[str, int] = {}

    def delete(place: str, sql: str, params: list) -> None:
        n = con.execute(sql, params).fetchone()[0]  # DuckDB's DELETE returns the number of rows it removed
        if n:
            removed[place] = removed.get(place, 0) + n

    con.execute("BEGIN TRANSACTION")
    try:
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
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    snap = model_dir(db) / "snapshot.json"
    if snap.exists():
        data = json.loads(snap.read_text())
        hits = sum(data[k].pop(user_id, None) is not None for k in ("histories", "liked", "queries", "profiles"))
        if hits:
            snap.write_text(json.dumps(data, ensure_ascii=False))
            removed["recommender snapshot"] = hits
    if not removed:
        raise HuaxiangError(f"unknown user {user_id!r}: nothing of them is in the store")
    return removed
