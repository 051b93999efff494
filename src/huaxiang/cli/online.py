"""The online store: `publish`."""
from __future__ import annotations

import json
from functools import partial
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..config import load_config
from .options import CONFIG, DB, err, json_option, out


def publish(
    to: str = typer.Option(..., "--to", help="The online store: redis://HOST:PORT/DB."),
    db: str = DB,
    input_dir: Optional[str] = typer.Option(None, "--input", help="Publish a Parquet build instead of a store: "
                                            "the --output folder of `huaxiang build --input IN --output OUT`."),
    events_dir: Optional[str] = typer.Option(None, "--events", help="With --input: the build's input folder "
                                             "(default: the one its manifest recorded)."),
    tenant: Optional[list[str]] = typer.Option(None, "--tenant", help="Publish only this tenant ('' for ids "
                                               "without a prefix; repeat for several; default: every tenant)."),
    grace: float = typer.Option(5.0, "--grace", min=0, help="Seconds the replaced versions stay readable after "
                                "the switch, for requests already under way."),
    batch: int = typer.Option(2_000, "--batch", min=1, help="Users per Redis pipeline."),
    workers: int = typer.Option(1, "--workers", min=1, help="Processes rendering users in parallel."),
    config: Optional[str] = CONFIG,
    as_json: bool = json_option("Print {tenants: {tenant: {version, users, written, unchanged, bytes_per_user}}, "
                                "seconds, users_per_s, redis_used_memory_delta}."),
):
    """Write the profiles, recommendation contexts and segment reports to Redis for `huaxiang serve --online`:
    each tenant as a new version beside the one served, switched in one step; a tenant whose data did not change
    is skipped. The store's running experiments go too, with their variants' recommenders."""
    from ..online import layout
    from ..online.publish import publish as run_publish
    from ..online.source import parquet_source
    from ..store import connect
    r = layout.connect(to)
    if input_dir:
        opener = partial(parquet_source, input_dir, events_dir, load_config(config))
        source, model_files = f"parquet:{input_dir}", None
    else:
        from ..recommend.store_model import recommender_files
        opener = partial(connect, db, read_only=True)
        source, model_files = f"db:{db}", recommender_files(db)
    con = opener()
    if not input_dir:  # the workers read keys from the online store: the store's are added there
        from ..serve.keys import RedisKeys
        RedisKeys(r).copy_from(con)
    with Progress(TextColumn("publish"), BarColumn(), MofNCompleteColumn(), TextColumn("users"),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("publish", total=None)
        result = run_publish(con, r, source, tenants=tenant or None, grace=grace, model_files=model_files,
                             progress=lambda done, total: bar.update(task, completed=done, total=total),
                             batch=batch, workers=workers, opener=opener)
        if not input_dir:  # the running experiments and their variants' recommenders
            from ..online.publish import publish_experiments
            result["experiments"] = [e["name"] for e in publish_experiments(con, r, db)]
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
        return
    for name, t in result["tenants"].items():
        label = name or "(default)"
        if t["unchanged"]:
            out.print(f"{label}: unchanged, version {t['version']} ({t['users']:,} users)", markup=False)
        else:
            out.print(f"{label}: version {t['version']}, {t['written']:,} users written "
                      f"({t['bytes_per_user']:,} bytes per user)", markup=False)
    out.print(f"{result['seconds']:.1f} s, {result['users_per_s']:,} users/s; Redis memory "
              f"{result['redis_used_memory_delta'] / 2**20:+,.1f} MiB")
