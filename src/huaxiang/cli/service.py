"""Running as a service: `serve`, `consume`, `keys create`, `forget`."""
from __future__ import annotations

import json
from typing import Optional

import typer

from ..config import load_config
from ..store import connect
from .options import CONFIG, DB, json_option, out, spinner


def serve(
    db: str = DB,
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    max_body_bytes: int = typer.Option(1_000_000, "--max-body-bytes", help="Larger request bodies get 413."),
    redis_url: Optional[str] = typer.Option(None, "--redis", help="Also consume events from this Redis server "
                                            "(the service owns the store, so it runs the consumer itself)."),
    stream: str = typer.Option("huaxiang:events", "--stream", help="With --redis: the stream of events."),
    group: str = typer.Option("huaxiang", "--group", help="With --redis: the consumer group."),
):
    """Serve profiles, recommendations, search and segments over HTTP (OpenAPI at /docs and /openapi.json)."""
    import uvicorn

    from ..serve.app import ServeSettings, create_app
    from ..stream import RedisSource
    source = RedisSource(redis_url, stream, group, "serve") if redis_url else None
    uvicorn.run(create_app(db, ServeSettings(max_body_bytes=max_body_bytes), source), host=host, port=port,
                log_level="warning", access_log=False)


def consume(
    db: str = DB,
    redis_url: str = typer.Option("redis://127.0.0.1:6379/0", "--redis", help="Redis server URL."),
    stream: str = typer.Option("huaxiang:events", "--stream", help="The Redis stream of events."),
    group: str = typer.Option("huaxiang", "--group", help="Consumer group."),
    consumer_name: str = typer.Option("consumer-1", "--consumer", help="This consumer's name in the group."),
    batch: int = typer.Option(500, "--batch", min=1, help="Events per store transaction."),
    idle_exit: Optional[float] = typer.Option(None, "--idle-exit", help="Stop after this many idle seconds."),
    config: Optional[str] = CONFIG,
):
    """Keep profiles fresh from a Redis stream: store each batch, refresh its users' profiles, then acknowledge."""
    from ..stream import RedisSource
    from ..stream import consume as run_consume
    source = RedisSource(redis_url, stream, group, consumer_name)
    with spinner() as bar:
        task = bar.add_task(f"waiting for events on {stream}", total=None)
        report = run_consume(connect(db), load_config(config), source, batch, idle_exit_s=idle_exit,
                             on_batch=lambda r, _: bar.update(task, description=(
                                 f"{r.messages:,} messages: {r.added:,} added, {r.duplicates:,} duplicates, "
                                 f"{r.quarantined:,} quarantined, {r.refreshed:,} profiles refreshed")))
    out.print(f"{report.messages:,} messages in {report.batches:,} batches: {report.added:,} events added, "
              f"{report.duplicates:,} duplicates, {report.quarantined:,} quarantined, "
              f"{report.refreshed:,} profiles refreshed")


def create_key(
    scope: str = typer.Option(..., "--scope", help="read, write (events) or admin (deletion)."),
    db: str = DB,
    label: str = typer.Option("", "--label", help="A note on who holds the key."),
):
    """Create an API key; it is printed once, as the last line (only its hash is stored)."""
    from ..serve.keys import create_key as create
    key = create(connect(db), scope, label)
    out.print(f"created a {scope} key{' for ' + label if label else ''}; store it now, it is not shown again:")
    print(key)


def forget(
    user_id: str = typer.Argument(..., help="The user to remove, as stored (e.g. taobao:1000251)."),
    db: str = DB,
    as_json: bool = json_option("Print what was removed as JSON."),
):
    """Delete a user from every table, the graph, the vector cache, the quarantine and the recommender snapshot."""
    from ..forget import forget_user
    removed = forget_user(connect(db), db, user_id)
    if as_json:
        print(json.dumps({"user_id": user_id, "removed": removed}, ensure_ascii=False))
    else:
        out.print(f"forgot {user_id}: " + ", ".join(f"{n:,} from {place}" for place, n in removed.items()),
                  markup=False, highlight=False)
