"""The routes that change the store: DELETE /v1/users/{user_id} forgets a person (admin scope); POST /v1/events
stores a batch of events and refreshes its users' profiles (write scope). Embedded, both run under the service's
write lock and answer 200 when done; online, both are queued on the stream for the one writer and answer 202.

A key bound to tenants writes only their users: an event of another tenant's user is refused (named in
`rejected`, stored nowhere). No key writes an event that joins a user of one tenant to an item of another."""
from __future__ import annotations

import json

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from ...schema import tenant_of
from ..deps import need, own_user, service
from ..keys import Key
from ..service import ServeSettings


def router(settings: ServeSettings) -> APIRouter:
    """These routes, with the events body documented under `settings`' limits."""
    routes = APIRouter()
    routes.add_api_route("/v1/users/{user_id:path}", forget, methods=["DELETE"])
    routes.add_api_route("/v1/events", events, methods=["POST"], openapi_extra=events_body_schema(settings))
    return routes


def forget(request: Request, user_id: str, suppress: bool = Query(True, description=(
        "keep refusing this user's events afterwards (false: they may come back)")),
           key: Key = need("admin")) -> JSONResponse:
    own_user(key, user_id)
    status, answer = service(request).forget(user_id, suppress)
    return JSONResponse(answer, status_code=status)


async def events(request: Request, key: Key = need("write")) -> JSONResponse:
    svc = service(request)
    settings = svc.settings
    body = await request.body()  # (the guard has counted it: at most max_body_bytes)
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise HTTPException(400, f"the body is not JSON: {str(exc)[:200]}") from None
    batch = doc.get("events") if isinstance(doc, dict) else None
    if not isinstance(batch, list):
        raise HTTPException(422, 'expected {"events": [ {...}, … ]}')
    if len(batch) > settings.max_batch_events:
        raise HTTPException(413, f"{len(batch):,} events in one batch; the limit is {settings.max_batch_events:,}")
    return await run_in_threadpool(store_events, svc, key, batch)


def refusal(key: Key, event) -> tuple[str, str] | None:
    """(field, reason) when this key may not write this event; None when it may (or when validation will refuse
    it anyway: a missing or mistyped id)."""
    if not isinstance(event, dict) or not isinstance(event.get("user_id"), str):
        return None
    user, item = event["user_id"], event.get("item_id")
    if not key.sees(user):
        return "user_id", f"tenant {tenant_of(user)!r} is not one of this key's tenants"
    if isinstance(item, str) and item.strip() and tenant_of(item) != tenant_of(user):
        return "item_id", (f"item of tenant {tenant_of(item)!r} for a user of tenant {tenant_of(user)!r} "
                           "(tenants never mix)")
    return None


def store_events(svc, key: Key, batch: list) -> JSONResponse:
    """The events this key may write handed to the service (stored, or queued for the writer in online mode), off
    the event loop; those it may not are refused by position."""
    refused = {i: why for i, e in enumerate(batch) if (why := refusal(key, e)) is not None}
    kept = [i for i in range(len(batch)) if i not in refused]
    status, answer = svc.write_events([batch[i] for i in kept])
    found = [{**r, "index": kept[r["index"]]} for r in answer.pop("rejected")]
    found += [{"index": i, "field": field, "reason": reason} for i, (field, reason) in refused.items()]
    return JSONResponse({"received": len(batch), **answer, "refused": len(refused),
                         "rejected": sorted(found, key=lambda r: r["index"])}, status_code=status)


def events_body_schema(settings: ServeSettings) -> dict:
    """OpenAPI for POST /v1/events, from the store's `events` schema (the route parses the body itself, so that a
    bad event is quarantined by position instead of failing the batch)."""
    from ... import schema
    types = {"VARCHAR": {"type": "string"}, "DOUBLE": {"type": "number"}, "BIGINT": {"type": "integer"},
             "TIMESTAMP": {"type": "string", "description": "ISO 8601, or epoch seconds"},
             "EVENT_TYPE": {"type": "string", "enum": list(schema.EVENT_TYPES)}}
    event = {"type": "object", "properties": {c.name: types[c.type] for c in schema.EVENTS.columns},
             "required": [c.name for c in schema.EVENTS.columns if c.required]}
    event["properties"]["request_id"] = {
        "type": "string", "maxLength": schema.MAX_REQUEST_ID_CHARS,
        "description": "the request_id of the answer this click, cart or purchase came from (optional)"}
    body = {"type": "object", "required": ["events"],
            "properties": {"events": {"type": "array", "items": event, "maxItems": settings.max_batch_events}}}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": body}},
                            "description": f"at most {settings.max_body_bytes:,} bytes"}}
