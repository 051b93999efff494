"""Running as a service: `serve`, `consume`, `keys create`, `forget`."""
from __future__ import annotations

import json
from datetime import timedelta
from typing import Optional

import typer

from ..config import load_config
from ..errors import HuaxiangError
from ..store import connect
from .options import CONFIG, DB, json_option, out, spinner


def serve(
    db: str = DB,
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    max_body_bytes: int = typer.Option(1_000_000, "--max-body-bytes", help="Larger request bodies get 413."),
    key_rate: float = typer.Option(2_000.0, "--key-rate", min=0, help="Requests per second per key (0: no limit); "
                                   "over it, 429 with Retry-After."),
    failed_keys: int = typer.Option(20, "--failed-keys", min=0, help="Failed key attempts per client address per "
                                    "minute before it gets 429 (0: no limit)."),
    session_hours: float = typer.Option(8.0, "--session-hours", min=0.01, help="How long a sign-in to the pages "
                                        "lasts."),
    client_timeout: float = typer.Option(10.0, "--client-timeout", min=0.1, help="Seconds a client may take to "
                                         "send its request's headers, and its body between two packets (slower: "
                                         "closed, or 408)."),
    redis_url: Optional[str] = typer.Option(None, "--redis", help="Also consume events from this Redis server "
                                            "(the service owns the store, so it runs the consumer itself)."),
    stream: str = typer.Option("huaxiang:events", "--stream", help="With --redis: the stream of events."),
    group: str = typer.Option("huaxiang", "--group", help="With --redis: the consumer group."),
):
    """Serve profiles, recommendations, search and segments over HTTP (API reference at /docs and /openapi.json)."""
    import uvicorn

    from ..serve.app import ServeSettings, create_app
    from ..serve.guard import protocol
    from ..stream import RedisSource
    source = RedisSource(redis_url, stream, group, "serve") if redis_url else None
    settings = ServeSettings(max_body_bytes=max_body_bytes, key_rate=key_rate, failed_keys=failed_keys,
                             session_hours=session_hours, header_seconds=client_timeout, body_seconds=client_timeout)
    import sys
    sys.setswitchinterval(0.0005)  # the event loop waits less for the GIL while a worker thread computes
    uvicorn.run(create_app(db, settings, source), host=host, port=port, http=protocol(settings),
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
    scope: str = typer.Option(..., "--scope", help="read, write (events) or admin (deletion, keys)."),
    tenant: Optional[list[str]] = typer.Option(None, "--tenant", help="A tenant the key may see (repeat for "
                                               "several; none: every tenant, for the platform's operators)."),
    expires_in: Optional[str] = typer.Option(None, "--expires-in", help="A lifetime: 90d, 12h, 30m or seconds."),
    db: str = DB,
    label: str = typer.Option("", "--label", help="A note on who holds the key."),
):
    """Create an API key; it is printed once, as the last line (only its hash is stored). To make keys while
    `huaxiang serve` holds the store, use its admin route POST /v1/keys."""
    from ..serve.keys import create_key as create
    made, key = create(connect(db), scope, label, tenant or None, duration(expires_in) if expires_in else None)
    whose = f"tenants {', '.join(sorted(made.tenants))}" if made.tenants is not None else "every tenant"
    out.print(f"created {made.id}, a {scope} key for {whose}{' (' + label + ')' if label else ''}"
              f"{', expiring ' + str(made.expires_at) if made.expires_at else ''}; store it now, it is not shown again:",
              markup=False, highlight=False)
    print(key)


def duration(text: str) -> timedelta:
    """'90d', '12h', '30m', '45s' or plain seconds."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        return timedelta(seconds=float(number) * units[unit])
    except ValueError:
        raise HuaxiangError(f"--expires-in {text!r}: expected a number with d, h, m or s (e.g. 90d)") from None


def list_keys(
    db: str = DB,
    as_json: bool = json_option("Print the keys as JSON (the list GET /v1/keys gives)."),
):
    """List the API keys: id, scope, tenants, label, created, expiry, revoked (never the keys themselves)."""
    from ..serve.keys import list_keys as listing
    keys = [k.listing() for k in listing(connect(db))]
    if as_json:
        print(json.dumps(keys, ensure_ascii=False))
        return
    for k in keys:
        tenants = ", ".join(k["tenants"]) if k["tenants"] is not None else "every tenant"
        state = "revoked" if k["revoked"] else f"expires {k['expires_at']}" if k["expires_at"] else "live"
        out.print(f"{k['id']}  {k['scope']:<5}  {tenants}  {state}  created {k['created_at']}"
                  f"{'  ' + k['label'] if k['label'] else ''}", markup=False, highlight=False)


def revoke_key(
    key_id: str = typer.Argument(..., help="The key's id, as `huaxiang keys list` shows it (k_…)."),
    db: str = DB,
):
    """Revoke an API key (by its id). While `huaxiang serve` holds the store, use DELETE /v1/keys/{id} instead."""
    from ..serve.keys import revoke_key as revoke
    revoke(connect(db), key_id)
    out.print(f"revoked {key_id}", markup=False, highlight=False)


def forget(
    user_id: str = typer.Argument(..., help="The user to remove, as stored (e.g. taobao:1000251)."),
    db: str = DB,
    as_json: bool = json_option("Print what was removed as JSON."),
    allow_return: bool = typer.Option(False, "--allow-return",
                                      help="Let the user's later events in again (also lifts an earlier block)."),
):
    """Delete a user from every table, the graph, the vector cache, the quarantine and the recommender snapshot;
    their later events are refused unless --allow-return."""
    from ..forget import forget_user
    removed = forget_user(connect(db), db, user_id, suppress=not allow_return)
    if as_json:
        print(json.dumps({"user_id": user_id, "removed": removed}, ensure_ascii=False))
    else:
        out.print(f"forgot {user_id}: " + ", ".join(f"{n:,} from {place}" for place, n in removed.items()),
                  markup=False, highlight=False)
