"""The service's ASGI middleware: 413 for a declared body over the limit, and every request's status and time into
the metrics."""
from __future__ import annotations

import time

from fastapi.responses import JSONResponse

from .metrics import Metrics
from .service import ServeSettings


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


def too_large(size: str, settings: ServeSettings) -> str:
    return f"payload of {size} bytes is over the limit of {settings.max_body_bytes:,} bytes"
