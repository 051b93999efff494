"""What a route needs from its request: the app's `Service`, a fresh DuckDB cursor, and `need(scope)`, the
dependency that checks the request's API key (`X-API-Key: …` or `Authorization: Bearer …`): 401 without a valid
one, 403 when its scope is too small."""
from __future__ import annotations

import duckdb
from fastapi import Depends, HTTPException, Request

from .keys import allows, header_key
from .service import Service


def service(request: Request) -> Service:
    return request.app.state.service


def cursor(request: Request) -> duckdb.DuckDBPyConnection:
    return service(request).cursor()


def need(scope: str):
    async def check(request: Request) -> None:
        have = service(request).scope_for(header_key(request))
        if have is None:
            raise HTTPException(401, "a valid API key is required (header X-API-Key or Authorization: Bearer)",
                                headers={"WWW-Authenticate": "Bearer"})
        if not allows(have, scope):
            raise HTTPException(403, f"this key's scope is {have!r}; this route needs {scope!r}")
    return Depends(check)
