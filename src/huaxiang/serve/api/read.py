"""The read-scope routes: a user's profile and recommendations, item search, the segment report."""
from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from ...profile.render import no_profile
from ...profile.segment_report import MAX_EPSILON, MIN_EPSILON, segment_report
from ..deps import cursor, need, service

router = APIRouter()


@router.get("/v1/users/{user_id}/profile", dependencies=[need("read")], response_class=Response,
            responses={200: {"content": {"application/json": {}}, "description": "the user's profile record"}})
async def profile(request: Request, user_id: str) -> Response:
    docs = service(request).docs
    doc = docs.get(user_id) or await run_in_threadpool(docs.fetch, user_id)  # (a held one: no hand-off)
    if doc is None:
        raise no_profile(user_id)
    return Response(doc, media_type="application/json")


@router.get("/v1/users/{user_id}/recommendations", dependencies=[need("read")])
async def recommendations(request: Request, user_id: str, k: int = Query(10, ge=1, le=200),
                          explain: bool = True) -> JSONResponse:
    # on the event loop: a warm call is ~0.5 ms of work, less than a hand-off to the thread pool costs
    from ...recommend.top_k import recommend
    return JSONResponse(recommend(cursor(request), service(request).recommender(), user_id, k, explain))


@router.get("/v1/search", dependencies=[need("read")])
def search(request: Request, q: str = Query(..., min_length=1, max_length=500),
           user_id: str | None = Query(None, max_length=256), k: int = Query(10, ge=1, le=200)) -> dict:
    from ...recommend.search import search_store
    rec = service(request).recommender() if user_id else None
    return search_store(cursor(request), q, user_id, k, None, rec)


@router.get("/v1/segments", dependencies=[need("read")])
def segments(request: Request, epsilon: float | None = Query(None, ge=MIN_EPSILON, le=MAX_EPSILON,
                                                             description="differential-privacy budget"),
             clv_cap: float = Query(1_000.0, gt=0, description="with epsilon: per-user CLV bound")) -> dict:
    return segment_report(cursor(request), epsilon, clv_cap)
