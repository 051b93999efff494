"""What stands between the network and the routes:

- `Guard`, the ASGI middleware: a request body is counted as it streams in and refused with 413 at the limit (a
  declared `Content-Length` over it at once; a chunked body when its bytes pass it — never read whole first); a
  body that pauses for over `body_seconds`, or takes over 6 times that in all, gets 408; a client that hangs up
  is counted as status 499 (not an error of ours, no traceback); every request's status and time go into the
  metrics.
- `SlowHeaders`, the HTTP protocol `huaxiang serve` runs: a connection whose request headers have not all arrived
  within `header_seconds` of its start (or of the previous response) is closed.
"""
from __future__ import annotations

import asyncio
import time

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .metrics import Metrics
from .service import ServeSettings

CLOSE = {"Connection": "close"}  # after a refused body: what is left of it is never read
BODY_GAPS = 6  # a whole body must arrive within this many times `body_seconds`


def too_large(size: str, settings: ServeSettings) -> str:
    return f"payload of {size} bytes is over the limit of {settings.max_body_bytes:,} bytes"


class Guard:
    def __init__(self, app, settings: ServeSettings, metrics: Metrics):
        self.app, self.settings, self.metrics = app, settings, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500
        limit, seen, done = self.settings.max_body_bytes, 0, False

        async def sent(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        async def counted():
            nonlocal seen, done
            if done:  # the body is in: what follows is the disconnect notice, however late
                return await receive()
            gap = self.settings.body_seconds
            wait = min(gap, started + BODY_GAPS * gap - time.perf_counter())
            try:
                message = await asyncio.wait_for(receive(), max(wait, 0.001))
            except asyncio.TimeoutError:
                raise HTTPException(408, f"the request body was too slow (a pause over {gap:g} s, or over "
                                         f"{BODY_GAPS * gap:g} s in all)", headers=CLOSE) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                done = not message.get("more_body", False)
                if seen > limit:
                    raise HTTPException(413, too_large(f"over {limit:,}", self.settings), headers=CLOSE)
            return message

        try:
            size = dict(scope["headers"]).get(b"content-length")
            if size is not None and (not size.isdigit() or int(size) > limit):
                refusal = JSONResponse({"detail": too_large(size.decode("latin-1"), self.settings)}, 413, CLOSE)
                await refusal(scope, receive, sent)
            else:
                await self.app(scope, counted, sent)
        except ClientDisconnect:
            status = 499  # the client went away before its answer: nothing to send, nothing of ours failed
        finally:
            route = getattr(scope.get("route"), "path_format", "unmatched")  # ({user_id}, not {user_id:path})
            self.metrics.observe(route, status, time.perf_counter() - started)


class SlowHeaders(HttpToolsProtocol):
    """uvicorn's HTTP protocol with a deadline for request headers (`header_seconds` in the app's settings)."""
    header_seconds = 10.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.deadline = None

    def _arm(self) -> None:
        self._disarm()
        self.deadline = self.loop.call_later(self.header_seconds, self._expire)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _expire(self) -> None:
        self.deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.deadline is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

