"""What a route needs from its request: the app's `Service`, a fresh DuckDB cursor, and `need(scope)`, the
dependency that checks the request's API key (`X-API-Key: …` or `Authorization: Bearer …`) and returns its record:
401 without a valid one, 403 when its scope is too small, 429 (with `Retry-After`) when the key is over its request
rate or its client address has failed too many key attempts."""
from __future__ import annotations

import duckdb
from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ..errors import HuaxiangError
from ..profile.render import no_profile
from .keys import Key
from .service import Service

# declared in the OpenAPI document as the two ways to present a key
API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key (`huaxiang keys create`)")
BEARER = HTTPBearer(auto_error=False, description="the same API key as a bearer token")


def service(request: Request) -> Service:
    return request.app.state.service


def cursor(request: Request) -> duckdb.DuckDBPyConnection:
    return service(request).cursor()


def address(request: Request) -> str:
    return request.client.host if request.client else "?"


def too_many(seconds: int, why: str) -> HTTPException:
    return HTTPException(429, f"{why}: try again in {seconds} s", headers={"Retry-After": str(seconds)})


def admit(request: Request, key: str | None, found: Key | None) -> Key | None:
    """The limits every key check applies: failed attempts per client address, then the key's request rate.
    Returns the key record (None: no valid key; the attempt is counted when one was given)."""
    svc, addr = service(request), address(request)
    wait = svc.failures.wait(addr)
    if wait:
        raise too_many(wait, "too many failed key attempts from this address")
    if found is None:
        if key:
            svc.failures.failed(addr)
        return None
    wait = svc.key_rate.wait(found.id)
    if wait:
        raise too_many(wait, f"key {found.id} is over its request rate ({svc.settings.key_rate:g}/s)")
    return found


def need(scope: str):
    """The dependency of a route that needs `scope`; it gives the route the caller's `Key`."""
    async def check(request: Request, header: str | None = Security(API_KEY),
                    bearer: HTTPAuthorizationCredentials | None = Security(BEARER)) -> Key:
        given = header if header is not None else (bearer.credentials if bearer else None)
        found = admit(request, given, service(request).key_for(given))
        if found is None:
            raise HTTPException(401, "a valid API key is required (header X-API-Key or Authorization: Bearer)",
                                headers={"WWW-Authenticate": "Bearer"})
        if not found.allows(scope):
            raise HTTPException(403, f"this key's scope is {found.scope!r}; this route needs {scope!r}")
        return found
    return Depends(check)


def own_user(key: Key, user_id: str) -> None:
    """A user of a tenant the key does not see is answered as unknown (404), never as forbidden: a key must not
    learn whether another tenant's user exists."""
    if not key.sees(user_id):
        raise no_profile(user_id)


def key_search_tenant(key: Key, tenant: str | None, user_id: str | None) -> str | None:
    """The one tenant a search runs in, as far as the key decides it: the user's, else `tenant`, else the key's only
    tenant (None: left to the search, which takes the catalogue's only tenant or asks for one)."""
    if user_id is not None:
        own_user(key, user_id)
        return tenant
    if tenant is not None:
        if key.tenants is not None and tenant not in key.tenants:
            raise HuaxiangError(f"unknown tenant {tenant!r}")
        return tenant
    if key.tenants is not None and len(key.tenants) == 1:
        return next(iter(key.tenants))
    if key.tenants is not None:
        raise HuaxiangError(f"this key sees several tenants ({', '.join(sorted(key.tenants))}): name one (tenant=…)")
    return None
