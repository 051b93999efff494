"""`huaxiang serve`: the store over HTTP (FastAPI). Every route but /healthz needs an API key
(`X-API-Key: …` or `Authorization: Bearer …`): 401 without a valid one, 403 when its scope is too small, 404 for a
user of a tenant the key is not bound to, 429 over a rate limit.

The service owns its DuckDB file (DuckDB allows one writing process); each request works on its own cursor.

Where things are: `service.py` (the state the routes share, on `app.state.service`), `deps.py` (what a route takes
from its request: the service, a cursor, the key check), `keys.py`, `sessions.py`, `limits.py` (keys, the pages'
sign-in sessions, rate limits), `api/` (the JSON routes), `ui.py` + `pages.py` (the web pages: routes + HTML),
`guard.py` + `metrics.py` (body limits, slow clients and request metrics), `reference.py` (the /docs page).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import HuaxiangError
from . import ui
from .api import experiments, health, keys, read, write
from .guard import Guard, SlowHeaders
from .reference import reference_page
from .service import ServeSettings, Service

__all__ = ["ServeSettings", "create_app"]

log = logging.getLogger("huaxiang.serve")
NOT_FOUND = ("unknown user", "unknown tenant", "unknown key")  # errors answered with 404


async def http_error(request: Request, exc: StarletteHTTPException):
    if exc.status_code == 404 and exc.detail == "Not Found":  # no route matched: say which, and where to look
        exc = StarletteHTTPException(404, f"no route {request.method} {request.url.path[:300]} (the API is "
                                          "described at /docs and /openapi.json)")
    return await http_exception_handler(request, exc)


async def user_error(request: Request, exc: HuaxiangError):
    text = str(exc)
    return JSONResponse({"detail": text}, status_code=404 if text.startswith(NOT_FOUND) else 400)


def consume_forever(service: Service, source, writer=None) -> None:
    """The service's stream consumer: on an error it says so and starts again; the unacknowledged batch is
    redelivered and its event ids keep it from being stored twice. `writer`: an online.writer.OnlineWriter."""
    from ..stream import consume
    while True:
        try:
            consume(service.cursor(), service.cfg, source, refresh=service.refresh, lock=service.write_lock,
                    writer=writer, forget=service.forget)
        except Exception as exc:  # keep consuming: the service must not go stale silently
            log.error("stream consumer stopped (%s: %s); restarting in 1 s", type(exc).__name__, exc)
            time.sleep(1)
            source.rewind()


def create_app(db: str, settings: ServeSettings | None = None, stream=None, writer=None) -> FastAPI:
    """The API over the store `db`; with `stream` (a `huaxiang.stream` source) it also consumes that stream, and with
    `writer` (an `online.writer.OnlineWriter`) it writes what it consumes to the online store as well."""
    settings = settings or ServeSettings()
    service = Service(db, settings)
    if writer is not None:  # what the routes write goes online too, rendered from the service's store
        writer.con = writer.con or service.con
        service.writer = writer
    app = assemble(service, settings)
    # profiles that a crash between a batch's commit and its refresh left missing
    threading.Thread(target=service.refresh_missing, name="refresh-missing", daemon=True).start()
    threading.Thread(target=service.reload_keys_forever, name="key-reload", daemon=True).start()
    if stream is not None:  # events from a Redis stream, consumed in this process (it owns the store)
        threading.Thread(target=consume_forever, name="stream-consumer", daemon=True,
                         args=(service, stream, writer)).start()
    return app


def create_online_app(url: str, settings: ServeSettings | None = None) -> FastAPI:
    """A stateless API worker over the online store at `url` (serve/online.py)."""
    from .online import OnlineService
    settings = settings or ServeSettings()
    service = OnlineService(url, settings)
    app = assemble(service, settings)
    threading.Thread(target=service.watch_forever, name="online-watch", daemon=True).start()
    return app


ONLINE_ENV = "HUAXIANG_ONLINE"  # how `huaxiang serve --online --workers N` tells its worker processes what to serve


def online_app() -> FastAPI:
    """The app factory each worker process of `huaxiang serve --online … --workers N` calls (uvicorn imports it by
    name in every worker): the URL and settings come from the environment variable `ONLINE_ENV`."""
    import json
    import sys
    given = json.loads(os.environ[ONLINE_ENV])
    sys.setswitchinterval(0.0005)  # the event loop waits less for the GIL while a worker thread computes
    return create_online_app(given["url"], ServeSettings(**given["settings"]))


def assemble(service, settings: ServeSettings) -> FastAPI:
    """The app of either kind of service: middleware, error handlers, routes, the reference page."""
    @asynccontextmanager
    async def lifespan(app):
        yield
        if service.exposures is not None:  # (what the answers showed and is still queued)
            service.exposures.close()
    app = FastAPI(title="huaxiang", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Deep user profiles for e-commerce search and recommendation.")
    app.state.service = service
    SlowHeaders.header_seconds = settings.header_seconds  # (the connections' protocol, one per process)
    app.add_middleware(Guard, settings=settings, metrics=service.metrics)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(HuaxiangError, user_error)
    app.add_exception_handler(ui.SignIn, ui.sign_in)
    routers = [health.router, read.router, write.router(settings), keys.router, ui.router]
    if isinstance(service, Service):  # (experiments are started, stopped and reported where the store is)
        routers.insert(4, experiments.router)
    for router in routers:
        app.include_router(router)
    app.add_api_route("/docs", lambda: reference_page(app), include_in_schema=False)
    return app
