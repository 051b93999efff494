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

ONLINE_KEYS = typer.Option(None, "--online", help="The key table of this online store (redis://HOST:PORT/DB) "
                           "instead of the store file's: what `huaxiang serve --online` workers read.")


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
    publish: Optional[str] = typer.Option(None, "--publish", help="With --redis: also write the consumed users "
                                          "to this online store (a Redis URL; may be the --redis one)."),
    online: Optional[str] = typer.Option(None, "--online", help="Serve from this online store (redis://HOST:PORT/DB, "
                                         "filled by `huaxiang publish`) instead of a store file: a stateless "
                                         "worker; events and deletions are queued for the one writer."),
    workers: int = typer.Option(1, "--workers", min=1, help="With --online: worker processes on this host."),
    exposures: bool = typer.Option(True, "--exposures/--no-exposures", help="Record what each recommendation and "
                                   "search answer showed (the `exposures` table: experiments, attribution)."),
    explore: float = typer.Option(0.0, "--explore", min=0.0, max=1.0, help="The share of recommendations drawn at "
                                  "random from the pool of best candidates, each item's propensity recorded with "
                                  "its exposure (for `huaxiang ope --format exposures`; docs/experiments.md)."),
    explore_pool: int = typer.Option(50, "--explore-pool", min=1, max=1000, help="With --explore: the pool of best "
                                     "candidates drawn from (at least k)."),
):
    """Serve profiles, recommendations, search and segments over HTTP (API reference at /docs and /openapi.json)."""
    import uvicorn

    from ..serve.app import ServeSettings, create_app
    from ..stream import RedisSource
    source = RedisSource(redis_url, stream, group, "serve") if redis_url else None
    settings = ServeSettings(max_body_bytes=max_body_bytes, key_rate=key_rate, failed_keys=failed_keys,
                             session_hours=session_hours, header_seconds=client_timeout, body_seconds=client_timeout,
                             exposures=exposures, explore=explore, explore_pool=explore_pool)
    if explore and not exposures:
        raise HuaxiangError("--explore records propensities with the exposures: it needs --exposures")
    if online:
        if redis_url or publish:
            raise HuaxiangError("--online serves the online store; the writer (--redis, --publish) runs with --db")
        return serve_online(online, workers, host, port, settings)
    if workers > 1:
        raise HuaxiangError("--workers needs --online: a store file has one writing process (publish it to an "
                            "online store and serve that)")
    import sys
    sys.setswitchinterval(0.0005)  # the event loop waits less for the GIL while a worker thread computes
    if publish and not redis_url:
        raise HuaxiangError("--publish needs --redis (the writer is the stream's consumer)")
    from ..online.writer import OnlineWriter
    writer = OnlineWriter(publish) if publish else None  # (it renders from the service's store connection)
    uvicorn.run(create_app(db, settings, source, writer), host=host, port=port,
                http="huaxiang.serve.guard:SlowHeaders", log_level="warning", access_log=False)


def serve_online(url: str, workers: int, host: str, port: int, settings) -> None:
    """`workers` uvicorn worker processes of `serve.app:online_app` on one socket (uvicorn restarts one that dies)."""
    import dataclasses
    import os

    import uvicorn

    from ..online.layout import connect
    from ..serve.app import ONLINE_ENV
    connect(url)  # (a wrong URL: one line now, not a traceback per worker)
    os.environ[ONLINE_ENV] = json.dumps({"url": url, "settings": dataclasses.asdict(settings)})
    uvicorn.run("huaxiang.serve.app:online_app", factory=True, workers=workers, host=host, port=port,
                http="huaxiang.serve.guard:SlowHeaders", log_level="warning", access_log=False)


def consume(
    db: str = DB,
    redis_url: str = typer.Option("redis://127.0.0.1:6379/0", "--redis", help="Redis server URL."),
    stream: str = typer.Option("huaxiang:events", "--stream", help="The Redis stream of events."),
    group: str = typer.Option("huaxiang", "--group", help="Consumer group."),
    consumer_name: str = typer.Option("consumer-1", "--consumer", help="This consumer's name in the group."),
    batch: int = typer.Option(500, "--batch", min=1, help="Events per store transaction."),
    idle_exit: Optional[float] = typer.Option(None, "--idle-exit", help="Stop after this many idle seconds."),
    publish: Optional[str] = typer.Option(None, "--publish", help="Also write each batch's users to this online "
                                          "store (a Redis URL, may equal --redis) before acknowledging it: the one "
                                          "writer of `huaxiang serve --online`."),
    refresh_every: float = typer.Option(2.0, "--refresh-every", min=0.01, help="With --publish: each batch's "
                                        "events are patched online at once (counts, last seen, histograms, latest "
                                        "events) and its users' whole profiles refreshed this often, off the "
                                        "batch's path (seconds)."),
    config: Optional[str] = CONFIG,
):
    """Keep profiles fresh from a Redis stream: store each batch, refresh its users' profiles (and write them to
    the online store with --publish), then acknowledge. Deletions queued on the stream run in stream order."""
    from ..online.live import LivePath
    from ..online.writer import OnlineWriter
    from ..stream import RedisSource
    from ..stream import consume as run_consume
    source = RedisSource(redis_url, stream, group, consumer_name)
    con = connect(db)
    cfg = load_config(config)
    writer = OnlineWriter(publish, con) if publish else None
    live = None
    if writer:
        with spinner() as bar:
            bar.add_task("preparing the writer (the first time on a store: indexing its event ids) …", total=None)
            live = LivePath(writer, con, cfg, refresh_every)
    with spinner() as bar:
        task = bar.add_task(f"waiting for events on {stream}", total=None)
        report = run_consume(con, cfg, source, batch, idle_exit_s=idle_exit, writer=writer, live=live,
                             on_batch=lambda r, _: bar.update(task, description=(
                                 f"{r.messages:,} messages: {r.added:,} added, {r.duplicates:,} duplicates, "
                                 f"{r.quarantined:,} quarantined, {r.refreshed:,} profiles refreshed, "
                                 f"{r.forgotten:,} users forgotten" + (f", {r.online:,} written online"
                                                                       if writer else ""))))
    out.print(f"{report.messages:,} messages in {report.batches:,} batches: {report.added:,} events added, "
              f"{report.duplicates:,} duplicates, {report.quarantined:,} quarantined, "
              f"{report.refreshed:,} profiles refreshed, {report.forgotten:,} users forgotten"
              + (f", {report.online:,} written online" if writer else ""))


def create_key(
    scope: str = typer.Option(..., "--scope", help="read, write (events) or admin (deletion, keys)."),
    tenant: Optional[list[str]] = typer.Option(None, "--tenant", help="A tenant the key may see (repeat for "
                                               "several; none: every tenant, for the platform's operators)."),
    expires_in: Optional[str] = typer.Option(None, "--expires-in", help="A lifetime: 90d, 12h, 30m or seconds."),
    db: str = DB,
    label: str = typer.Option("", "--label", help="A note on who holds the key."),
    online: Optional[str] = ONLINE_KEYS,
):
    """Create an API key; it is printed once, as the last line (only its hash is stored). To make keys while
    `huaxiang serve` holds the store, use its admin route POST /v1/keys."""
    made, key = key_table(db, online).create(scope, label, tenant or None, duration(expires_in) if expires_in else None)
    whose = f"tenants {', '.join(sorted(made.tenants))}" if made.tenants is not None else "every tenant"
    out.print(f"created {made.id}, a {scope} key for {whose}{' (' + label + ')' if label else ''}"
              f"{', expiring ' + str(made.expires_at) if made.expires_at else ''}; store it now, it is not shown again:",
              markup=False, highlight=False)
    print(key)


def key_table(db: str, online: str | None):
    """The key table to work on: the online store's (`RedisKeys`) or the store file's (`StoreKeys`)."""
    from ..serve.keys import RedisKeys, StoreKeys
    if online:
        from ..online.layout import connect as reach
        return RedisKeys(reach(online))
    return StoreKeys(connect(db))


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
    online: Optional[str] = ONLINE_KEYS,
):
    """List the API keys: id, scope, tenants, label, created, expiry, revoked (never the keys themselves)."""
    keys = [k.listing() for k in key_table(db, online).list()]
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
    online: Optional[str] = ONLINE_KEYS,
):
    """Revoke an API key (by its id). While `huaxiang serve` holds the store, use DELETE /v1/keys/{id} instead."""
    key_table(db, online).revoke(key_id)
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
