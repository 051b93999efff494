"""The read-scope routes: a user's profile and recommendations, item search, the segment report. A key bound to
tenants sees only their users (another tenant's user is 404, as if unknown) and searches only their items.

What may take long runs in worker threads, `work_threads` at a time, so that it never holds up the event loop
(profile reads, health checks): search, and a recommendation that reads the store. A recommendation for a user
whose history the recommender holds in memory is computed on the loop: it reads nothing and its work is bounded
by the recommender's `history_length` (~1 ms), less than the hand-off to a thread costs under load.

A recommendation or search answer carries a `request_id`, and its items are queued as exposures (`Base.exposed`):
what was shown, to whom, where, by which model, how fast — written to the store off the request path."""
from __future__ import annotations

import time

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from ...profile.render import no_profile
from ...profile.segment_report import MAX_EPSILON, MIN_EPSILON
from ..deps import key_search_tenant, need, own_user, service
from ..keys import Key

router = APIRouter()


@router.get("/v1/users/{user_id:path}/profile", response_class=Response,
            responses={200: {"content": {"application/json": {}}, "description": "the user's profile record"}})
async def profile(request: Request, user_id: str, key: Key = need("read")) -> Response:
    own_user(key, user_id)
    doc = await service(request).profile_doc(user_id)
    if doc is None:
        raise no_profile(user_id)
    return Response(doc, media_type="application/json")


@router.get("/v1/users/{user_id:path}/recommendations")
async def recommendations(request: Request, user_id: str, k: int = Query(10, ge=1, le=200), explain: bool = True,
                          key: Key = need("read")) -> JSONResponse:
    own_user(key, user_id)
    svc, started = service(request), time.perf_counter()
    answer = await svc.work(svc.recommend, user_id, k, explain)
    return JSONResponse(svc.exposed(user_id, "recommendations", answer, started))


@router.get("/v1/search")
async def search(request: Request, q: str = Query(..., min_length=1, max_length=500),
                 user_id: str | None = Query(None, max_length=256), k: int = Query(10, ge=1, le=200),
                 tenant: str | None = Query(None, max_length=100, description="the tenant whose items to search "
                                            "(default: the user's, or the key's only tenant)"),
                 key: Key = need("read")) -> JSONResponse:
    svc, tenant = service(request), key_search_tenant(key, tenant, user_id)
    started = time.perf_counter()
    answer = await svc.work(svc.search, q, user_id, k, tenant)
    return JSONResponse(svc.exposed(user_id, "search", answer, started))


@router.get("/v1/segments")
def segments(request: Request, epsilon: float | None = Query(None, ge=MIN_EPSILON, le=MAX_EPSILON,
                                                             description="differential-privacy budget"),
             clv_cap: float = Query(1_000.0, gt=0, description="with epsilon: per-user CLV bound"),
             key: Key = need("read")) -> dict:
    return service(request).segments(epsilon, clv_cap, key.tenants)
