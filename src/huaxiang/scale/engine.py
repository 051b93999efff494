"""The two engines of the Parquet build, behind one Ibis interface: DuckDB in this process, or Apache Spark.

Inputs are registered with the store's column types, Python steps run batch by batch (`map_batches`: Arrow batches
on DuckDB, `mapInPandas` on Spark's executors), and values the batch functions need are shared once (`shared`: a
broadcast on Spark).
"""
from __future__ import annotations

import os
import sys
import uuid
from datetime import datetime, timezone
from typing import Callable, Iterator

import ibis
import pandas as pd
import pyarrow as pa

from .. import schema
from ..errors import HuaxiangError
from ..folders import Folder

ENGINES = ("duckdb", "spark")
INPUTS = ("events", "items", "orders", "reviews")


def spark_session(master: str = "local[2]"):
    """A Spark session in UTC (timestamps are UTC wall-clock throughout huaxiang), with DuckDB's arithmetic (a
    division by zero is NULL). Java comes from the machine. An empty `master` leaves it, like every other setting,
    to PySpark's own configuration (`PYSPARK_SUBMIT_ARGS`, `spark-defaults.conf`)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise HuaxiangError("the Spark engine needs PySpark: pip install 'huaxiang[spark]'") from exc
    builder = (SparkSession.builder.appName("huaxiang").config("spark.sql.session.timeZone", "UTC")
               # x / 0 is NULL, as in DuckDB (ANSI mode, Spark 4's default, raises instead)
               .config("spark.sql.ansi.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false"))
    if master:
        builder = builder.master(master)
    if (master or "").startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # the workers import huaxiang too
        if "driver.memory" not in os.environ.get("PYSPARK_SUBMIT_ARGS", ""):
            # in local mode the executors live in the driver's JVM: give it half the machine, not Spark's 1 GB
            half = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**30 // 2
            builder = builder.config("spark.driver.memory", f"{max(1, half)}g")
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def connect(engine: str, master: str = "local[2]", spill_dir: str | None = None, memory_limit: str | None = None):
    """An Ibis backend: DuckDB in memory (spilling to `spill_dir` beyond `memory_limit`) or PySpark."""
    if engine == "duckdb":
        opts = {"temp_directory": spill_dir, "memory_limit": memory_limit}
        ib = ibis.duckdb.connect(threads=len(os.sched_getaffinity(0)), **{k: v for k, v in opts.items() if v})
        ib.raw_sql("SET TimeZone = 'UTC'")
        ib.raw_sql("SET preserve_insertion_order = false")  # less memory; outputs are read back by key
        return ib
    if engine == "spark":
        return ibis.pyspark.connect(spark_session(master))
    raise HuaxiangError(f"unknown engine {engine!r} (expected one of {', '.join(ENGINES)})")


def partitions(table_dir: Folder) -> list[str]:
    """The partition folders (`date=…`) under a table's folder, or [''] for an unpartitioned table."""
    if not table_dir.exists():
        return []
    return [name for name in table_dir.subfolders() if "=" in name] or [""]


def _parquet_files(table_dir: Folder, parts: list[str]) -> list[str]:
    return sorted(f for p in parts for f in (table_dir / p if p else table_dir).files(".parquet"))


def register_inputs(ib, engine: str, input_dir: Folder, only: dict[str, list[str]] | None = None) -> None:
    """Registers events, items, orders and reviews (those partitions only, when `only` names them) as tables
    with the store's column types; a missing table is empty, an optional column the files lack is NULL (events'
    `request_id` in an export of an older store)."""
    for name in INPUTS:
        table = schema.TABLES[name]
        cols = [c.name for c in table.columns]
        parts = partitions(input_dir / name) if only is None or name not in only else only[name]
        files = _parquet_files(input_dir / name, parts)
        if engine == "duckdb":
            source = (f"read_parquet([{', '.join(map(schema.sql_literal, files))}], union_by_name = true, "
                      "hive_partitioning = false)") if files else \
                f"(SELECT {', '.join(f'NULL AS {c}' for c in cols)} LIMIT 0)"
            present = {row[0] for row in ib.raw_sql(f"DESCRIBE SELECT * FROM {source}").fetchall()}
            casts = ", ".join(typed_column(c, present, schema.sql_type(c), f"{input_dir / name}")
                              for c in table.columns)
            ib.raw_sql(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT {casts} FROM {source}")
        else:
            session = ib._session
            ddl = ", ".join(f"{c.name} {_spark_type(c)}" for c in table.columns)
            # (mergeSchema: files written before a column came lack it; without it Spark takes one file's schema)
            df = session.read.option("mergeSchema", "true").parquet(*files) if files else \
                session.createDataFrame([], ddl)
            present = set(df.columns)
            df.selectExpr(*[typed_column(c, present, _spark_type(c), f"{input_dir / name}")
                            for c in table.columns]).select(*cols).createOrReplaceTempView(name)


def typed_column(col: schema.Column, present: set[str], sql_type: str, where: str) -> str:
    """SQL: `col` cast to `sql_type`, or a NULL of that type when the input lacks it and it is optional."""
    if col.name in present:
        return f"CAST({col.name} AS {sql_type}) AS {col.name}"
    if col.required:
        raise HuaxiangError(f"{where}: no {col.name} column (required; the files have {', '.join(sorted(present))})")
    return f"CAST(NULL AS {sql_type}) AS {col.name}"


def _spark_type(col: schema.Column) -> str:
    return {"VARCHAR": "STRING", "EVENT_TYPE": "STRING", "DOUBLE": "DOUBLE", "BIGINT": "BIGINT",
            "TIMESTAMP": "TIMESTAMP_NTZ"}[col.type]


def map_batches(ib, engine: str, expr, fn: Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]],
                out: pa.Schema, name: str, by: str | None = None) -> None:
    """Registers table `name` = `fn` applied to `expr`'s rows, pandas batch by batch: Arrow batches here on
    DuckDB (each result inserted as it comes: DuckDB can spill it), `mapInPandas` on Spark's executors.
    With `by` (a column), every batch holds all the rows of each value of it that it has."""
    if by is not None:
        fn = _whole_groups(fn, by)
    if engine == "duckdb":
        writer = ib.con.cursor()  # the batches stream from the backend's own connection
        writer.register("_empty", out.empty_table())
        writer.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM _empty")
        batches = ib.to_pyarrow_batches(expr.order_by(by) if by else expr, chunk_size=50_000)
        for frame in fn(b.to_pandas() for b in batches):
            writer.register("_batch", pa.Table.from_pandas(frame, schema=out, preserve_index=False))
            writer.execute(f"INSERT INTO {name} SELECT * FROM _batch")
        writer.close()
    else:
        from pyspark.sql.pandas.types import from_arrow_schema
        df = ib._session.sql(ib.compile(expr))
        if by is not None:
            df = df.repartition(by).sortWithinPartitions(by)
        df.mapInPandas(fn, from_arrow_schema(out)).createOrReplaceTempView(name)


def _whole_groups(fn, by: str):
    """`fn` over batches re-cut so that no value of `by` is split between two (the rows come sorted by it)."""
    def regrouped(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        carry = None
        for b in batches:
            b = b if carry is None else pd.concat([carry, b], ignore_index=True)
            if b.empty:
                continue
            last = b[by].to_numpy()[-1] == b[by].to_numpy()
            carry = b[last]
            if not last.all():
                yield b[~last]
        if carry is not None and len(carry):
            yield carry
    return lambda batches: fn(regrouped(batches))


def shared(ib, engine: str, value) -> "Shared":
    """`value` for the batch functions to read as `.value`: on Spark a broadcast (shipped once per executor,
    not with every task), here the value itself."""
    if engine != "spark":
        return Shared(value)
    from pyspark import cloudpickle  # fitted models hold local functions, which plain pickle refuses
    return Shared(broadcast=ib._session.sparkContext.broadcast(cloudpickle.dumps(value)))


_UNPICKLED: dict = {}  # per Python process: broadcast values, unpickled once


class Shared:
    def __init__(self, value=None, broadcast=None):
        self._value, self._broadcast = value, broadcast
        self.key = uuid.uuid4().hex  # made once, here: the same in every task that receives this object

    @property
    def value(self):
        if self._broadcast is None:
            return self._value
        if self.key not in _UNPICKLED:
            from pyspark import cloudpickle
            _UNPICKLED[self.key] = cloudpickle.loads(self._broadcast.value)
        return _UNPICKLED[self.key]



def user_column(ib, name: str, user_ids: pd.Series):
    """`user_ids` registered as table `name`; its user_id column (for `isin`)."""
    ib.create_view(name, ibis.memtable(pd.DataFrame({"user_id": user_ids.astype("string")})), overwrite=True)
    return ib.table(name).user_id


def read_files(ib, engine: str, files: list[str], name: str) -> None:
    """Registers Parquet files (paths or URIs) as table `name`."""
    if engine == "duckdb":
        ib.raw_sql(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM read_parquet("
                   f"[{', '.join(map(schema.sql_literal, files))}], hive_partitioning = false)")
    else:
        ib._session.read.parquet(*files).createOrReplaceTempView(name)


def write(ib, engine: str, expr, folder: Folder) -> None:
    if engine == "duckdb":
        folder.mkdir()
        ib.to_parquet(expr, f"{folder}/part-0.parquet")
    else:
        ib.to_parquet(expr, str(folder))


def read_folder(ib, engine: str, folder: Folder, name: str):
    if engine == "duckdb":
        return ib.read_parquet(f"{folder}/*.parquet", table_name=name, hive_partitioning=False)
    return ib.read_parquet(str(folder), table_name=name)


def build_stamp() -> str:
    """The name of a build's output folders (`built=<stamp>`): UTC, sortable."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
