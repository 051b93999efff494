"""Getting data in and profiles built: `ingest`, `build`, `export`, `demo`."""
from __future__ import annotations

from typing import Optional

import typer

from ..config import load_config
from ..errors import HuaxiangError
from ..ingest import FORMATS, parse_mapping
from ..jobs import run_build, run_ingest
from ..store import connect
from .options import CONFIG, DB, err, out, spinner


def ingest(
    file: str = typer.Argument(..., help="The file to ingest (plain or .gz)."),
    fmt: str = typer.Option(..., "--format", "-f", help=f"One of: {', '.join(FORMATS)}."),
    db: str = DB,
    table: str = typer.Option("events", "--table", help="Target table for csv/tsv/jsonl/parquet: events, items, reviews or orders."),
    map_: Optional[str] = typer.Option(None, "--map", help="Column mapping for generic formats, e.g. user_id=customer,item_id=sku,ts=time."),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="Prefix ids with NAMESPACE: so that several sources can share one store."),
    config: Optional[str] = CONFIG,
):
    """Read a file into the store, validating every row; bad rows go to the `quarantine` table."""
    con = connect(db)
    run_ingest(con, file, fmt, table, parse_mapping(map_), namespace, out=out, err=err,
               future_tolerance_s=load_config(config).future_tolerance_seconds)


def build(
    db: str = DB,
    config: Optional[str] = CONFIG,
    kmeans: Optional[int] = typer.Option(None, "--kmeans", help="Also cluster users with k-means into K groups."),
    utc_offset_hours: Optional[float] = typer.Option(None, "--utc-offset-hours", help="Local time for time-of-day habits."),
    engine: str = typer.Option("duckdb", "--engine", help="duckdb or spark (Spark needs --input/--output)."),
    input_dir: Optional[str] = typer.Option(None, "--input", help="Build from this Parquet folder (huaxiang export) "
                                            "instead of the store."),
    output_dir: Optional[str] = typer.Option(None, "--output", help="Write features and profiles here as Parquet."),
    master: str = typer.Option("local[2]", "--master", help="Spark master: local[N] or spark://host:port."),
    incremental: bool = typer.Option(False, "--incremental", help="Only the users touched by input partitions "
                                     "added since the last build into --output."),
    memory_limit: Optional[str] = typer.Option(None, "--memory-limit", help="DuckDB engine: memory cap, e.g. 2GB "
                                               "(beyond it DuckDB spills to OUTPUT/_spill)."),
    embed: bool = typer.Option(False, "--embed", help="With --input: also embed item texts and reviews with the "
                               "pretrained encoder and give every user a vector (the profile's `embedding`)."),
    sentiment: Optional[str] = typer.Option(None, "--sentiment", help="With --input: score every review with this "
                                            "classifier folder (huaxiang train classifier), or 'frozen' (with "
                                            "--embed); the profiles get review sentiment."),
    scores: Optional[str] = typer.Option(None, "--scores", help="With --input: also write lifecycle scores, e.g. "
                                         "churn,propensity,clv,risk or all (fitted on --score-sample users per "
                                         "tenant, applied to everyone)."),
    score_sample: int = typer.Option(200_000, "--score-sample", help="Users per tenant the scores are fitted on."),
):
    """Compute behaviour features, interest tags and segments: one profile per user. From the store (default), or
    from Parquet to Parquet on DuckDB or Spark with --input/--output (the same definitions on both engines)."""
    cfg = load_config(config, kmeans=kmeans, utc_offset_hours=utc_offset_hours)
    if input_dir is None and output_dir is None and engine == "duckdb":
        run_build(connect(db), cfg, out, err)
        return
    if not (input_dir and output_dir):
        raise HuaxiangError("--engine spark, --input and --output go together: give both folders")
    from ..scale import build as build_parquet
    with spinner("build: {task.description}") as bar:
        task = bar.add_task("starting", total=None)
        entry = build_parquet(engine, input_dir, output_dir, cfg, master=master, incremental=incremental,
                              memory_limit=memory_limit, embed=embed, sentiment=sentiment,
                              scores=tuple(k.strip() for k in (scores or "").split(",") if k.strip()),
                              score_sample=score_sample, step=lambda name: bar.update(task, description=name))
    for msg in entry.get("notes", []):
        out.print(f"  {msg}", markup=False, highlight=False)
    new = ", ".join(f"{t} {len(p)}" for t, p in entry["new_partitions"].items()) or "none"
    out.print(f"{engine}: wrote {entry['users']:,} profiles to {output_dir} (new input partitions: {new})")


def export(
    out_dir: str = typer.Argument(..., help="The folder to write (one sub-folder per table)."),
    db: str = DB,
):
    """Write the store's events, items, orders and reviews as Parquet, partitioned by day: the input of
    `huaxiang build --input` on DuckDB or Spark."""
    from ..scale import export as export_store
    rows = export_store(connect(db, read_only=True), out_dir)
    out.print(f"exported to {out_dir}: " + ", ".join(f"{t} {n:,}" for t, n in rows.items()))


def demo(
    db: str = typer.Option("huaxiang-demo.duckdb", "--db", help="Where to build the demo store."),
    show: int = typer.Option(3, "--show", help="How many profiles to print."),
):
    """Ingest the bundled slices of real data, build profiles and print a few."""
    from ..demo import run_demo
    run_demo(db, show, out, err)
