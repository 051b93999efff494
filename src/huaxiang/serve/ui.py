"""The routes of the web pages under /ui (their HTML is rendered by `pages.py`): sign-in and sign-out, the
static files, the user finder (and its suggestions), a user's profile page with item search, the segments page.
None of them is in the OpenAPI document.

The pages take the same API keys as the JSON routes (read scope), with the same tenants: in a header, or through
the sign-in form, which checks the key and sets a cookie holding a session token — never the key — that expires
after `session_hours` (HttpOnly, SameSite=Strict) and ends at sign-out or when the key is revoked. Sign-in and
sign-out accept only a form posted from these pages (the browser's Origin, or else Referer, must be this host):
another site cannot sign a browser in or out. Without a valid key a page answers 401 with the sign-in form.
"""
from __future__ import annotations

import json
import time
from html import escape
from importlib.resources import files
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from ..errors import HuaxiangError
from ..privacy import id_key, pseudonym
from .deps import admit, service
from .keys import Key, header_key, key_hash
from .pages import (experiment_html, experiments_html, note, page, profile_html, segments_html, signin_html, table,
                    user_link)

COOKIE = "huaxiang_session"
STATIC = {"page.css": "text/css; charset=utf-8", "page.js": "text/javascript; charset=utf-8",
          "icon.svg": "image/svg+xml"}

router = APIRouter()  # (every scope may read the pages)


class SignIn(Exception):
    """A page was asked for without a valid key: answered with the sign-in form (401)."""

    def __init__(self, next_url: str, message: str = ""):
        self.next_url, self.message = next_url, message


async def sign_in(request: Request, exc: SignIn):
    """The exception handler for `SignIn`."""
    resp = page("Sign in", signin_html(safe_next(exc.next_url), exc.message), signed_in=False, status=401)
    resp.headers["WWW-Authenticate"] = 'Bearer realm="huaxiang"'
    return resp


def safe_next(url: str) -> str:
    """Where to go after signing in: a page of this UI only (never another site)."""
    return url if url.startswith("/ui") and not url.startswith("//") and "\\" not in url else "/ui"


def same_origin(request: Request) -> None:
    """403 unless the request comes from a page of this host (its Origin header, else its Referer)."""
    source = request.headers.get("origin") or request.headers.get("referer")
    host = request.headers.get("host", "")
    if not source or source == "null" or urlsplit(source).netloc != host:
        raise HTTPException(403, "sign-in and sign-out take forms posted from this site's pages only")


def signed_in(request: Request) -> Key:
    """The key behind the request: its header's, or its session's; else the sign-in form."""
    svc, given = service(request), header_key(request)
    found = admit(request, given, svc.key_for(given)) if given is not None else \
        admit(request, None, svc.key_by_hash(svc.sessions.key_hash(request.cookies.get(COOKIE))))
    if found is None:
        path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path  # as asked: still quoted
        target = path + (f"?{request.url.query}" if request.url.query else "")
        raise SignIn(target, "A valid API key is needed to see this page." if given is None and COOKIE not in
                     request.cookies else "That key is not valid (revoked, expired or mistyped), or the session "
                     "has ended.")
    return found


@router.get("/ui/static/{name}", include_in_schema=False)
def static(name: str) -> Response:
    if name not in STATIC:
        raise HTTPException(404, f"no static file {name!r}")
    return Response((files("huaxiang") / "serve" / "static" / name).read_bytes(), media_type=STATIC[name],
                    headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"})


@router.post("/ui/signin", include_in_schema=False)
async def signin(request: Request) -> Response:
    same_origin(request)
    body = await request.body()  # (the guard has counted it: at most max_body_bytes)
    form = parse_qs(body[:4096].decode("utf-8", "replace"))
    key, target = (form.get("key") or [""])[0].strip(), safe_next((form.get("next") or ["/ui"])[0])
    svc = service(request)
    if admit(request, key or None, svc.key_for(key)) is None:
        raise SignIn(target, "That key is not valid (revoked, expired or mistyped).")
    resp = RedirectResponse(target, 303)
    resp.set_cookie(COOKIE, svc.sessions.start(key_hash(key)), max_age=int(svc.settings.session_hours * 3600),
                    httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/ui")
    return resp


@router.post("/ui/signout", include_in_schema=False)
def signout(request: Request) -> Response:
    same_origin(request)
    service(request).sessions.end(request.cookies.get(COOKIE))
    resp = RedirectResponse("/ui/signin", 303)
    resp.delete_cookie(COOKIE, path="/ui")
    return resp


@router.get("/ui/signin", include_in_schema=False)
def signin_form(next: str = "/ui") -> HTMLResponse:
    return page("Sign in", signin_html(safe_next(next), ""), signed_in=False)


@router.get("/ui", include_in_schema=False)
def home(request: Request) -> Response:
    signed_in(request)
    return RedirectResponse("/ui/segments", 303)


def ids_for(q: str) -> list[str]:
    """`q` as an id, and its pseudonym when ids are pseudonymised (the platform's raw id finds its user)."""
    key = id_key()
    return [q, pseudonym(q, key)] if key else [q]


def find_users(request: Request, key: Key, q: str, limit: int) -> list[tuple]:
    """Users whose id is `q` (or its pseudonym) or contains it, among the tenants the key sees."""
    return service(request).find_users(q, ids_for(q), key.tenants, limit)


@router.get("/ui/users", include_in_schema=False)
def users(request: Request, q: str = Query("", max_length=256)) -> Response:
    key = signed_in(request)
    q = q.strip()
    found = find_users(request, key, q, 50) if q else []
    if found and found[0][0] in ids_for(q):
        return RedirectResponse(f"/ui/users/{quote(found[0][0], safe='')}", 303)
    rows = [[user_link(u), escape(seg or "–"), f"{n:,}"] for u, seg, n in found]
    body = (f"<h1>Users matching “{escape(q)}”</h1>" + (table(["user", "segment", "events"], rows, {2})
            if rows else note("No user id contains that text." if q else "Type part of a user id above.")))
    return page("Find a user", body, q)


@router.get("/ui/users.json", include_in_schema=False)
def suggest(request: Request, q: str = Query("", max_length=256)) -> JSONResponse:
    key = signed_in(request)
    return JSONResponse([u for u, _, _ in find_users(request, key, q.strip(), 10)] if q.strip() else [])


def profile_record(request: Request, user_id: str) -> dict | None:
    """A user's profile record (None: no such user)."""
    doc = service(request).fetch_doc(user_id)
    return json.loads(doc) if doc is not None else None


def shown(svc, user_id: str, surface: str, fn, *args) -> dict:
    """`fn(*args)` (a recommendation or a search) with a `request_id`, its items queued as exposures."""
    started = time.perf_counter()
    return svc.exposed(user_id, surface, fn(*args), started)


@router.get("/ui/users/{user_id:path}", include_in_schema=False)  # (ids may hold a slash)
def profile_page(request: Request, user_id: str, q: str = Query("", max_length=500)) -> Response:
    key = signed_in(request)
    r = profile_record(request, user_id) if key.sees(user_id) else None  # another tenant's: as if unknown
    if r is None:
        return page("No such user", f"<h1>No profile for “{escape(user_id)}”</h1>"
                    + note("Ids are case-sensitive; namespaced ids look like taobao:1. Try the finder above."),
                    status=404)
    svc, recs, rec_note = service(request), None, ""
    try:
        recs = shown(svc, user_id, "page:recommendations", svc.recommend, user_id, 10, True)
    except HTTPException as exc:
        rec_note = str(exc.detail)
    except HuaxiangError as exc:
        rec_note = str(exc)
    found = None
    if q.strip():
        try:
            found = shown(svc, user_id, "page:search", svc.search, q.strip(), user_id, 10, None)
        except (HTTPException, HuaxiangError) as exc:
            rec_note = rec_note or str(getattr(exc, "detail", exc))
    grid = svc.week(user_id, r.get("habit_utc_offset") or 0)
    return page(f"User {user_id}", profile_html(r, grid, recs, rec_note, q.strip(), found))


@router.get("/ui/segments", include_in_schema=False)
def segments_page(request: Request) -> Response:
    key = signed_in(request)
    return page("Segments", segments_html(service(request).segments(None, 1_000.0, key.tenants)))


def experiments_of(request: Request):
    svc = service(request)
    if not hasattr(svc, "all_experiments"):
        raise HTTPException(404, "experiments are started and reported by the server that holds the store "
                                 "(`huaxiang serve --db`), not by online workers")
    return svc


@router.get("/ui/experiments", include_in_schema=False)
def experiments_page(request: Request) -> Response:
    key = signed_in(request)
    return page("Experiments", experiments_html([e.listing() for e in experiments_of(request).all_experiments(
        key.tenants)]))


@router.get("/ui/experiments/{name}", include_in_schema=False)
def experiment_page(request: Request, name: str) -> Response:
    key = signed_in(request)
    svc = experiments_of(request)
    if svc.visible_experiment(name, key.tenants) is None:
        return page("No such experiment", f"<h1>No experiment “{escape(name)}”</h1>"
                    + note("See the list of experiments."), status=404)
    return page(f"Experiment {name}", experiment_html(svc.experiment_report(name)))
