"""The routes that change the store: DELETE /v1/users/{user_id} forgets a person (admin scope); POST /v1/events
stores a batch of events and refreshes its users' profiles (write scope)."""
from __future__ import annotations

import json
import time

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from ...ingest import ingest_records
from ..deps import cursor, need, service
from ..guard import too_large
from ..service import Service, ServeSettings


def router(settings: ServeSettings) -> APIRouter:
    """These routes, with the events body documented under `settings`' limits."""
    routes = APIRouter()
    routes.add_api_route("/v1/users/{user_id}", forget, methods=["DELETE"], dependencies=[need("admin")])
    routes.add_api_route("/v1/events", events, methods=["POST"], dependencies=[need("write")],
                         openapi_extra=events_body_schema(settings))
    return routes


def forget(request: Request, user_id: str) -> dict:
    from ...forget import forget_user
    svc = service(request)
    removed = forget_user(cursor(request), svc.db, user_id)  # an unknown user: HuaxiangError, answered with 404
    svc.docs.drop([user_id])
    svc.rec = None  # the serving snapshot changed on disk: reload it on the next request
    return {"user_id": user_id, "removed": removed}


async def events(request: Request) -> dict:
    svc = service(request)
    settings = svc.settings
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
    return await run_in_threadpool(store_events, svc, batch)


def store_events(svc: Service, batch: list) -> dict:
    """Validated, stored (one transaction) and the batch's users' profiles refreshed, off the event loop."""
    label = f"api:{time.time_ns()}"
    report = ingest_records(svc.cursor(), batch, label)
    refreshed = svc.refresh(report.users if report.added.get("events") else [])
    rejected = svc.cursor().execute("SELECT line, field, reason FROM quarantine WHERE source = ? ORDER BY line",
                                    [label]).fetchall()
    return {"received": len(batch), "added": report.added.get("events", 0), "profiles_refreshed": refreshed,
            "duplicates": report.duplicates.get("events", 0), "quarantined": report.quarantined,
            "rejected": [{"index": line - 1, "field": field, "reason": reason} for line, field, reason in rejected]}


def events_body_schema(settings: ServeSettings) -> dict:
    """OpenAPI for POST /v1/events, from the store's `events` schema (the route parses the body itself, so that a
    bad event is quarantined by position instead of failing the batch)."""
    from ... import schema
    types = {"VARCHAR": {"type": "string"}, "DOUBLE": {"type": "number"}, "BIGINT": {"type": "integer"},
             "TIMESTAMP": {"type": "string", "description": "ISO 8601, or epoch seconds"},
             "EVENT_TYPE": {"type": "string", "enum": list(schema.EVENT_TYPES)}}
    event = {"type": "object", "properties": {c.name: types[c.type] for c in schema.EVENTS.columns},
             "required": [c.name for c in schema.EVENTS.columns if c.required]}
    body = {"type": "object", "required": ["events"],
            "properties": {"events": {"type": "array", "items": event, "maxItems": settings.max_batch_events}}}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": body}},
                            "description": f"at most {settings.max_body_bytes:,} bytes"}}
