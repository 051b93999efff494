"""The profile pipeline over Parquet on either engine: DuckDB on one machine, Apache Spark on a cluster.

Both engines run the same Ibis definitions (`feature_parts`, `join_parts`, `profile_rows`, `sg.thresholds`); the
Python steps (title keywords, review mentions) are one pandas function each, applied batch by batch (DuckDB:
Arrow batches in this process; Spark: `mapInPandas` on the executors, with what they need broadcast once).

Layout. Input: `DIR/<table>/` for events, items, orders and reviews (Parquet, optionally hive-partitioned, e.g.
`events/date=2017-12-01/…`; `huaxiang export` writes this from a store). Output: `DIR/features/built=<stamp>/`
and `DIR/profiles/built=<stamp>/`, one pair per build, plus `DIR/_huaxiang.json` (which input partitions were
read; each tenant's segment thresholds, price-band cut points and k-means model, kept by incremental builds). A
full build writes every user; an incremental one (`--incremental`) reads the partitions added since, and writes
only the users they touch, computed from their whole history; a user's current profile is the one from the latest
build that wrote it (`read_profiles`). A tenant the last build did not have gets its statistics in the incremental
build that brings it (all its users are new there), except k-means clusters (at the next full build).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pandas as pd

from .. import schema
from ..config import Config
from ..errors import HuaxiangError
from ..features import segments as sg
from ..folders import Folder, is_uri
from .engine import INPUTS, build_stamp, connect, partitions, read_folder, register_inputs, user_column, write

MANIFEST = "_huaxiang.json"


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
    from ..features.table import feature_parts, join_parts, price_cuts, reference_times
    from ..profile.build import profile_rows
    from ..profile.scores import score_kinds
    from ..text.encoder import ENCODERS
    from . import derive
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
    if incremental and not per_tenant(manifest["builds"][-1]):
        raise HuaxiangError(f"{dst}: the last build kept store-wide statistics (an older huaxiang); run a full "
                            "build first")
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
    derive.derive_text_tables(ib, engine)
    last = manifest["builds"][-1] if incremental else None
    cuts = {**price_cuts(ib), **last["price_cuts"]} if last else price_cuts(ib)  # a new tenant's: from now
    refs = reference_times(ib, None)
    if embed:
        step("embedding item texts and reviews; user vectors")
        derive.derive_embeddings(ib, engine, cfg, dst / "_vectors")
    if sentiment:
        step("review sentiment")
        derive.derive_sentiment(ib, engine, cfg, sentiment)
    users, parts = feature_parts(ib, cfg, refs, cuts, with_sentiment=bool(sentiment),
                                 embedding_model=ENCODERS[cfg.encoder].name if embed else None,
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
    th = sg.thresholds(feats, cfg.high_quantile, cfg.potential_quantile)
    if last:  # the last full build's, per tenant; a tenant new here has all its users in this build
        th = {**th, **last["thresholds"]}
    step("segments and tags")
    prof = profile_rows(feats, th, cfg)
    kmeans = last.get("kmeans") if last else None
    # the users the scores and k-means are fitted on
    sample = derive.sample_users(ib, score_sample, cfg.seed) if scores or (cfg.kmeans and not kmeans) else None
    if cfg.kmeans:
        step(f"k-means with k={cfg.kmeans}")
        prof, kmeans = derive.clusters(ib, engine, cfg, feats, prof, kmeans, sample)
    write(ib, engine, prof, dst / "profiles" / f"built={stamp}")
    notes = []
    if scores:
        def note(msg):
            notes.append(msg)
            step(f"scores: {msg}")
        write(ib, engine, derive.derive_scores(ib, engine, cfg, scores, feats, cuts, only, sample, note),
               dst / "scores" / f"built={stamp}")
    entry = {"built": stamp, "engine": engine, "incremental": incremental,
             "input": input_dir if is_uri(input_dir) else str(Path(input_dir).resolve()),  # (for `publish`)
             "users": int(feats.count().to_pyarrow().as_py()),
             "price_cuts": {t: [float(c) for c in v] for t, v in cuts.items()},
             "thresholds": {t: {k: float(x) for k, x in v.items()} for t, v in th.items()},
             "new_partitions": {n: p for n, p in new.items() if p}, "scores": list(scores), "notes": notes,
             **({"kmeans": kmeans} if kmeans else {})}
    manifest["inputs"] = now
    manifest["builds"].append(entry)
    (dst / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return entry


def per_tenant(entry: dict) -> bool:
    """Whether a manifest entry keeps its statistics per tenant ({tenant: …}; older builds kept one set)."""
    return isinstance(entry.get("price_cuts", {}), dict) and all(
        isinstance(v, dict) for key in ("thresholds", "kmeans") for v in entry.get(key, {}).values())


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
