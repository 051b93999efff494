"""GET /healthz (no key) and GET /metrics (Prometheus' text format, read scope). A key bound to tenants sees only
their profile counts; the request counters and latencies (the platform's own traffic) only keys for every tenant."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from ... import __version__
from ...schema import tenant_sql
from ...store import has_table
from ..deps import cursor, need, service
from ..keys import Key

router = APIRouter()


@router.get("/healthz")
def healthz(request: Request) -> dict:
    cursor(request).execute("SELECT 1").fetchone()
    return {"status": "ok", "version": __version__}


@router.get("/metrics", response_class=PlainTextResponse)
def prometheus(request: Request, key: Key = need("read")) -> str:
    c = cursor(request)
    counts = dict(c.execute(f"SELECT {tenant_sql('user_id')}, count(*) FROM profiles GROUP BY 1").fetchall()) \
        if has_table(c, "profiles") else {}
    if key.tenants is not None:
        counts = {t: counts.get(t, 0) for t in sorted(key.tenants)}
    return service(request).metrics.text({"profiles": counts}, requests=key.tenants is None)
