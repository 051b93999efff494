"""The embedded store: one DuckDB file holding every table, queryable with plain SQL."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb

from . import schema
from .errors import HuaxiangError


def connect(db: str, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    if read_only and not Path(db).exists():
        raise HuaxiangError(f"store not found: {db} (run `huaxiang ingest` first)")
    try:
        # threads = the CPUs this process may use (DuckDB counts the machine's, ignoring affinity and
        # container limits; more threads than CPUs slows small queries down)
        con = duckdb.connect(db, read_only=read_only, config={"threads": len(os.sched_getaffinity(0))})
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0][:300]
        if "lock" in first.lower():  # another process holds it: most often a running `huaxiang serve`
            raise HuaxiangError(f"store {db} is held by another process (a running `huaxiang serve`? while it runs, "
                                f"use its HTTP API: /docs lists the routes): {first}") from exc
        raise HuaxiangError(f"cannot open store {db}: {exc}") from exc
    con.execute("SET TimeZone = 'UTC'")
    if not read_only:
        ensure_tables(con)
    return con


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    for table in schema.TABLES.values():
        con.execute(schema.ddl(table))
        for statement in schema.added_ddl(table):  # (a store made before the column came)
            con.execute(statement)
    con.execute(schema.QUARANTINE_DDL)
    con.execute(schema.INGESTS_DDL)
    con.execute(schema.EXPOSURES_DDL)
    con.execute(schema.EXPERIMENTS_DDL)


EVENT_ID_INDEX = "events_event_id"


def index_event_ids(con: duckdb.DuckDBPyConnection) -> None:
    """Makes sure `events.event_id` is indexed (an ART index, built once: ~35 s per 10M events). For a process that
    stores small batches often — the online writer — each batch's de-duplication against the stored events is
    then a lookup instead of a scan of the whole table (10M events: a batch of 5 stored in 55 ms instead of
    347 ms). Bulk ingests keep the index up to date too, at some cost, so only the writer asks for it."""
    if con.execute("SELECT count(*) FROM duckdb_indexes() WHERE index_name = ?", [EVENT_ID_INDEX]).fetchone()[0]:
        return
    con.execute("SET enable_progress_bar = false")  # (the caller shows its own progress)
    con.execute(f"CREATE INDEX IF NOT EXISTS {EVENT_ID_INDEX} ON events (event_id)")
    con.execute("CHECKPOINT")  # (DDL kept out of the write-ahead log, as for the key table)


def plan_without_statistics(con: duckdb.DuckDBPyConnection) -> None:
    """DuckDB 1.4 optimises a prepared statement with the tables' statistics of the moment it is prepared and keeps
    that plan for every EXECUTE (duckdb issues 23704 and 24182; later versions skip statistics propagation for
    prepared plans): a statement prepared over an empty table treats its columns as holding no NULL, so
    `coalesce(x, …)` became `x`, and a refresh wrote NULL tags for every user without keywords; strings of a table
    emptied and refilled came back garbled. This turns that optimiser off for the whole database `con` belongs to
    (DuckDB has no per-connection switch), other queries included: call it before any PREPARE (the profile
    refresher, the ingest of in-memory batches). Measured: no change in the refresher's or a build's speed."""
    current = con.execute("SELECT current_setting('disabled_optimizers')").fetchone()[0]
    names = [n.strip() for n in current.split(",") if n.strip()]
    if "statistics_propagation" not in names:
        con.execute(f"SET disabled_optimizers = {schema.sql_literal(','.join(names + ['statistics_propagation']))}")


def has_column(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    """Has the store's `table` the `column` (a store made before the column came, opened read-only, has not)?"""
    return bool(con.execute("SELECT count(*) FROM duckdb_columns() WHERE database_name = current_database() "
                            "AND schema_name = 'main' AND table_name = ? AND column_name = ?",
                            [table, column]).fetchone()[0])


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]).fetchone()[0])


def count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """`with transaction(con):` runs the block between BEGIN and COMMIT; any exception (Ctrl-C included) rolls
    it back and propagates, so that readers never see half of a change."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
