"""The canonical records: every adapter maps its source onto these tables, every stage reads them.

A column is (name, type, required). Types are DuckDB types; validation turns raw strings into them.
"""
from __future__ import annotations

from dataclasses import dataclass

# `click`: a click on something huaxiang showed (a recommendation, a search result); attributed to what was shown
# (huaxiang.experiments), and an interaction with the item like a view
EVENT_TYPES = ("view", "cart", "fav", "buy", "search", "review", "click")

# Common spellings in platform exports, mapped onto the canonical event type.
EVENT_TYPE_ALIASES = {
    "pv": "view", "detail": "view", "page_view": "view", "pageview": "view",
    "addtocart": "cart", "add_to_cart": "cart", "add-to-cart": "cart",
    "favorite": "fav", "favourite": "fav", "collect": "fav", "like": "fav", "wishlist": "fav",
    "purchase": "buy", "order": "buy", "transaction": "buy", "checkout": "buy",
    "query": "search", "rate": "review", "rating": "review",
}

# The one rule for reading a tenant from an id: a namespaced id is `tenant:local` and the tenant is the text before
# the FIRST colon (`shop:session:42` -> `shop`); an id without a colon (or starting with one) has no tenant ('').
TENANT_SEPARATOR = ":"
TENANT_PATTERN = r"^([^:]+):"  # the same rule as a regular expression (SQL and Ibis), group 1 = the tenant


def tenant_of(an_id: str) -> str:
    """The tenant of a namespaced id (`shop:42` -> `shop`); '' for plain ids."""
    head, sep, _ = an_id.partition(TENANT_SEPARATOR)
    return head if sep else ""


def tenant_sql(column: str) -> str:
    """SQL (DuckDB) for the tenant of the ids in `column`."""
    return f"regexp_extract({column}, '{TENANT_PATTERN}', 1)"


def is_tenant_name(name: object) -> bool:
    """Can `name` be a tenant one asks for (a key's, a search's)? A string of at most 100 characters without ':'
    or NUL; '' is the tenant of ids without a namespace."""
    return isinstance(name, str) and TENANT_SEPARATOR not in name and "\x00" not in name and len(name) <= 100


def tenant_is_sql(column: str, tenant: str) -> str:
    """SQL (DuckDB): `column` holds an id of `tenant` — the same rule as a prefix test, which needs no regular
    expression (for '': no separator at all, or a leading one). `tenant` must hold no ':' nor NUL."""
    if tenant:
        return f"starts_with({column}, {sql_literal(tenant + TENANT_SEPARATOR)})"
    return f"(NOT contains({column}, '{TENANT_SEPARATOR}') OR starts_with({column}, '{TENANT_SEPARATOR}'))"


def tenant_expr(column):
    """Ibis: the tenant of the ids in `column` (runs on DuckDB and Spark)."""
    return column.re_extract(TENANT_PATTERN, 1)


# Longest text we keep in any one field; longer values are quarantined, not truncated.
MAX_TEXT_CHARS = 20_000
MAX_ID_CHARS = 256
MAX_REQUEST_ID_CHARS = 64  # events.request_id (the server's are 32 hex digits)


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # VARCHAR, DOUBLE, BIGINT, TIMESTAMP, EVENT_TYPE (VARCHAR restricted to EVENT_TYPES)
    required: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    key: str | None  # the column that makes a row unique; derived from content when a source has none

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


EVENTS = Table("events", (
    Column("event_id", "VARCHAR"),
    Column("user_id", "VARCHAR", True),
    Column("item_id", "VARCHAR"),
    Column("category_id", "VARCHAR"),
    Column("type", "EVENT_TYPE", True),
    Column("ts", "TIMESTAMP", True),
    Column("price", "DOUBLE"),
    Column("quantity", "DOUBLE"),
    Column("query", "VARCHAR"),
    Column("session_id", "VARCHAR"),
    # the answer (an exposure's request_id) a click, cart or purchase came from, when the client sends it back
    # (huaxiang.experiments.attribution); added after stores existed: kept last, out of the content key
    Column("request_id", "VARCHAR"),
), key="event_id")

ITEMS = Table("items", (
    Column("item_id", "VARCHAR", True),
    Column("title", "VARCHAR"),
    Column("brand", "VARCHAR"),
    Column("category", "VARCHAR"),
    Column("price", "DOUBLE"),
    Column("attributes", "VARCHAR"),  # JSON object as text
), key="item_id")

REVIEWS = Table("reviews", (
    Column("review_id", "VARCHAR"),
    Column("user_id", "VARCHAR"),
    Column("item_id", "VARCHAR"),
    Column("ts", "TIMESTAMP"),
    Column("rating", "DOUBLE"),
    Column("text", "VARCHAR", True),
    Column("language", "VARCHAR"),
    Column("category", "VARCHAR"),
    Column("label", "BIGINT"),  # a known sentiment label (1 positive, 0 negative), when the source has one
), key="review_id")

ORDERS = Table("orders", (
    Column("order_id", "VARCHAR"),
    Column("user_id", "VARCHAR", True),
    Column("ts", "TIMESTAMP", True),
    Column("amount", "DOUBLE", True),  # negative for a cancellation / return
    Column("quantity", "DOUBLE"),
    Column("invoice", "VARCHAR"),
), key="order_id")

TABLES = {t.name: t for t in (EVENTS, ITEMS, REVIEWS, ORDERS)}

# Columns added to a table after stores were made with it: a store gains them (NULL in its old rows, `added_ddl`),
# they come last in the table, and a row's content key (ingest, for sources without ids) leaves them out, so that
# the keys of a file read before they came stay the same and a re-ingest still finds its duplicates.
ADDED_COLUMNS = {"events": ("request_id",)}

# What the store refuses. `quarantine`: rejected rows, with the row's user id as it would have been stored
# (namespaced, pseudonymised; NULL when none could be read), so that forgetting a person finds their rows exactly
# (`user_id` came later: a store made before it gains the column, NULL in its old rows). `forgotten_users`: the
# SHA-256 (hex) of each forgotten user id, as stored, whose rows every ingest refuses.
QUARANTINE_DDL = """
CREATE TABLE IF NOT EXISTS quarantine (
    source VARCHAR, line BIGINT, target VARCHAR, field VARCHAR, reason VARCHAR, raw VARCHAR,
    ingested_at TIMESTAMP DEFAULT current_timestamp, user_id VARCHAR
);
ALTER TABLE quarantine ADD COLUMN IF NOT EXISTS user_id VARCHAR;
CREATE TABLE IF NOT EXISTS forgotten_users (
    id_hash VARCHAR PRIMARY KEY, forgotten_at TIMESTAMP DEFAULT current_timestamp
)
"""

# What was shown (huaxiang.experiments.exposures): one row per item of a recommendation or search answer;
# `propensity` (the probability serving had of showing that item there, when it explores: experiments.explore) came
# later: a store made before it gains the column, NULL in its old rows.
EXPOSURES_DDL = """
CREATE TABLE IF NOT EXISTS exposures (
    request_id VARCHAR, ts TIMESTAMP, user_id VARCHAR, item_id VARCHAR, position INTEGER, score DOUBLE,
    surface VARCHAR, model VARCHAR, version VARCHAR, experiment VARCHAR, variant VARCHAR, latency_ms DOUBLE,
    propensity DOUBLE
);
ALTER TABLE exposures ADD COLUMN IF NOT EXISTS propensity DOUBLE"""

# The experiments (huaxiang.experiments.catalog): variants is JSON [{"name", "model", "share"}], the control first.
EXPERIMENTS_DDL = """
CREATE TABLE IF NOT EXISTS experiments (
    name VARCHAR PRIMARY KEY, tenant VARCHAR, salt VARCHAR NOT NULL, variants VARCHAR NOT NULL,
    status VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL, stopped_at TIMESTAMP
)"""

INGESTS_DDL = """
CREATE TABLE IF NOT EXISTS ingests (
    source VARCHAR, format VARCHAR, rows_read BIGINT, rows_added BIGINT, rows_duplicate BIGINT,
    rows_quarantined BIGINT, finished_at TIMESTAMP DEFAULT current_timestamp
)"""


def sql_literal(text: str) -> str:
    """A SQL string literal holding `text` (single quotes doubled)."""
    return "'" + text.replace("'", "''") + "'"


def sql_type(column: Column) -> str:
    return "VARCHAR" if column.type == "EVENT_TYPE" else column.type


def ddl(table: Table) -> str:
    cols = ", ".join(f"{c.name} {sql_type(c)}" for c in table.columns)
    return f"CREATE TABLE IF NOT EXISTS {table.name} ({cols})"


def added_ddl(table: Table) -> list[str]:
    """The statements that give a store made before them the table's added columns (`ADDED_COLUMNS`)."""
    added = ADDED_COLUMNS.get(table.name, ())
    return [f"ALTER TABLE {table.name} ADD COLUMN IF NOT EXISTS {c.name} {sql_type(c)}"
            for c in table.columns if c.name in added]
