"""Ingest one file into the store: read, map, validate, de-duplicate, commit — all or nothing.

Everything happens inside one DuckDB transaction, so an ingest interrupted half-way (Ctrl-C,
kill -9) leaves the store as it was. Rows that fail validation go to `quarantine` with the
file, line, field, reason and the row's user id (as it would have been stored); rows already in the
store (same key, same content) are counted, not re-added; a row whose key is stored with other content
is a conflict, quarantined. Rows of a forgotten user (`forgotten_users`, see `huaxiang.forget`) are
refused and kept nowhere, only counted. In-memory batches (`ingest_records`) add a rejected row to the
quarantine only when an identical one (target, field, reason, raw) is not there yet: a re-sent batch
does not pile up copies.

An in-memory batch runs the same statements on every call: they are prepared once per connection (see `prepared`),
its temporary tables are kept and emptied rather than dropped, and the values of one batch (its source and the
future cut-off) are read from the one-row table `_hx_batch`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from hashlib import md5
from typing import Callable

import duckdb
import pyarrow as pa

from .. import schema
from ..schema import sql_literal
from ..errors import HuaxiangError
from ..privacy import MASKED, mask_sql, register_pseudonym
from ..store import transaction
from . import prepared
from .adapters import FORMATS, Source, generic, q, sources_for
from .readers import records_chunk
from .validate import FUTURE_TOLERANCE_S, blank_to_null, future_cutoff, validation_sql


@dataclass
class IngestReport:
    """rows_read = added + duplicates + quarantined + suppressed (conflicts are among the quarantined)."""
    source: str
    rows_read: int = 0
    added: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)  # key already stored with the same content
    quarantined: int = 0
    conflicts: int = 0  # key already stored with different content (quarantined, so also in `quarantined`)
    suppressed: int = 0  # rows of forgotten users: refused, stored nowhere
    reasons: dict[str, int] = field(default_factory=dict)  # "field: reason kind" -> count
    users: list[str] = field(default_factory=list)  # in-memory batches: the users of their valid events, as stored
    # in-memory batches: (position from 1, field or None, reason) of every quarantined row, by position — also
    # of those not added again because the quarantine already holds them
    rejected: list[tuple[int, str | None, str]] = field(default_factory=list)
    # in-memory batches: the events stored by this call (not those stored before), as stored, one dict each
    new_events: list[dict] = field(default_factory=list)


def _stage_name(table: str) -> str:
    return f"_stage_{table}"


def _content_hash(table: schema.Table) -> str:
    """A key for rows whose source gives none: a hash of the typed content (an occurrence number is
    appended at merge), so that re-reading a file yields the same keys and true repeats are kept. Columns added
    later (`schema.ADDED_COLUMNS`: events' `request_id`) are left out, so that a file's keys stay what they were
    before they came."""
    added = schema.ADDED_COLUMNS.get(table.name, ())
    content = "concat_ws('|', " + ", ".join(
        f"coalesce(CAST({c} AS VARCHAR), '')" for c in table.names if c != table.key and c not in added) + ")"
    return f"left(md5({content}), 24)"


NAMESPACED = ("user_id", "item_id", "invoice")  # ids that could collide across sources


def _create_stage(con, table: schema.Table, live: bool) -> None:
    """The staging table of one target: validated rows (with `_field`/`_reason`/`_raw` for bad ones)
    and `_k`, the row's key before de-duplication. A temporary table: private to this connection, spilled
    to the store's `.tmp` folder when it outgrows memory, dropped before the commit (kept, emptied, for the next
    in-memory batch) — and it leaves the store's catalog untouched, which keeps the profile refresher's prepared
    statements valid."""
    cols = ", ".join(f"{c.name} {schema.sql_type(c)}" for c in table.columns)
    definition = f"(_line BIGINT, _field VARCHAR, _reason VARCHAR, _raw VARCHAR, {cols}, _k VARCHAR)"
    if live:
        prepared.create(con, "TABLE", _stage_name(table.name), definition)
    else:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {_stage_name(table.name)} {definition}")


BATCH = "_hx_batch"  # one row: the source being ingested and the future cut-off, read by the statements
SOURCE, CUTOFF = f"(SELECT source FROM {BATCH})", f"(SELECT cutoff FROM {BATCH})"


def _temp(con, live: bool, kind: str, name: str, definition: str) -> str:
    """`CREATE TEMP {kind} IF NOT EXISTS`: for an in-memory batch once per connection (`prepared.create`), for a file
    as it comes (a file's ingest prepares nothing)."""
    if live:
        return prepared.create(con, kind, name, definition)
    con.execute(f"CREATE TEMP {kind} IF NOT EXISTS {name} {definition}")
    return name


def _set_batch(con, source: str, cutoff: datetime, live: bool) -> None:
    _temp(con, live, "TABLE", BATCH, "(source VARCHAR, cutoff TIMESTAMP)")
    con.execute(f"DELETE FROM {BATCH}")
    con.execute(f"INSERT INTO {BATCH} VALUES (?, ?)", [source, cutoff])


def _kept(con, kind: str, definition: str) -> str:
    """A temporary table or view for in-memory batches, named after its definition and created once."""
    return prepared.create(con, kind, f"_hx_{kind.lower()}_{md5(definition.encode()).hexdigest()[:12]}", definition)


PRE = ("_pre_field", "_pre_reason")  # a fault the reader found (records_chunk), carried to validation


def _stage_chunk(con, run, table: schema.Table, select: str, where: str | None, raw: pa.Table,
                 path: str, namespace: str | None, tolerance_s: float, live: bool) -> None:
    """Maps and validates one chunk into the target's staging table. A file's chunk is read from the Arrow table
    registered as `raw` through the view `mapped`; an in-memory batch is copied into a kept table and read through a
    kept view, so that its validation runs prepared."""
    source = "raw"
    if live:
        source = _kept(con, "TABLE", "(" + ", ".join(
            f"{q(c)} {'BIGINT' if c == '_line' else 'VARCHAR'}" for c in raw.column_names) + ")")
        con.from_arrow(raw).insert_into(source)  # (its columns in the table's order: it is named after them)
    else:
        con.register("raw", raw)
    try:
        pre = all(c in raw.column_names for c in PRE)
        inner = (f"SELECT _line, {', '.join(PRE) + ', ' if pre else ''}{select} FROM {source}"
                 + (f" WHERE {where}" if where else ""))
        present = {c for c in con.sql(inner).columns if c != "_line" and c not in PRE}
        # an empty id stays NULL, so that it is still quarantined as missing
        exprs = {c: f"{sql_literal(namespace + schema.TENANT_SEPARATOR)} || {blank_to_null(c)}"
                 for c in NAMESPACED if namespace and c in present}
        pseudo = register_pseudonym(con)
        if pseudo and "user_id" in present:
            exprs["user_id"] = f"{pseudo}({exprs.get('user_id', blank_to_null('user_id'))})"
        exprs.update({c: mask_sql(c) for c in MASKED.get(table.name, ()) if c in present})
        replace = " REPLACE (" + ", ".join(f"{e} AS {c}" for c, e in exprs.items()) + ")" if exprs else ""
        view = f"AS SELECT *{replace} FROM ({inner})"
        if live:
            mapped = _kept(con, "VIEW", view)
        else:
            mapped = "mapped"
            con.execute(f"CREATE OR REPLACE TEMP VIEW mapped {view}")
        key = table.key if table.key != "item_id" else None
        k = f"coalesce({key}, {_content_hash(table)})" if key else "NULL"
        run(f"INSERT INTO {_stage_name(table.name)} SELECT *, CASE WHEN _field IS NULL THEN {k} END "
            f"FROM ({validation_sql(table, present, None, tolerance_s, pre, mapped, CUTOFF)})")
        if live:
            run(f"DELETE FROM {source}")
        else:
            con.execute("DROP VIEW mapped")  # it names `raw`: no view of this connection may outlive it (on an
            # error, the rollback takes it away)
    except duckdb.Error as exc:
        raise HuaxiangError(f"{path}: cannot map columns onto {table.name}: {str(exc).splitlines()[0]}") from exc
    finally:
        if not live:
            con.unregister("raw")


def _add(bucket: dict[str, int], name: str, n: int) -> None:
    bucket[name] = bucket.get(name, 0) + n


def _user(table: schema.Table, alias: str = "") -> str:
    """SQL: the row's user id as stored (namespaced, pseudonymised), for the quarantine's `user_id`."""
    return f"{alias}user_id" if "user_id" in table.names else "NULL"


def _suppress(run, table: schema.Table, report: IngestReport) -> None:
    """Drops the staged rows (valid or not) of forgotten users: they are stored nowhere, only counted."""
    if "user_id" not in table.names:
        return
    stage = _stage_name(table.name)
    n = run(f"""DELETE FROM {stage} WHERE user_id IN (
        SELECT u FROM (SELECT DISTINCT user_id AS u FROM {stage} WHERE user_id IS NOT NULL)
        WHERE sha256(u) IN (SELECT id_hash FROM forgotten_users))""").fetchone()[0]
    report.suppressed += n


def _quarantine_bad(run, table: schema.Table, report: IngestReport, sink: str) -> None:
    stage = _stage_name(table.name)
    run(f"""INSERT INTO {sink} (source, line, target, field, reason, raw, user_id)
        SELECT {SOURCE}, _line, '{table.name}', _field, _reason, _raw, {_user(table)} FROM {stage}
        WHERE _field IS NOT NULL""")
    for fld, n in run(f"SELECT _field, count(*) FROM {stage} WHERE _field IS NOT NULL GROUP BY 1").fetchall():
        key = f"{table.name}.{fld}"
        _add(report.reasons, key, n)
        report.quarantined += n


def _merge_items(con, report: IngestReport) -> None:
    """Items are upserted: a later file fills in or replaces fields, attributes are merged."""
    cols = ", ".join(schema.ITEMS.names)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _items_new AS SELECT {cols} FROM (
        SELECT *, row_number() OVER (PARTITION BY item_id ORDER BY _line DESC) _rn
        FROM _stage_items WHERE _field IS NULL) WHERE _rn = 1""")
    con.execute("""UPDATE items SET title = coalesce(n.title, items.title), brand = coalesce(n.brand, items.brand),
        category = coalesce(n.category, items.category), price = coalesce(n.price, items.price),
        attributes = CASE WHEN items.attributes IS NULL THEN n.attributes WHEN n.attributes IS NULL THEN items.attributes
                     ELSE json_merge_patch(items.attributes, n.attributes)::VARCHAR END
        FROM _items_new n WHERE items.item_id = n.item_id""")
    added = con.execute(f"INSERT INTO items SELECT {cols} FROM _items_new n "
                        "WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.item_id = n.item_id)").fetchone()[0]
    distinct = con.execute("SELECT count(*) FROM _items_new").fetchone()[0]
    con.execute("DROP TABLE _items_new")
    prepared.changed(con)
    _add(report.added, "items", added)
    _add(report.duplicates, "items", distinct - added)


def _merge_keyed(con, run, table: schema.Table, report: IngestReport, sink: str, live: bool = False) -> None:
    """Good rows get their final key: the source's, or content hash + '-' + occurrence number.
    A key the source gave twice in one file keeps its first row; the others are quarantined. A key the source
    gave that is already stored with other content is a conflict: quarantined, the stored row kept."""
    key, stage = table.key, _stage_name(table.name)
    others = [c for c in table.names if c != key]
    cols = ", ".join(others)
    # repeated keys are rare: number the occurrences of those only
    _temp(con, live, "TABLE", "_repeats", "(_line BIGINT, _occ BIGINT, _first BIGINT)")
    run(f"""INSERT INTO _repeats
        SELECT _line, row_number() OVER (PARTITION BY _k ORDER BY _line) AS _occ,
               min(_line) OVER (PARTITION BY _k) AS _first
        FROM {stage} WHERE _field IS NULL AND _k IN (
            SELECT _k FROM {stage} WHERE _field IS NULL GROUP BY _k HAVING count(*) > 1)""")
    n_dups = run(f"""INSERT INTO {sink} (source, line, target, field, reason, raw, user_id)
        SELECT {SOURCE}, s._line, '{table.name}', '{key}',
               'duplicate {key} ' || s.{key} || ' (first at line ' || r._first || ')', json_object('{key}', s.{key})::VARCHAR,
               {_user(table, "s.")}
        FROM {stage} s JOIN _repeats r USING (_line) WHERE s.{key} IS NOT NULL AND r._occ > 1""").fetchone()[0]
    if n_dups:
        report.quarantined += n_dups
        _add(report.reasons, f"{table.name}.{key}", n_dups)
    keyed = _temp(con, live, "VIEW", f"_keyed_{table.name}", f"""AS
        SELECT s._line, s.{key} IS NOT NULL AS _given,
               CASE WHEN s.{key} IS NULL THEN s._k || '-' || coalesce(r._occ, 1) ELSE s._k END AS {key}, {cols}
        FROM {stage} s LEFT JOIN _repeats r USING (_line)
        WHERE s._field IS NULL AND NOT (s.{key} IS NOT NULL AND coalesce(r._occ, 1) > 1)""")
    empty = run(f"SELECT count(*) = 0 FROM (SELECT 1 FROM {table.name} LIMIT 1)").fetchone()[0]
    conflicts = 0
    if not empty:  # a content key cannot conflict: only keys the source gave are compared
        differs = " OR ".join(f"k.{c} IS DISTINCT FROM t.{c}" for c in others)
        row = "json_object(" + ", ".join(f"'{c}', k.{c}" for c in table.names) + ")::VARCHAR"
        conflicts = run(f"""INSERT INTO {sink} (source, line, target, field, reason, raw, user_id)
            SELECT {SOURCE}, k._line, '{table.name}', '{key}', '{key} ' || k.{key} || ' already stored with different content',
                   {row}, {_user(table, "k.")}
            FROM {keyed} k JOIN {table.name} t ON t.{key} = k.{key} WHERE k._given AND ({differs})""").fetchone()[0]
    new = f"SELECT * FROM {keyed}" if empty else \
        f"SELECT * FROM {keyed} k WHERE NOT EXISTS (SELECT 1 FROM {table.name} t WHERE t.{key} = k.{key})"
    names = ", ".join(table.names)
    insert = f"INSERT INTO {table.name} ({names}) SELECT {names} FROM ({new})"
    if live and table is schema.EVENTS:  # (a small batch: what it stored, for the online writer's live path)
        rows = run(f"{insert} RETURNING {', '.join(table.names)}").fetchall()
        report.new_events = [dict(zip(table.names, row)) for row in rows]
        added = len(rows)
    else:
        added = run(insert).fetchone()[0]
    good = run(f"SELECT count(*) FROM {stage} WHERE _field IS NULL").fetchone()[0]
    run("DELETE FROM _repeats")
    if conflicts:
        report.conflicts += conflicts
        report.quarantined += conflicts
        _add(report.reasons, f"{table.name}.{key}", conflicts)
    _add(report.added, table.name, added)
    _add(report.duplicates, table.name, good - added - n_dups - conflicts)


def ingest_file(con: duckdb.DuckDBPyConnection, path: str, fmt: str, table: str = "events",
                mapping: dict[str, str] | None = None, namespace: str | None = None,
                progress: Callable[[int, int], None] | None = None,
                future_tolerance_s: float = FUTURE_TOLERANCE_S) -> IngestReport:
    """Ingests `path` in the given format. `namespace` prefixes ids (`ns:id`) so that several sources
    can share one store. `progress(bytes_done, bytes_total)` is called as it reads. A timestamp more than
    `future_tolerance_s` seconds after the time of ingest is quarantined (config `future_tolerance_seconds`)."""
    if fmt in FORMATS and not os.path.isfile(path):
        raise HuaxiangError(f"file not found: {path}")
    sources = sources_for(path, fmt, table, mapping)
    sizes = [os.path.getsize(s.path) for s in sources]
    return _ingest_sources(con, sources, path, fmt, namespace, progress, sizes, future_tolerance_s)


def ingest_records(con: duckdb.DuckDBPyConnection, records: list, label: str, table: str = "events",
                   namespace: str | None = None, future_tolerance_s: float = FUTURE_TOLERANCE_S) -> IngestReport:
    """Ingests records already in memory (an API batch, a stream message): the same validation,
    quarantine (with `label` as the source and the record's position, from 1, as the line) and
    de-duplication as a file, in one transaction. Parsed JSON is held to its types: a text or id column
    takes only a string, a numeric or timestamp column a string or a number, no column a boolean, array
    or object; a row breaking that is quarantined with the field and the JSON type. `report.rejected`
    lists every quarantined row."""
    if table not in schema.TABLES:
        raise HuaxiangError(f"unknown table {table!r} (expected one of {', '.join(schema.TABLES)})")

    def reader(path, progress=None):
        yield records_chunk(records, schema.TABLES[table])
    return _ingest_sources(con, generic(label, reader, table), label, "records", namespace, None, [0],
                           future_tolerance_s)


def _ingest_sources(con, sources: list[Source], label: str, fmt: str, namespace, progress, sizes,
                    tolerance_s: float) -> IngestReport:
    if namespace is not None and (not namespace or schema.TENANT_SEPARATOR in namespace):
        raise HuaxiangError(f"namespace {namespace!r}: a tenant is a non-empty name without "
                            f"'{schema.TENANT_SEPARATOR}' (ids become NAMESPACE:id)")
    if not tolerance_s >= 0:
        raise HuaxiangError(f"future tolerance {tolerance_s!r}: expected a number of seconds >= 0")
    report = IngestReport(label)
    # the latest timestamp accepted: the time of ingest plus the tolerance (the future-timestamp check)
    cutoff = future_cutoff(None, tolerance_s)
    records = fmt == "records"  # an in-memory batch: statements prepared, temporary tables kept
    run = (lambda sql: prepared.run(con, sql)) if records else con.execute
    try:
        with transaction(con):
            # quarantine holds the latest verdict per file: a re-ingest replaces it, never doubles it
            con.execute("DELETE FROM quarantine WHERE source IN (SELECT unnest(?))", [[s.path for s in sources]])
            # an in-memory batch collects its rejected rows first, to add only those the quarantine lacks
            sink = "_rejected" if records else "quarantine"
            if records:
                prepared.create(con, "TABLE", "_rejected",
                                "AS SELECT source, line, target, field, reason, raw, user_id FROM quarantine LIMIT 0")
            suppressing = run("SELECT count(*) > 0 FROM (SELECT 1 FROM forgotten_users LIMIT 1)").fetchone()[0]
            for i, source in enumerate(sources):  # source by source, so that sibling files merge their items
                _set_batch(con, source.path, cutoff, records)
                done = sum(sizes[:i])
                targets = _ingest_source(con, run, source, report, namespace, tolerance_s, sink, records,
                                         (lambda n, d=done: progress(d + n, sum(sizes))) if progress else None)
                for name in sorted(targets):
                    _merge(con, run, schema.TABLES[name], report, sink, suppressing, records)
            if records:
                _add_new_rejects(run, report)
            con.execute("INSERT INTO ingests VALUES (?, ?, ?, ?, ?, ?, current_timestamp)",
                        [label, fmt, report.rows_read, sum(report.added.values()),
                         sum(report.duplicates.values()), report.quarantined])
    except BaseException:
        prepared.rolled_back(con)  # (the temporary objects created in the transaction are gone)
        raise
    if records:
        prepared.committed(con)
    else:  # a file's staging views and tables came and went
        prepared.changed(con)
    return report


def _merge(con, run, table: schema.Table, report: IngestReport, sink: str, suppressing: bool, live: bool) -> None:
    """From one target's staging table into the store; the staging table is dropped (kept, emptied, when `live`)."""
    stage = _stage_name(table.name)
    if suppressing:
        _suppress(run, table, report)
    _quarantine_bad(run, table, report, sink)
    if table is schema.ITEMS:
        _merge_items(con, report)
    else:
        _merge_keyed(con, run, table, report, sink, live)
    if table is schema.EVENTS and live:  # (namespaced and pseudonymised, as stored)
        report.users = [u for (u,) in run(
            f"SELECT DISTINCT user_id FROM {stage} WHERE _field IS NULL ORDER BY 1").fetchall()]
    if live:
        run(f"DELETE FROM {stage}")
    else:
        con.execute(f"DROP TABLE {stage}")
        prepared.dropped(con, stage)


def _add_new_rejects(run, report: IngestReport) -> None:
    """Moves a batch's rejected rows into the quarantine, less those it already holds (same target, field,
    reason and raw: a re-sent batch); every one stays in `report.rejected`."""
    report.rejected = [(line, fld, reason) for line, fld, reason in run(
        "SELECT line, field, reason FROM _rejected ORDER BY line, target, field").fetchall()]
    # the quarantine narrowed to the batch's reasons first: the small side of the join, not a million rows
    if report.rejected:
        run("""INSERT INTO quarantine (source, line, target, field, reason, raw, user_id)
            SELECT * FROM _rejected r WHERE NOT EXISTS (
                SELECT 1 FROM (SELECT * FROM quarantine WHERE reason IN (SELECT reason FROM _rejected)) q
                WHERE q.reason = r.reason AND q.target = r.target AND q.field IS NOT DISTINCT FROM r.field
                  AND q.raw IS NOT DISTINCT FROM r.raw)""")
    run("DELETE FROM _rejected")


def _ingest_source(con, run, source: Source, report: IngestReport, namespace, tolerance_s: float,
                   sink: str, live: bool, progress) -> set[str]:
    """Reads, maps and validates one source into staging tables; returns the targets it staged."""
    targets: set[str] = set()
    for chunk in source.reader(source.path, progress=progress):
        raw = chunk.table
        for col in source.raw_columns:
            if col not in raw.column_names:
                raw = raw.append_column(col, pa.nulls(raw.num_rows, pa.string()))
        if chunk.rejects:
            con.executemany(f"INSERT INTO {sink} (source, line, target, field, reason, raw) "
                            "VALUES (?, ?, '*', NULL, ?, ?)", [[source.path, r.line, r.reason, r.raw] for r in chunk.rejects])
            report.quarantined += len(chunk.rejects)
            _add(report.reasons, "(unreadable line)", len(chunk.rejects))
        report.rows_read += raw.num_rows + len(chunk.rejects)
        cols = [c for c in raw.column_names if c != "_line"]
        if not cols and not raw.num_rows:
            continue  # JSON lines that were all rejects so far: no columns, nothing to map
        # per chunk, so that a JSON key first seen in a later chunk is mapped there too
        projections = source.projections(cols) if callable(source.projections) else source.projections
        for name, (select, where) in projections.items():
            if name not in targets:
                _create_stage(con, schema.TABLES[name], live)
                targets.add(name)
            _stage_chunk(con, run, schema.TABLES[name], select, where, raw, source.path, namespace, tolerance_s,
                         live)
    return targets
