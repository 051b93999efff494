"""Statements an in-memory batch (an API call, a stream message) runs on every call, prepared once per connection.

DuckDB parses, binds and plans a statement on every `execute`; for a batch of a few events that is most of the
cost of its validation (the staging insert: ~20 ms, ~5 ms prepared; a whole batch 49 → 27 ms). A prepared statement
skips it, on conditions the ingest pipeline keeps:
- it is planned without table statistics (`store.plan_without_statistics`, before the first PREPARE): DuckDB 1.4
  would otherwise keep a plan made from what the tables held when it was prepared, and return wrong results after;
- it takes no parameters: DuckDB binds a statement with parameters again on every EXECUTE, so per-batch values
  (the source, the future cut-off) are read from the one-row temporary table `_hx_batch` instead;
- the catalog has not changed since it was prepared: after any CREATE or DROP (even `CREATE VIEW IF NOT EXISTS`
  of a view that exists) DuckDB binds it again on every EXECUTE, for good. So the batch path creates its
  temporary tables and views once per connection (`create`) and empties its tables rather than dropping them; a
  change of the catalog that passes through here (`create`, `dropped`, `changed`) prepares the statements afresh —
  also after the COMMIT of a transaction that created objects (`committed`: a statement prepared inside it holds
  the catalog as that transaction saw it) — and so does every `REFRESH`-th run of a statement, for a change made
  elsewhere.
"""
from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass, field

import duckdb

from ..store import plan_without_statistics

LIMIT = 256  # statements kept per connection; past it they are all deallocated and prepared again on use
REFRESH = 1000  # runs of a statement before it is prepared again
_counter = itertools.count()


@dataclass
class _Kept:
    statements: dict[str, list] = field(default_factory=dict)  # sql -> [name of its prepared statement, runs]
    objects: set[str] = field(default_factory=set)  # temporary tables and views created
    created: bool = False  # an object was created in the transaction in progress


_kept: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # connection -> _Kept


def _of(con) -> _Kept:
    kept = _kept.get(con)
    if kept is None:
        plan_without_statistics(con)
        kept = _kept[con] = _Kept()
    return kept


def run(con: duckdb.DuckDBPyConnection, sql: str) -> duckdb.DuckDBPyConnection:
    """Executes `sql` (no parameters) through a statement prepared on `con` the first time this text is run."""
    statements = _of(con).statements
    entry = statements.get(sql)
    if entry is None or entry[1] >= REFRESH:
        if entry is None and len(statements) >= LIMIT:
            changed(con)
        name = f"_hx_stmt_{next(_counter)}"
        con.execute(f"PREPARE {name} AS {sql}")
        if entry is not None:
            con.execute(f"DEALLOCATE {entry[0]}")
        entry = statements[sql] = [name, 0]
    entry[1] += 1
    return con.execute(f"EXECUTE {entry[0]}")


def create(con: duckdb.DuckDBPyConnection, kind: str, name: str, definition: str) -> str:
    """`CREATE TEMP {kind} IF NOT EXISTS name definition`, once per connection; returns `name`."""
    kept = _of(con)
    if name not in kept.objects:
        con.execute(f"CREATE TEMP {kind} IF NOT EXISTS {name} {definition}")
        kept.objects.add(name)
        kept.created = True
        changed(con)
    return name


# (the calls below change nothing on a connection that has not prepared or created anything here: a file's ingest
# does not turn statistics propagation off)

def dropped(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """`name` was dropped: `create` makes it again."""
    kept = _kept.get(con)
    if kept is not None:
        kept.objects.discard(name)
        changed(con)


def changed(con: duckdb.DuckDBPyConnection) -> None:
    """The catalog has changed: the statements are prepared again on their next run."""
    kept = _kept.get(con)
    if kept is not None:
        for name, _ in kept.statements.values():
            con.execute(f"DEALLOCATE {name}")
        kept.statements.clear()


def committed(con: duckdb.DuckDBPyConnection) -> None:
    """After a COMMIT: statements prepared in a transaction that created objects are prepared again."""
    kept = _kept.get(con)
    if kept is not None and kept.created:
        kept.created = False
        changed(con)


def rolled_back(con: duckdb.DuckDBPyConnection) -> None:
    """After a ROLLBACK: the objects created in that transaction are gone."""
    kept = _kept.get(con)
    if kept is not None:
        kept.objects.clear()
        kept.created = False
        changed(con)
