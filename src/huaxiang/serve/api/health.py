"""GET /healthz (no key needed) and GET /metrics (Prometheus' text format, read scope)."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from ... import __version__
from ...store import has_table
from ..deps import cursor, need, service

router = APIRouter()


@router.get("/healthz")
def healthz(request: Request) -> dict:
    cursor(request).execute("SELECT 1").fetchone()
    return {"status": "ok", "version": __version__}


@router.get("/metrics", response_class=PlainTextResponse, dependencies=[need("read")])
def prometheus(request: Request) -> str:
    c = cursor(request)
    profiles = c.execute("SELECT count(*) FROM profiles").fetchone()[0] if has_table(c, "profiles") else 0
    return service(request).metrics.text({"profiles": profiles})
