"""`huaxiang serve`: the store over HTTP (FastAPI). Every route but /healthz needs an API key
(`X-API-Key: …` or `Authorization: Bearer …`): 401 without a valid one, 403 when its scope is too small.

The service owns its DuckDB file (DuckDB allows one writing process); each request works on its own cursor.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass

import duckdb
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from .. import __version__
from ..config import load_config
from ..errors import HuaxiangError
from ..ingest import ingest_records
from ..store import connect, has_table
from .keys import allows, load_keys, scope_of


@dataclass(frozen=True)
class ServeSettings:
    max_body_bytes: int = 1_000_000  # a POST body over this gets 413
    max_batch_events: int = 5_000  # events per POST /v1/events
    key_reload_seconds: float = 2.0  # an unknown key re-reads the key table at most this often


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


def create_app(db: str, settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    con = connect(db)
    state = {"keys": load_keys(con), "keys_read": time.monotonic(), "rec": None}
    metrics = Metrics()
    lock = threading.Lock()
    app = FastAPI(title="huaxiang", version=__version__,
                  description="Deep user profiles for e-commerce search and recommendation.")

    def too_large(size: str) -> str:
        return f"payload of {size} bytes is over the limit of {settings.max_body_bytes:,} bytes"

    def cursor() -> duckdb.DuckDBPyConnection:
        return con.cursor()

    def key_scope(request: Request) -> str | None:
        key = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if key is None and auth.lower().startswith("bearer "):
            key = auth[7:].strip()
        scope = scope_of(state["keys"], key)
        if scope is None and key and time.monotonic() - state["keys_read"] > settings.key_reload_seconds:
            state["keys"], state["keys_read"] = load_keys(con.cursor()), time.monotonic()
            scope = scope_of(state["keys"], key)
        return scope

    def need(scope: str):
        def check(request: Request) -> None:
            have = key_scope(request)
            if have is None:
                raise HTTPException(401, "a valid API key is required (header X-API-Key or Authorization: Bearer)",
                                    headers={"WWW-Authenticate": "Bearer"})
            if not allows(have, scope):
                raise HTTPException(403, f"this key's scope is {have!r}; this route needs {scope!r}")
        return Depends(check)

    @app.middleware("http")
    async def limits_and_metrics(request: Request, call_next):
        started = time.perf_counter()
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > settings.max_body_bytes):
            response = JSONResponse({"detail": too_large(size)}, status_code=413)
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        metrics.observe(getattr(route, "path", "unmatched"), response.status_code, time.perf_counter() - started)
        return response

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

    @app.get("/v1/users/{user_id}/profile", dependencies=[need("read")])
    def profile(user_id: str) -> dict:
        from ..profile.render import profile_record
        return profile_record(cursor(), user_id)

    def recommender():
        from ..recommend.store_model import load_store_recommender, model_dir
        if state["rec"] is None:
            if not (model_dir(db) / "recommender.json").exists():
                raise HTTPException(409, "no recommender trained for this store: run `huaxiang train recommender`")
            state["rec"] = load_store_recommender(db)
        return state["rec"]

    @app.get("/v1/users/{user_id}/recommendations", dependencies=[need("read")])
    def recommendations(user_id: str, k: int = Query(10, ge=1, le=200), explain: bool = True) -> dict:
        from ..recommend.top_k import recommend
        return recommend(cursor(), recommender(), user_id, k, explain)

    @app.get("/v1/search", dependencies=[need("read")])
    def search(q: str = Query(..., min_length=1, max_length=500), user_id: str | None = Query(None, max_length=256),
               k: int = Query(10, ge=1, le=200)) -> dict:
        from ..recommend.search import search_store
        rec = recommender() if user_id else None
        return search_store(cursor(), q, user_id, k, None, rec)

    @app.get("/v1/segments", dependencies=[need("read")])
    def segments() -> dict:
        from ..profile.scores import value_tiers
        c = cursor()
        try:
            rows = c.execute("SELECT segment, definition, size FROM segment_rules").fetchall()
        except duckdb.CatalogException:
            raise HTTPException(409, "no segments yet: run `huaxiang build`") from None
        return {"segments": [{"segment": s, "definition": d, "size": n} for s, d, n in rows],
                "value_tiers": value_tiers(c)}

    def refresh(raw_ids: list[str]) -> int:
        """Profiles of the batch's users recomputed now; their cached recommendation context dropped."""
        from ..privacy import id_key, pseudonym
        from ..profile.build import ProfileRefresher
        key = id_key()
        users = sorted({pseudonym(u, key) if key else u for u in raw_ids})
        if not users or not has_table(cursor(), "profiles"):
            return 0
        with lock:
            if state.get("refresher") is None:
                state["refresher"] = ProfileRefresher(con, load_config())
            n = state["refresher"].refresh(users)
        if state["rec"] is not None:
            for part in ("histories", "liked", "queries", "profiles"):
                for u in users:
                    state["rec"].snapshot[part].pop(u, None)  # recommend() then reads them from the store
        return n

    @app.delete("/v1/users/{user_id}", dependencies=[need("admin")])
    def forget(user_id: str) -> dict:
        from ..privacy import forget_user
        removed = forget_user(cursor(), db, user_id)
        if not removed:
            raise HTTPException(404, f"unknown user {user_id!r}: nothing of them is in the store")
        state["rec"] = None  # the serving snapshot changed on disk: reload it on the next request
        return {"user_id": user_id, "removed": removed}

    @app.post("/v1/events", dependencies=[need("write")])
    async def events(request: Request) -> dict:
        import json
        body = await request.body()
        if len(body) > settings.max_body_bytes:  # a chunked body has no Content-Length to check up front
            raise HTTPException(413, too_large(f"{len(body):,}"))
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise HTTPException(400, f"the body is not JSON: {str(exc)[:200]}") from None
        batch = doc.get("events") if isinstance(doc, dict) else None
        if not isinstance(batch, list):
            raise HTTPException(422, 'expected {"events": [ {...}, … ]}')
        if len(batch) > settings.max_batch_events:
            raise HTTPException(413, f"{len(batch):,} events in one batch; the limit is {settings.max_batch_events:,}")
        label = f"api:{time.time_ns()}"
        report = ingest_records(cursor(), batch, label)
        refreshed = refresh([r["user_id"] for r in batch if isinstance(r, dict) and isinstance(r.get("user_id"), str)]
                            if report.added.get("events") else [])
        rejected = cursor().execute("SELECT line, field, reason FROM quarantine WHERE source = ? ORDER BY line",
                                    [label]).fetchall()
        return {"received": len(batch), "added": report.added.get("events", 0), "profiles_refreshed": refreshed,
                "duplicates": report.duplicates.get("events", 0), "quarantined": report.quarantined,
                "rejected": [{"index": line - 1, "field": field, "reason": reason} for line, field, reason in rejected]}

    return app
