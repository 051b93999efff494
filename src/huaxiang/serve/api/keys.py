"""Key management while the service runs (admin scope): POST /v1/keys makes a key, GET /v1/keys lists them,
DELETE /v1/keys/{id} revokes one — at once for this process; other processes re-read the key table within
`key_reload_seconds`. An admin key bound to tenants manages only keys bound to some of its own tenants."""
from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from ...errors import HuaxiangError
from ..deps import need, service
from ..keys import SCOPES, Key, check_tenants

router = APIRouter()


class NewKey(BaseModel):
    scope: str = Field(description=f"one of {', '.join(SCOPES)}")
    tenants: list[str] | None = Field(None, max_length=1000, description="the tenants it may see (none: all)")
    label: str = Field("", max_length=200, description="a note on who holds it")
    expires_in_s: float | None = Field(None, gt=0, le=10 * 365 * 86400, description="its lifetime in seconds")


@router.post("/v1/keys", status_code=201)
def make(request: Request, new: NewKey, key: Key = need("admin")) -> dict:
    tenants = check_tenants(new.tenants)
    if not key.covers(tenants):
        raise HTTPException(403, "a key bound to tenants makes keys for some of its own tenants only")
    made, secret = service(request).make_key(new.scope, new.label, sorted(tenants) if tenants else None,
                                             timedelta(seconds=new.expires_in_s) if new.expires_in_s else None)
    return {**made.listing(), "key": secret}


@router.get("/v1/keys")
def listing(request: Request, key: Key = need("admin")) -> list[dict]:
    return [k.listing() for k in service(request).all_keys() if key.covers(k.tenants)]


@router.delete("/v1/keys/{key_id}")
def revoke(request: Request, key_id: str, key: Key = need("admin")) -> dict:
    svc = service(request)
    known = {k.id: k for k in svc.all_keys()}
    if key_id not in known or not key.covers(known[key_id].tenants):
        raise HuaxiangError(f"unknown key id {key_id!r}")
    return svc.revoke_key(key_id).listing()
