"""`huaxiang serve`: the store over HTTP (FastAPI). Every route but /healthz needs an API key
(`X-API-Key: …` or `Authorization: Bearer …`): 401 without a valid one, 403 when its scope is too small.

The service owns its DuckDB file (DuckDB allows one writing process); each request works on its own cursor.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

import duckdb
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..config import load_config
from ..errors import HuaxiangError
from ..ingest import ingest_records
from ..profile.render import no_profile
from ..profile.segment_report import MAX_EPSILON, MIN_EPSILON, segment_report
from ..store import connect, has_table
from .docs import ProfileDocs
from .keys import allows, header_key, load_keys, scope_of
from .pages import PageDeps, mount_pages

log = logging.getLogger("huaxiang.serve")


@dataclass(frozen=True)
class ServeSettings:
    max_body_bytes: int = 1_000_000  # a POST body over this gets 413
    max_batch_events: int = 5_000  # events per POST /v1/events
    key_reload_seconds: float = 2.0  # an unknown key re-reads the key table at most this often
    profile_docs: int = 200_000  # profile documents held in memory, most recently active users first


class Metrics:
    """Request counts and latency histograms per route, in Prometheus' text format."""
    BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = defaultdict(int)  # (route, status) -> n
        self.hist = defaultdict(lambda: [0] * (len(self.BUCKETS) + 1))  # route -> bucket counts (+Inf)
        self.total = defaultdict(float)

    def observe(self, route: str, status: int, seconds: float) -> None:
        with self.lock:
            self.requests[(route, status)] += 1
            i = next((j for j, b in enumerate(self.BUCKETS) if seconds <= b), len(self.BUCKETS))
            self.hist[route][i] += 1
            self.total[route] += seconds

    def text(self, extra: dict[str, float]) -> str:
        lines = ["# TYPE huaxiang_requests_total counter"]
        with self.lock:
            for (route, status), n in sorted(self.requests.items()):
                lines.append(f'huaxiang_requests_total{{route="{route}",status="{status}"}} {n}')
            lines.append("# TYPE huaxiang_request_seconds histogram")
            for route, counts in sorted(self.hist.items()):
                cum = 0
                for b, c in zip([*map(str, self.BUCKETS), "+Inf"], counts):
                    cum += c
                    lines.append(f'huaxiang_request_seconds_bucket{{route="{route}",le="{b}"}} {cum}')
                lines.append(f'huaxiang_request_seconds_sum{{route="{route}"}} {self.total[route]:.6f}')
                lines.append(f'huaxiang_request_seconds_count{{route="{route}"}} {cum}')
        for name, value in extra.items():
            lines += [f"# TYPE huaxiang_{name} gauge", f"huaxiang_{name} {value}"]
        return "\n".join(lines) + "\n"


class Guard:
    """ASGI middleware: 413 for a declared body over the limit, and every request's status and time into metrics."""

    def __init__(self, app, settings: ServeSettings, metrics: Metrics):
        self.app, self.settings, self.metrics = app, settings, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        async def sent(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            size = dict(scope["headers"]).get(b"content-length")
            if size is not None and (not size.isdigit() or int(size) > self.settings.max_body_bytes):
                refusal = JSONResponse({"detail": too_large(size.decode("latin-1"), self.settings)}, 413)
                await refusal(scope, receive, sent)
            else:
                await self.app(scope, receive, sent)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe(route, status, time.perf_counter() - started)


def events_body_schema(settings: ServeSettings) -> dict:
    """OpenAPI for POST /v1/events, from the store's `events` schema (the route parses the body itself, so that a
    bad event is quarantined by position instead of failing the batch)."""
    from .. import schema
    types = {"VARCHAR": {"type": "string"}, "DOUBLE": {"type": "number"}, "BIGINT": {"type": "integer"},
             "TIMESTAMP": {"type": "string", "description": "ISO 8601, or epoch seconds"},
             "EVENT_TYPE": {"type": "string", "enum": list(schema.EVENT_TYPES)}}
    event = {"type": "object", "properties": {c.name: types[c.type] for c in schema.EVENTS.columns},
             "required": [c.name for c in schema.EVENTS.columns if c.required]}
    body = {"type": "object", "required": ["events"],
            "properties": {"events": {"type": "array", "items": event, "maxItems": settings.max_batch_events}}}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": body}},
                            "description": f"at most {settings.max_body_bytes:,} bytes"}}


def too_large(size: str, settings: ServeSettings) -> str:
    return f"payload of {size} bytes is over the limit of {settings.max_body_bytes:,} bytes"


def consume_forever(con, source, refresh) -> None:
    """The service's stream consumer: on an error (say, a write conflict with a POST) it says so and starts again;
    the unacknowledged batch is redelivered and its event ids keep it from being stored twice."""
    from ..stream import consume
    while True:
        try:
            consume(con, load_config(), source, refresh=refresh)
        except Exception as exc:  # keep consuming: the service must not go stale silently
            log.error("stream consumer stopped (%s: %s); restarting in 1 s", type(exc).__name__, exc)
            time.sleep(1)
            source.rewind()


def create_app(db: str, settings: ServeSettings | None = None, stream=None) -> FastAPI:
    """The API over the store `db`; with `stream` (a `huaxiang.stream` source) it also consumes that stream."""
    settings = settings or ServeSettings()
    con = connect(db)
    state = {"keys": load_keys(con), "keys_read": time.monotonic(), "rec": None}
    metrics = Metrics()
    lock = threading.Lock()
    docs = ProfileDocs(con, settings.profile_docs)
    docs.warm()
    app = FastAPI(title="huaxiang", version=__version__,
                  description="Deep user profiles for e-commerce search and recommendation.")
    app.add_middleware(Guard, settings=settings, metrics=metrics)

    def cursor() -> duckdb.DuckDBPyConnection:
        return con.cursor()

    def scope_for(key: str | None) -> str | None:
        scope = scope_of(state["keys"], key)
        if scope is None and key and time.monotonic() - state["keys_read"] > settings.key_reload_seconds:
            state["keys"], state["keys_read"] = load_keys(con.cursor()), time.monotonic()
            scope = scope_of(state["keys"], key)
        return scope

    def key_scope(request: Request) -> str | None:
        return scope_for(header_key(request))

    def need(scope: str):
        async def check(request: Request) -> None:
            have = key_scope(request)
            if have is None:
                raise HTTPException(401, "a valid API key is required (header X-API-Key or Authorization: Bearer)",
                                    headers={"WWW-Authenticate": "Bearer"})
            if not allows(have, scope):
                raise HTTPException(403, f"this key's scope is {have!r}; this route needs {scope!r}")
        return Depends(check)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404 and exc.detail == "Not Found":  # no route matched: say which, and where to look
            exc = StarletteHTTPException(404, f"no route {request.method} {request.url.path[:300]} (the API is "
                                              "described at /docs and /openapi.json)")
        return await http_exception_handler(request, exc)

    @app.exception_handler(HuaxiangError)
    async def user_error(request: Request, exc: HuaxiangError):
        text = str(exc)
        return JSONResponse({"detail": text}, status_code=404 if text.startswith("unknown user") else 400)

    @app.get("/healthz")
    def healthz() -> dict:
        cursor().execute("SELECT 1").fetchone()
        return {"status": "ok", "version": __version__}

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=[need("read")])
    def prometheus() -> str:
        c = cursor()
        profiles = c.execute("SELECT count(*) FROM profiles").fetchone()[0] if has_table(c, "profiles") else 0
        return metrics.text({"profiles": profiles})

    @app.get("/v1/users/{user_id}/profile", dependencies=[need("read")], response_class=Response,
             responses={200: {"content": {"application/json": {}}, "description": "the user's profile record"}})
    async def profile(user_id: str) -> Response:
        doc = docs.get(user_id) or await run_in_threadpool(docs.fetch, user_id)  # (a held one: no hand-off)
        if doc is None:
            raise no_profile(user_id)
        return Response(doc, media_type="application/json")

    def recommender():
        from ..recommend.store_model import load_store_recommender, model_dir
        if state["rec"] is None:
            if not (model_dir(db) / "recommender.json").exists():
                raise HTTPException(409, "no recommender trained for this store: run `huaxiang train recommender`")
            state["rec"] = load_store_recommender(db)
        return state["rec"]

    @app.get("/v1/users/{user_id}/recommendations", dependencies=[need("read")])
    async def recommendations(user_id: str, k: int = Query(10, ge=1, le=200), explain: bool = True) -> JSONResponse:
        # on the event loop: a warm call is ~0.5 ms of work, less than a hand-off to the thread pool costs
        from ..recommend.top_k import recommend
        return JSONResponse(recommend(cursor(), recommender(), user_id, k, explain))

    @app.get("/v1/search", dependencies=[need("read")])
    def search(q: str = Query(..., min_length=1, max_length=500), user_id: str | None = Query(None, max_length=256),
               k: int = Query(10, ge=1, le=200)) -> dict:
        from ..recommend.search import search_store
        rec = recommender() if user_id else None
        return search_store(cursor(), q, user_id, k, None, rec)

    @app.get("/v1/segments", dependencies=[need("read")])
    def segments(epsilon: float | None = Query(None, ge=MIN_EPSILON, le=MAX_EPSILON,
                                               description="differential-privacy budget"),
                 clv_cap: float = Query(1_000.0, gt=0, description="with epsilon: per-user CLV bound")) -> dict:
        return segment_report(cursor(), epsilon, clv_cap)

    def refresh(users: list[str]) -> int:
        """Profiles of these (stored) users recomputed now, their documents renewed, their cached recommendation
        context dropped. Used by POST /v1/events and by the stream consumer."""
        from ..profile.build import ProfileRefresher
        users = sorted(set(users))
        if not users or not has_table(cursor(), "profiles"):
            return 0
        with lock:
            if state.get("refresher") is None:
                state["refresher"] = ProfileRefresher(con, load_config())
            n = state["refresher"].refresh(users)
        docs.load(users)
        if state["rec"] is not None:
            for part in ("histories", "liked", "queries", "profiles"):
                for u in users:
                    state["rec"].snapshot[part].pop(u, None)  # recommend() then reads them from the store
        return n

    @app.delete("/v1/users/{user_id}", dependencies=[need("admin")])
    def forget(user_id: str) -> dict:
        from ..privacy import forget_user
        removed = forget_user(cursor(), db, user_id)  # an unknown user: HuaxiangError, answered with 404
        docs.drop([user_id])
        state["rec"] = None  # the serving snapshot changed on disk: reload it on the next request
        return {"user_id": user_id, "removed": removed}

    @app.post("/v1/events", dependencies=[need("write")], openapi_extra=events_body_schema(settings))
    async def events(request: Request) -> dict:
        body = await request.body()
        if len(body) > settings.max_body_bytes:  # a chunked body has no Content-Length to check up front
            raise HTTPException(413, too_large(f"{len(body):,}", settings))
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise HTTPException(400, f"the body is not JSON: {str(exc)[:200]}") from None
        batch = doc.get("events") if isinstance(doc, dict) else None
        if not isinstance(batch, list):
            raise HTTPException(422, 'expected {"events": [ {...}, … ]}')
        if len(batch) > settings.max_batch_events:
            raise HTTPException(413, f"{len(batch):,} events in one batch; the limit is {settings.max_batch_events:,}")
        return await run_in_threadpool(store_events, batch)

    def store_events(batch: list) -> dict:
        """Validated, stored (one transaction) and the batch's users' profiles refreshed, off the event loop."""
        label = f"api:{time.time_ns()}"
        report = ingest_records(cursor(), batch, label)
        refreshed = refresh(report.users if report.added.get("events") else [])
        rejected = cursor().execute("SELECT line, field, reason FROM quarantine WHERE source = ? ORDER BY line",
                                    [label]).fetchall()
        return {"received": len(batch), "added": report.added.get("events", 0), "profiles_refreshed": refreshed,
                "duplicates": report.duplicates.get("events", 0), "quarantined": report.quarantined,
                "rejected": [{"index": line - 1, "field": field, "reason": reason} for line, field, reason in rejected]}

    def page_profile(user_id: str) -> dict | None:
        doc = docs.fetch(user_id)
        return json.loads(doc) if doc is not None else None

    mount_pages(app, PageDeps(scope_for, cursor, page_profile, recommender))  # (every scope may read)

    if stream is not None:  # events from a Redis stream, consumed in this process (it owns the store)
        threading.Thread(target=consume_forever, name="stream-consumer", daemon=True,
                         args=(con.cursor(), stream, refresh)).start()
    return app
