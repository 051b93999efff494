"""One adapter per source format: which reader splits the file, and how its columns map onto
the canonical tables (a SQL select list over the raw string columns, one per target table).

Adapters own all knowledge of a format; nothing downstream knows where a row came from.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterator

import pyarrow as pa

from .. import schema
from ..errors import HuaxiangError
from .readers import Chunk, Progress, Reject, csv_chunks, jsonl_chunks, open_text, parquet_chunks, whitespace_chunks

Reader = Callable[[str, Progress | None], Iterator[Chunk]]


@dataclass
class Source:
    path: str
    reader: Reader
    # target table -> (select list over `raw` naming canonical columns, optional WHERE condition)
    projections: dict[str, tuple[str, str | None]] | Callable[[list[str]], dict[str, tuple[str, str | None]]]
    raw_columns: list[str] = field(default_factory=list)  # added as NULL when a chunk lacks them


def q(name: str) -> str:
    """A raw column name as a SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _id(col: str) -> str:
    """An id read as a float by a spreadsheet (`12417.0`) is the integer id."""
    return f"regexp_replace(trim({q(col)}), '\\.0+$', '')"


# ---------------------------------------------------------------- Taobao UserBehavior
TAOBAO_COLUMNS = ["user_id", "item_id", "category_id", "behavior_type", "timestamp"]


def taobao(path: str) -> list[Source]:
    return [Source(path, partial(csv_chunks, header=TAOBAO_COLUMNS), {
        "events": ("user_id, item_id, category_id, behavior_type AS type, timestamp AS ts", None)})]


# ---------------------------------------------------------------- Amazon 2014 S3-Rec
# Sequences carry order but no time: position k of n is stamped `S3REC_ANCHOR - (n - k) days`
# (the end of the Amazon 2014 crawl, at noon): order is real, gaps and hours are not.
S3REC_ANCHOR = "2014-07-23 12:00:00"


def _sequence_chunks(path: str, progress: Progress | None = None) -> Iterator[Chunk]:
    users, items, pos, lengths, lines, rejects = [], [], [], [], [], []
    with open_text(path, progress) as f:
        for n, text in enumerate(f, start=1):
            parts = text.split()
            if not parts:
                continue
            if len(parts) < 2:
                rejects.append(Reject(n, "a sequence line needs a user id and at least one item", text[:1000]))
                continue
            user, seq = parts[0], parts[1:]
            users += [user] * len(seq)
            items += seq
            pos += [str(k) for k in range(1, len(seq) + 1)]
            lengths += [str(len(seq))] * len(seq)
            lines += [n] * len(seq)
    yield Chunk(pa.table({"user": pa.array(users, pa.string()), "item": pa.array(items, pa.string()),
                          "pos": pa.array(pos, pa.string()), "n": pa.array(lengths, pa.string()),
                          "_line": pa.array(lines, pa.int64())}), rejects)


def _attribute_chunks(path: str, progress: Progress | None = None) -> Iterator[Chunk]:
    with open_text(path, progress) as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HuaxiangError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise HuaxiangError(f"{path}: line 1: expected a JSON object {{item_id: [attribute ids]}}")
    ids = list(data)
    yield Chunk(pa.table({"item": pa.array(ids, pa.string()),
                          "attrs": pa.array([json.dumps(data[i]) for i in ids], pa.string()),
                          "_line": pa.array([1] * len(ids), pa.int64())}))


def _s3rec_items(path: str) -> Source:
    def projections(cols: list[str]):
        title = "title" if "title" in cols else "NULL"
        textid = q("idgenrec_textid") if "idgenrec_textid" in cols else "NULL"
        return {"items": (f"item_id, {title} AS title, "
                          f"json_object('asin', asin, 'textid', {textid})::VARCHAR AS attributes", None)}
    return Source(path, partial(csv_chunks, delimiter="\t"), projections)


def s3rec(path: str) -> list[Source]:
    """`X.txt` sequences, plus `X_items.tsv` and `X_item2attributes.json` beside it when present."""
    name = os.path.basename(path)
    if re.search(r"_items\.tsv(\.gz)?$", name):
        return [_s3rec_items(path)]
    if re.search(r"_item2attributes\.json(\.gz)?$", name):
        return [Source(path, _attribute_chunks, {
            "items": ("item AS item_id, json_object('attr_ids', attrs::JSON)::VARCHAR AS attributes", None)})]
    base = re.sub(r"\.txt(\.gz)?$", "", path)
    sources = [Source(path, _sequence_chunks, {"events": (
        "user AS user_id, item AS item_id, 'buy' AS type, "
        f"CAST(TIMESTAMP '{S3REC_ANCHOR}' - to_days(TRY_CAST(n AS INT) - TRY_CAST(pos AS INT)) AS VARCHAR) AS ts",
        None)})]
    for kind in ("_items.tsv", "_item2attributes.json"):
        found = next((base + kind + ext for ext in (".gz", "") if os.path.isfile(base + kind + ext)), None)
        if found:
            sources += s3rec(found)
    return sources


# ---------------------------------------------------------------- Amazon 2018 review JSONL
def amazon_reviews(path: str) -> list[Source]:
    cols = ["reviewerID", "asin", "unixReviewTime", "overall", "summary", "reviewText"]
    return [Source(path, jsonl_chunks, {
        "reviews": ("reviewerID AS user_id, asin AS item_id, unixReviewTime AS ts, overall AS rating, "
                    "NULLIF(concat_ws('. ', NULLIF(trim(summary), ''), NULLIF(trim(reviewText), '')), '') AS text, "
                    "'en' AS language", None),
        "events": ("reviewerID AS user_id, asin AS item_id, 'review' AS type, unixReviewTime AS ts", None),
    }, raw_columns=cols)]


# ---------------------------------------------------------------- online_shopping_10_cats
def shopping_reviews(path: str) -> list[Source]:
    return [Source(path, csv_chunks, {
        "reviews": ("review AS text, label, cat AS category, 'zh' AS language", None)},
        raw_columns=["cat", "label", "review"])]


# ---------------------------------------------------------------- CDNOW
CDNOW_MASTER = ["customer_id", "date", "number_of_cds", "dollar_value"]
CDNOW_SAMPLE = ["customer_id", "customer_index", "date", "number_of_cds", "dollar_value"]


def cdnow(path: str) -> list[Source]:
    with open_text(path) as f:
        first = next((line.split() for line in f if line.strip() and not line.split()[0].isalpha()), [])
    names = CDNOW_SAMPLE if len(first) == 5 else CDNOW_MASTER
    date = ("CASE WHEN regexp_full_match(date, '[0-9]{8}') "
            "THEN substr(date, 1, 4) || '-' || substr(date, 5, 2) || '-' || substr(date, 7, 2) ELSE date END")
    return [Source(path, partial(whitespace_chunks, names=names), {
        "orders": (f"{_id('customer_id')} AS user_id, {date} AS ts, dollar_value AS amount, "
                   "number_of_cds AS quantity", None)})]


# ---------------------------------------------------------------- UCI Online Retail II
def online_retail(path: str) -> list[Source]:
    user = _id("Customer ID")
    amount = ("coalesce(CAST(TRY_CAST(Quantity AS DOUBLE) * TRY_CAST(Price AS DOUBLE) AS VARCHAR), "
              "Quantity || ' * ' || Price)")
    cancelled = "upper(trim(Invoice)) LIKE 'C%'"
    return [Source(path, csv_chunks, {
        "orders": (f"{user} AS user_id, InvoiceDate AS ts, {amount} AS amount, Quantity AS quantity, "
                   "Invoice AS invoice", None),
        "events": (f"{user} AS user_id, StockCode AS item_id, 'buy' AS type, InvoiceDate AS ts, "
                   "Price AS price, Quantity AS quantity, Invoice AS session_id", f"NOT ({cancelled})"),
        "items": ("StockCode AS item_id, trim(Description) AS title, Price AS price", None),
    }, raw_columns=["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID"])]


# ---------------------------------------------------------------- Diginetica
def diginetica(path: str) -> list[Source]:
    # Anonymous sessions (user_id NA) become one pseudo-user per session: `session:<id>`.
    user = "CASE WHEN coalesce(trim(user_id), 'NA') IN ('NA', '') THEN 'session:' || session_id ELSE user_id END"
    # try(): a timeframe too large for an interval is left raw (then quarantined), not an error
    ts = ("coalesce(CAST(try(TRY_CAST(eventdate AS DATE) + to_milliseconds(TRY_CAST(timeframe AS BIGINT))) AS VARCHAR), "
          "eventdate || ' + ' || timeframe || ' ms')")
    return [Source(path, partial(csv_chunks, delimiter=";"), {
        "events": (f"{user} AS user_id, item_id, 'view' AS type, {ts} AS ts, session_id", None)},
        raw_columns=["session_id", "user_id", "item_id", "timeframe", "eventdate"])]


# ---------------------------------------------------------------- generic exports
def parse_mapping(text: str | None) -> dict[str, str]:
    """`user_id=customer,item_id=sku` -> {'user_id': 'customer', 'item_id': 'sku'}."""
    mapping = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        if "=" not in part:
            raise HuaxiangError(f"--map: expected CANONICAL=SOURCE, got {part!r}")
        k, v = (s.strip() for s in part.split("=", 1))
        mapping[k] = v
    return mapping


def generic(path: str, reader: Reader, table: str = "events", mapping: dict[str, str] | None = None) -> list[Source]:
    if table not in schema.TABLES:
        raise HuaxiangError(f"--table: unknown table {table!r} (expected one of {', '.join(schema.TABLES)})")
    target = schema.TABLES[table]
    mapping = dict(mapping or {})
    unknown = set(mapping) - set(target.names)
    if unknown:
        raise HuaxiangError(f"--map: {sorted(unknown)} not columns of {table} ({', '.join(target.names)})")

    def projections(cols: list[str]):
        missing = [s for s in mapping.values() if s not in cols]
        if missing:
            raise HuaxiangError(f"{path}: --map names columns the file lacks: {missing} (it has {cols})")
        select = []
        for name in target.names:
            src = mapping.get(name, name if name in cols else None)
            if src is not None:
                select.append(f"{q(src)}::VARCHAR AS {name}")
        if not select:
            raise HuaxiangError(f"{path}: no column maps onto {table} (columns {cols}); use --map")
        return {table: (", ".join(select), None)}
    return [Source(path, reader, projections)]


FORMATS: dict[str, Callable[..., list[Source]]] = {
    "taobao": taobao,
    "s3rec": s3rec,
    "amazon-reviews": amazon_reviews,
    "shopping-reviews": shopping_reviews,
    "cdnow": cdnow,
    "online-retail": online_retail,
    "diginetica": diginetica,
    "csv": partial(generic, reader=csv_chunks),
    "tsv": partial(generic, reader=partial(csv_chunks, delimiter="\t")),
    "jsonl": partial(generic, reader=jsonl_chunks),
    "parquet": partial(generic, reader=parquet_chunks),
}
GENERIC = {"csv", "tsv", "jsonl", "parquet"}


def sources_for(path: str, fmt: str, table: str = "events", mapping: dict[str, str] | None = None) -> list[Source]:
    if fmt not in FORMATS:
        raise HuaxiangError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    if fmt in GENERIC:
        return FORMATS[fmt](path, table=table, mapping=mapping)
    if mapping:
        raise HuaxiangError(f"--map applies to csv/tsv/jsonl/parquet, not to the {fmt} adapter")
    return FORMATS[fmt](path)
