"""The profile pipeline over Parquet on either engine: DuckDB on one machine, Apache Spark on a cluster.

Both engines run the same Ibis definitions (`feature_parts`, `join_parts`, `profile_rows`, `sg.thresholds`); the
Python steps (title keywords, review mentions) are one pandas function each, applied batch by batch (DuckDB:
Arrow batches in this process; Spark: `mapInPandas` on the executors, with what they need broadcast once).

Layout. Input: `DIR/<table>/` for events, items, orders and reviews (Parquet, optionally hive-partitioned, e.g.
`events/date=2017-12-01/…`; `huaxiang export` writes this from a store). Output: `DIR/features/built=<stamp>/`
and `DIR/profiles/built=<stamp>/`, one pair per build, plus `DIR/_huaxiang.json` (which input partitions were
read, thresholds and price cuts of the last full build). A full build writes every user; an incremental one
(`--incremental`) reads the partitions added since, and writes only the users they touch, computed from their
whole history; a user's current profile is the one from the latest build that wrote it (`read_profiles`).
"""
from __future__ import annotations

import json
import os
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import ibis
import pandas as pd
import pyarrow as pa

from . import schema
from .config import Config
from .errors import HuaxiangError
from .folders import Folder, is_uri
from .features import segments as sg
from .features import tags as tg

ENGINES = ("duckdb", "spark")
INPUTS = ("events", "items", "orders", "reviews")
MANIFEST = "_huaxiang.json"
MENTIONS = pa.schema([("review_id", pa.string()), ("kind", pa.string()), ("name", pa.string()),
                      ("polarity", pa.int32()), ("term", pa.string())])
TOKENS = pa.schema([("item_id", pa.string()), ("token", pa.string())])


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
    with the store's column types; a missing table is empty."""
    for name in INPUTS:
        table = schema.TABLES[name]
        cols = [c.name for c in table.columns]
        parts = partitions(input_dir / name) if only is None or name not in only else only[name]
        files = _parquet_files(input_dir / name, parts)
        if engine == "duckdb":
            casts = ", ".join(f"CAST({c} AS {schema.sql_type(t)}) AS {c}" for c, t in zip(cols, table.columns))
            source = (f"read_parquet([{', '.join(map(schema.sql_literal, files))}], union_by_name = true, "
                      "hive_partitioning = false)") if files else \
                f"(SELECT {', '.join(f'NULL AS {c}' for c in cols)} LIMIT 0)"
            ib.raw_sql(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT {casts} FROM {source}")
        else:
            session = ib._session
            ddl = ", ".join(f"{c.name} {_spark_type(c)}" for c in table.columns)
            df = session.read.parquet(*files) if files else session.createDataFrame([], ddl)
            df.selectExpr(*[f"CAST({c.name} AS {_spark_type(c)}) AS {c.name}" for c in table.columns]) \
                .select(*cols).createOrReplaceTempView(name)


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


def _tokens_fn(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for b in batches:
        yield tg.item_tokens(b)


def _mentions_fn(brands):
    def fn(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from .text.aspects import review_mentions
        for b in batches:
            found = review_mentions(list(b.itertuples(index=False, name=None)), brands.value)
            yield pd.DataFrame(found, columns=MENTIONS.names).astype({"polarity": "Int32"})
    return fn


def derive_text_tables(ib, engine: str) -> None:
    """`item_tokens` (title keywords) and `review_mentions` (aspects, brands, colours in review text)."""
    items, reviews = ib.table("items"), ib.table("reviews")
    map_batches(ib, engine, items.filter(items.title.notnull()).select("item_id", "title"), _tokens_fn, TOKENS,
                "item_tokens")
    brands = sorted(b for b in items.filter(items.brand.notnull()).select("brand").distinct().to_pandas()["brand"]
                    if b)
    texts = reviews.filter(reviews.text.notnull()).select("review_id", "text", "category")
    map_batches(ib, engine, texts, _mentions_fn(shared(ib, engine, brands)), MENTIONS, "review_mentions")


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


def export(con, output_dir: str) -> dict[str, int]:
    """Writes a store's events, items, orders and reviews as the Parquet input of `build`: one folder per table,
    events, orders and reviews partitioned by the day of their timestamp (`date=YYYY-MM-DD`). Returns rows per
    table."""
    rows = {}
    for name in INPUTS:
        dest = Path(output_dir) / name
        dest.mkdir(parents=True, exist_ok=True)
        if "ts" in schema.TABLES[name].names:
            con.execute(f"COPY (SELECT *, CAST(ts AS DATE) AS date FROM {name}) TO {schema.sql_literal(str(dest))} "
                        "(FORMAT parquet, PARTITION_BY (date), OVERWRITE_OR_IGNORE)")
        else:
            con.execute(f"COPY {name} TO {schema.sql_literal(str(dest / 'part-0.parquet'))} (FORMAT parquet)")
        rows[name] = con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
    return rows


def read_manifest(output_dir: Folder) -> dict:
    path = output_dir / MANIFEST
    return json.loads(path.read_text()) if path.exists() else {"inputs": {}, "builds": []}


def build(engine: str, input_dir: str, output_dir: str, cfg: Config, master: str = "local[2]",
          incremental: bool = False, memory_limit: str | None = None, embed: bool = False,
          sentiment: str | None = None, scores: tuple[str, ...] = (), score_sample: int = 200_000,
          step: Callable[[str], None] | None = None) -> dict:
    """Builds features and profiles (and with `scores`, lifecycle scores) from Parquet into Parquet; `sentiment`:
    a classifier folder, or "frozen" (with `embed`). Returns the manifest entry of this build."""
    from . import scale_models as sm
    from .profile.build import feature_parts, join_parts, price_cuts, profile_rows, reference_times
    from .profile.scores import score_kinds
    step = step or (lambda name: None)
    if sentiment == "frozen" and not embed:
        raise HuaxiangError("--sentiment frozen learns from the review embeddings: add --embed")
    scores = score_kinds(scores)
    ib = None
    if is_uri(input_dir) or is_uri(output_dir):  # listed and written through Spark's Hadoop file systems
        if engine != "spark":
            raise HuaxiangError(f"{input_dir if is_uri(input_dir) else output_dir}: a URI is read through Spark; "
                                "use --engine spark (DuckDB reads folders on this machine)")
        ib = connect(engine, master)
    session = ib._session if ib is not None else None
    src, dst = Folder(input_dir, session), Folder(output_dir, session)
    if not (src / "events").exists():
        raise HuaxiangError(f"{src / 'events'}: no events folder (huaxiang export writes one from a store)")
    manifest = read_manifest(dst)
    if incremental and not manifest["builds"]:
        raise HuaxiangError(f"{dst}: no earlier build to add to; run a full build first")
    now = {name: partitions(src / name) for name in INPUTS}
    new = {name: [p for p in parts if p not in manifest["inputs"].get(name, [])] for name, parts in now.items()}
    dst.mkdir()
    if incremental and not any(new[name] for name in ("events", "orders", "reviews")):
        return {"engine": engine, "users": 0, "new_partitions": {}}
    ib = ib or connect(engine, master, str(dst / "_spill"), memory_limit)
    step(f"reading {src} on {engine}")
    only = None
    if incremental:  # the users in the new partitions (read on their own first), then everything
        register_inputs(ib, engine, src, only=new)
        touched = [ib.table(n).select("user_id") for n in ("events", "orders", "reviews")]
        users = touched[0].union(touched[1]).union(touched[2]).distinct()
        only = user_column(ib, "_touched", users.filter(users.user_id.notnull()).to_pandas()["user_id"])
    register_inputs(ib, engine, src)
    step("title keywords and review mentions")
    derive_text_tables(ib, engine)
    last = manifest["builds"][-1] if incremental else None
    cuts = tuple(last["price_cuts"]) if last else price_cuts(ib)
    refs = reference_times(ib, None)
    if embed:
        step("embedding item texts and reviews; user vectors")
        sm.derive_embeddings(ib, engine, cfg, dst / "_vectors")
    if sentiment:
        step("review sentiment")
        sm.derive_sentiment(ib, engine, cfg, sentiment)
    users, parts = feature_parts(ib, cfg, refs, cuts, with_sentiment=bool(sentiment), with_embeddings=embed,
                                 only=only)
    stamp = build_stamp()
    if engine == "duckdb":  # each part on its own, with the whole memory budget (as the store's build does)
        for i, (name, expr) in enumerate(list(parts.items())):
            step(f"features: {name}")
            parts[name] = ib.create_table(f"_part_{i}", expr, temp=True, overwrite=True)
        users = ib.create_table("_part_users", users, temp=True, overwrite=True)
    step("features")
    feats_dir = dst / "features" / f"built={stamp}"
    write(ib, engine, join_parts(users, list(parts.values())), feats_dir)
    feats = read_folder(ib, engine, feats_dir, "_features")
    th = last["thresholds"] if last else sg.thresholds(feats, cfg.high_quantile, cfg.potential_quantile)
    step("segments and tags")
    prof, _ = profile_rows(feats, th, cfg)
    kmeans = last.get("kmeans") if last else None
    # the users the scores and k-means are fitted on
    sample = sm.sample_users(ib, score_sample, cfg.seed) if scores or (cfg.kmeans and not kmeans) else None
    if cfg.kmeans:
        step(f"k-means with k={cfg.kmeans}")
        prof, kmeans = sm.clusters(ib, engine, cfg, feats, prof, kmeans, sample)
    write(ib, engine, prof, dst / "profiles" / f"built={stamp}")
    notes = []
    if scores:
        def note(msg):
            notes.append(msg)
            step(f"scores: {msg}")
        write(ib, engine, sm.derive_scores(ib, engine, cfg, scores, feats, cuts, only, sample, note),
               dst / "scores" / f"built={stamp}")
    entry = {"built": stamp, "engine": engine, "incremental": incremental,
             "users": int(feats.count().to_pyarrow().as_py()), "price_cuts": list(cuts),
             "thresholds": {k: float(v) for k, v in th.items()},
             "new_partitions": {n: p for n, p in new.items() if p}, "scores": list(scores), "notes": notes,
             **({"kmeans": kmeans} if kmeans else {})}
    manifest["inputs"] = now
    manifest["builds"].append(entry)
    (dst / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return entry


def build_stamp() -> str:
    """The name of a build's output folders (`built=<stamp>`): UTC, sortable."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


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


def read_profiles(output_dir: str, table: str = "profiles") -> pd.DataFrame:
    """Each user's current row (in `scores`, one per kind): the one from the latest build that wrote it (DuckDB,
    in this process)."""
    import duckdb
    glob = str(Path(output_dir) / table / "built=*" / "*.parquet")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    keys = "user_id, kind" if table == "scores" else "user_id"
    return con.execute(f"""SELECT * EXCLUDE (built) FROM read_parquet('{glob}', hive_partitioning = true)
        QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY built DESC) = 1 ORDER BY {keys}""").df()
