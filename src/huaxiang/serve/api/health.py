"""GET /healthz (no key) and GET /metrics (Prometheus' text format, read scope). A key bound to tenants sees only
their profile counts; the request counters and latencies (the platform's own traffic) only keys for every tenant."""
from __future__ import annotations

import os

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from ... import __version__
from ..deps import need, service
from ..keys import Key

router = APIRouter()


@router.get("/healthz")
def healthz(request: Request) -> dict:
    return {"status": "ok", "version": __version__, "pid": os.getpid(), **service(request).ping()}


@router.get("/metrics", response_class=PlainTextResponse)
def prometheus(request: Request, key: Key = need("read")) -> str:
    counts = service(request).profile_counts()
    if key.tenants is not None:
        counts = {t: counts.get(t, 0) for t in sorted(key.tenants)}
    return service(request).metrics.text({"profiles": counts}, requests=key.tenants is None)
