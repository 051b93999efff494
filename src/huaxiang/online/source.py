"""A Parquet build (`huaxiang build --engine duckdb|spark --input IN --output OUT`) read as if it were a store, so
that `publish` (and everything it calls: `profile_records`, `segment_report`, `title_catalogue`) runs on it
unchanged: an in-memory DuckDB whose views are named like the store's tables.

  profiles       each user's row from the latest build that wrote it (OUT/profiles/built=*; as `read_profiles`)
  scores         likewise per (user, kind), when the builds wrote scores (OUT/scores/built=*)
  events, items, reviews, orders
                 the build's input (recorded in OUT/_huaxiang.json by the build; `events_dir` overrides it), with
                 the store's column types
  segment_rules  each tenant's rules with the thresholds the latest build kept, and the sizes of the profiles

The drift across builds and k-means cluster means are not kept in a Parquet build: a segment report from it has
none. Folders on this machine only: a URI (s3a://, hdfs://, …) is refused for now.
"""
from __future__ import annotations

from pathlib import Path

import duckdb

from .. import schema
from ..config import Config
from ..errors import HuaxiangError
from ..folders import Folder, is_uri
from ..scale.build import per_tenant, read_manifest
from ..scale.engine import INPUTS, typed_column


def parquet_source(output_dir: str, events_dir: str | None = None, cfg: Config | None = None
                   ) -> duckdb.DuckDBPyConnection:
    """The connection described in the module's doc; `cfg`: the configuration the build ran with (its segment
    rules' day counts; default: the defaults)."""
    for where in (output_dir, events_dir):
        if where and is_uri(where):
            raise HuaxiangError(f"{where}: publishing reads a build on this machine's disks; a URI is not read yet "
                                "(copy the build's output here first)")
    out = Path(output_dir)
    builds = read_manifest(Folder(str(out)))["builds"]
    if not builds or not _files(out / "profiles"):
        raise HuaxiangError(f"{out}: no profiles built there (huaxiang build --input IN --output {out})")
    last = builds[-1]
    source = events_dir or last.get("input")
    if not source:
        raise HuaxiangError(f"{out}: its build did not record its input folder: give it with --events DIR")
    if is_uri(source):
        raise HuaxiangError(f"{source}: the build read its input from a URI, which publishing cannot read yet: "
                            "give a copy on this machine with --events DIR")
    if not Path(source, "events").exists():
        raise HuaxiangError(f"{source}: no events folder (the input of the build, as `huaxiang export` writes it)")
    if not per_tenant(last):
        raise HuaxiangError(f"{out}: the last build kept store-wide statistics (an older huaxiang); build again")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    _latest(con, "profiles", out / "profiles", "user_id")
    if _files(out / "scores"):
        _latest(con, "scores", out / "scores", "user_id, kind")
    for name in INPUTS:
        _input(con, name, Path(source, name))
    _segment_rules(con, last["thresholds"], cfg or Config())
    return con


def _files(folder: Path) -> list[str]:
    return sorted(str(f) for f in folder.rglob("*.parquet")) if folder.exists() else []


def _read(files: list[str], hive: bool) -> str:
    return (f"read_parquet([{', '.join(map(schema.sql_literal, files))}], union_by_name = true, "
            f"hive_partitioning = {'true' if hive else 'false'})")


def _latest(con, name: str, folder: Path, keys: str) -> None:
    """View `name`: per key, the row of the latest build (`built=<stamp>` folders; stamps sort as times); decimal
    columns as DOUBLE, as the store keeps them."""
    source = _read(_files(folder), hive=True)
    columns = [(c, t) for c, t, *_ in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall() if c != "built"]
    select = ", ".join(f"CAST({c} AS DOUBLE) AS {c}" if t.startswith("DECIMAL") else c for c, t in columns)
    con.execute(f"""CREATE VIEW {name} AS SELECT {select} FROM {source}
        QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY built DESC) = 1""")


def _input(con, name: str, folder: Path) -> None:
    """View `name` over an input table's Parquet files with the store's column types (empty when it has none; an
    optional column the files lack is NULL)."""
    table = schema.TABLES[name]
    files = _files(folder)
    if files:
        present = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {_read(files, hive=False)}").fetchall()}
        casts = ", ".join(typed_column(c, present, schema.sql_type(c), str(folder)) for c in table.columns)
        con.execute(f"CREATE VIEW {name} AS SELECT {casts} FROM {_read(files, hive=False)}")
    else:
        empty = ", ".join(f"CAST(NULL AS {schema.sql_type(c)}) AS {c.name}" for c in table.columns)
        con.execute(f"CREATE VIEW {name} AS SELECT {empty} LIMIT 0")


def _segment_rules(con, thresholds: dict, cfg: Config) -> None:
    """Table `segment_rules` as a store's build writes it: the latest build's thresholds, the profiles' sizes."""
    from ..profile.build import rule_rows
    sizes = {(t, s): n for t, s, n in con.execute(
        f"SELECT {schema.tenant_sql('user_id')}, segment, count(*) FROM profiles GROUP BY ALL").fetchall()}
    con.register("_rules", rule_rows(thresholds, sizes, cfg))
    con.execute("CREATE TABLE segment_rules AS SELECT * FROM _rules")
    con.unregister("_rules")
