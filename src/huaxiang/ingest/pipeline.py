"""Ingest one file into the store: read, map, validate, de-duplicate, commit — all or nothing.

Everything happens inside one DuckDB transaction, so an ingest interrupted half-way (Ctrl-C,
kill -9) leaves the store as it was. Rows that fail validation go to `quarantine` with the
file, line, field and reason; rows already in the store (same key) are counted, not re-added.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import duckdb
import pyarrow as pa

from .. import schema
from ..errors import HuaxiangError
from .adapters import FORMATS, Source, sources_for
from .validate import blank_to_null, validation_sql


@dataclass
class IngestReport:
    source: str
    rows_read: int = 0
    added: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # "field: reason kind" -> count


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _stage_name(table: str) -> str:
    return f"_stage_{table}"


def _content_key(table: schema.Table) -> str:
    """A key for rows whose source gives none: a hash of the content plus its occurrence number,
    so that re-reading a file yields the same keys and true repeats inside a file are all kept."""
    content = "concat_ws('|', " + ", ".join(
        f"coalesce(CAST({c} AS VARCHAR), '')" for c in table.names if c != table.key) + ")"
    return (f"coalesce({table.key}, left(md5({content}), 24) || '-' || "
            f"row_number() OVER (PARTITION BY {table.key}, md5({content}) ORDER BY _line))")


NAMESPACED = ("user_id", "item_id", "invoice")  # ids that could collide across sources


def _stage_chunk(con, table: schema.Table, select: str, where: str | None, raw: pa.Table,
                 path: str, report: IngestReport, namespace: str | None) -> None:
    con.register("raw", raw)
    try:
        inner = f"SELECT _line, {select} FROM raw" + (f" WHERE {where}" if where else "")
        present = {c for c in con.sql(inner).columns if c != "_line"}
        spaced = [c for c in NAMESPACED if c in present] if namespace else []
        # an empty id stays NULL, so that it is still quarantined as missing
        replace = (" REPLACE (" + ", ".join(f"{_sql_str(namespace + ':')} || {blank_to_null(c)} AS {c}"
                                             for c in spaced) + ")"
                   if spaced else "")
        con.execute(f"CREATE OR REPLACE TEMP VIEW mapped AS SELECT *{replace} FROM ({inner})")
        con.execute(f"CREATE OR REPLACE TEMP TABLE _checked AS {validation_sql(table, present)}")
    except duckdb.Error as exc:
        raise HuaxiangError(f"{path}: cannot map columns onto {table.name}: {str(exc).splitlines()[0]}") from exc
    finally:
        con.unregister("raw")
    cols = ", ".join(table.names)
    con.execute(f"INSERT INTO {_stage_name(table.name)} SELECT _line, {cols} FROM _checked WHERE _field IS NULL")
    con.execute("INSERT INTO quarantine (source, line, target, field, reason, raw) "
                f"SELECT ?, _line, '{table.name}', _field, _reason, _raw FROM _checked WHERE _field IS NOT NULL", [path])
    for fld, n in con.execute("SELECT _field, count(*) FROM _checked WHERE _field IS NOT NULL GROUP BY 1").fetchall():
        key = f"{table.name}.{fld}"
        report.reasons[key] = report.reasons.get(key, 0) + n
        report.quarantined += n


def _merge_items(con, report: IngestReport) -> None:
    """Items are upserted: a later file fills in or replaces fields, attributes are merged."""
    con.execute("""CREATE OR REPLACE TEMP TABLE _items_new AS
        SELECT * EXCLUDE (_rn) FROM (SELECT *, row_number() OVER (PARTITION BY item_id ORDER BY _line DESC) _rn
        FROM _stage_items) WHERE _rn = 1""")
    con.execute("""UPDATE items SET title = coalesce(n.title, items.title), brand = coalesce(n.brand, items.brand),
        category = coalesce(n.category, items.category), price = coalesce(n.price, items.price),
        attributes = CASE WHEN items.attributes IS NULL THEN n.attributes WHEN n.attributes IS NULL THEN items.attributes
                     ELSE json_merge_patch(items.attributes, n.attributes)::VARCHAR END
        FROM _items_new n WHERE items.item_id = n.item_id""")
    before = con.execute("SELECT count(*) FROM items").fetchone()[0]
    con.execute(f"INSERT INTO items SELECT {', '.join(schema.ITEMS.names)} FROM _items_new n "
                "WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.item_id = n.item_id)")
    staged = con.execute("SELECT count(*) FROM _items_new").fetchone()[0]  # distinct items in this file
    added = con.execute("SELECT count(*) FROM items").fetchone()[0] - before
    report.added["items"] = report.added.get("items", 0) + added
    report.duplicates["items"] = report.duplicates.get("items", 0) + staged - added


def _merge_keyed(con, table: schema.Table, path: str, report: IngestReport) -> None:
    key, stage = table.key, _stage_name(table.name)
    cols = ", ".join(c for c in table.names if c != key)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _keyed AS
        SELECT *, row_number() OVER (PARTITION BY {key} ORDER BY _line) AS _dup,
               min(_line) OVER (PARTITION BY {key}) AS _first
        FROM (SELECT _line, {_content_key(table)} AS {key}, {cols} FROM {stage})""")
    # a key the source gave twice in one file: the first row wins, the others are set aside
    n_dups = con.execute("SELECT count(*) FROM _keyed WHERE _dup > 1").fetchone()[0]
    if n_dups:
        con.execute(f"""INSERT INTO quarantine (source, line, target, field, reason, raw)
            SELECT ?, _line, '{table.name}', '{key}', 'duplicate {key} ' || {key} || ' (first at line ' || _first || ')',
                   json_object('{key}', {key})::VARCHAR FROM _keyed WHERE _dup > 1""", [path])
        report.quarantined += n_dups
        report.reasons[f"{table.name}.{key}"] = report.reasons.get(f"{table.name}.{key}", 0) + n_dups
    before = con.execute(f"SELECT count(*) FROM {table.name}").fetchone()[0]
    con.execute(f"""INSERT INTO {table.name} SELECT {', '.join(table.names)} FROM _keyed k
        WHERE _dup = 1 AND NOT EXISTS (SELECT 1 FROM {table.name} t WHERE t.{key} = k.{key})""")
    added = con.execute(f"SELECT count(*) FROM {table.name}").fetchone()[0] - before
    staged = con.execute("SELECT count(*) FROM _keyed").fetchone()[0]
    report.added[table.name] = report.added.get(table.name, 0) + added
    report.duplicates[table.name] = report.duplicates.get(table.name, 0) + staged - added - n_dups
    con.execute("DROP TABLE _keyed")


def ingest_file(con: duckdb.DuckDBPyConnection, path: str, fmt: str, table: str = "events",
                mapping: dict[str, str] | None = None, namespace: str | None = None,
                progress: Callable[[int, int], None] | None = None) -> IngestReport:
    """Ingests `path` in the given format. `namespace` prefixes ids (`ns:id`) so that several sources
    can share one store. `progress(bytes_done, bytes_total)` is called as it reads."""
    if fmt in FORMATS and not os.path.isfile(path):
        raise HuaxiangError(f"file not found: {path}")
    sources = sources_for(path, fmt, table, mapping)
    report = IngestReport(path)
    sizes = [os.path.getsize(s.path) for s in sources]
    total = sum(sizes)
    con.execute("BEGIN TRANSACTION")
    try:
        # quarantine holds the latest verdict per file: a re-ingest replaces it, never doubles it
        con.execute("DELETE FROM quarantine WHERE source IN (SELECT unnest(?))", [[s.path for s in sources]])
        targets: set[str] = set()
        for i, source in enumerate(sources):
            done_before = sum(sizes[:i])
            _ingest_source(con, source, report, targets, namespace,
                           (lambda n, d=done_before: progress(d + n, total)) if progress else None)
            if "items" in targets:  # upserted source by source, so that sibling files merge their fields
                _merge_items(con, report)
                con.execute(f"DELETE FROM {_stage_name('items')}")
        for name in sorted(targets):
            if name == "items":
                _merge_items(con, report)
            else:
                _merge_keyed(con, schema.TABLES[name], path, report)
            con.execute(f"DROP TABLE {_stage_name(name)}")
        con.execute("INSERT INTO ingests VALUES (?, ?, ?, ?, ?, ?, current_timestamp)",
                    [path, fmt, report.rows_read, sum(report.added.values()),
                     sum(report.duplicates.values()), report.quarantined])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return report


def _ingest_source(con, source: Source, report: IngestReport, targets: set[str], namespace, progress) -> None:
    for chunk in source.reader(source.path, progress=progress):
        raw = chunk.table
        for col in source.raw_columns:
            if col not in raw.column_names:
                raw = raw.append_column(col, pa.nulls(raw.num_rows, pa.string()))
        if chunk.rejects:
            con.executemany("INSERT INTO quarantine (source, line, target, field, reason, raw) VALUES (?, ?, '*', NULL, ?, ?)",
                            [[source.path, r.line, r.reason, r.raw] for r in chunk.rejects])
            report.quarantined += len(chunk.rejects)
            report.reasons["(unreadable line)"] = report.reasons.get("(unreadable line)", 0) + len(chunk.rejects)
        report.rows_read += raw.num_rows + len(chunk.rejects)
        cols = [c for c in raw.column_names if c != "_line"]
        if not cols and not raw.num_rows:
            continue  # JSON lines that were all rejects so far: no columns, nothing to map
        # per chunk, so that a JSON key first seen in a later chunk is mapped there too
        projections = source.projections(cols) if callable(source.projections) else source.projections
        for name, (select, where) in projections.items():
            if name not in targets:
                con.execute(f"CREATE OR REPLACE TEMP TABLE {_stage_name(name)} AS "
                            f"SELECT 0::BIGINT AS _line, * FROM {name} LIMIT 0")
                targets.add(name)
            _stage_chunk(con, schema.TABLES[name], select, where, raw, source.path, report, namespace)
