"""The service as an attacker meets it: one test per finding of the security review (issue 19), each against a live
`huaxiang serve` over a store shared by three tenants — taobao: (with one user of 75,000 events), beauty: and the
default tenant of ids without a namespace."""
import json
import shutil
import socket
import statistics
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest

from conftest import DEMO, SERVED, TAOBAO, call, cli, start_server
from test_cli import run

PLAIN_ITEMS = [(f"p{i}", title) for i, title in enumerate(
    ["red lipstick matte", "red lipstick gloss", "rose lip balm", "face cream", "night cream", "hand cream",
     "shampoo for dry hair", "conditioner", "hair oil", "nail polish red"], 1)]
HEAVY = "taobao:999999999"  # 75,000 events


def write_plain(d):
    """A tenant without namespace: ten titled items, five users."""
    (d / "items.csv").write_text("item_id,title\n" + "".join(f"{i},{t}\n" for i, t in PLAIN_ITEMS))
    rows = [(f"u{u}", f"p{1 + (u * 3 + k) % 10}", "view", f"2017-12-0{1 + k} 10:00:00") for u in range(1, 6)
            for k in range(4)]
    (d / "events.csv").write_text("user_id,item_id,type,ts\n" + "".join(",".join(r) + "\n" for r in rows))


def write_heavy(d):
    """One taobao shopper with 75,000 views over 2,000 of the slice's items."""
    import gzip
    with gzip.open(TAOBAO, "rt") as f:
        items = list(dict.fromkeys(line.split(",")[1] for line in list(f)[1:]))[:2000]
    start = int(datetime(2017, 11, 25, tzinfo=timezone.utc).timestamp())
    (d / "heavy.csv").write_text("User_id,item_id,category_id,behavior_type,timestamp\n" + "".join(
        f"999999999,{items[n % len(items)]},1,pv,{start + n * 9}\n" for n in range(75_000)))


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """(store, keys by name) — the store with three tenants, and keys for all of them and for one."""
    d = tmp_path_factory.mktemp("security")
    db = str(d / "s.duckdb")
    write_plain(d)
    write_heavy(d)
    cli("ingest", str(TAOBAO), "--format", "taobao", "--namespace", "taobao", "--db", db)
    cli("ingest", str(d / "heavy.csv"), "--format", "taobao", "--namespace", "taobao", "--db", db)
    cli("ingest", str(DEMO / "Beauty_head2000.txt.gz"), "--format", "s3rec", "--namespace", "beauty", "--db", db)
    for name in ("items", "events"):
        cli("ingest", str(d / f"{name}.csv"), "--format", "csv", "--table", name, "--db", db)
    cli("build", "--db", db)
    cli("train", "recommender", "--model", "itemknn", "--db", db)

    def key(scope, *tenants):
        args = [a for t in tenants for a in ("--tenant", t)]
        return cli("keys", "create", "--scope", scope, *args, "--db", db).strip().splitlines()[-1]
    keys = {"read": key("read"), "write": key("write"), "admin": key("admin"),
            "read_taobao": key("read", "taobao"), "write_taobao": key("write", "taobao"),
            "admin_taobao": key("admin", "taobao"), "read_beauty": key("read", "beauty")}
    return db, keys


@pytest.fixture(scope="module")
def served(shared, tmp_path_factory):
    """The shared store served (a copy: other tests start their own servers on other copies)."""
    db, keys = shared
    copy = copy_store(db, tmp_path_factory.mktemp("served"))
    with start_server(copy, "--max-body-bytes", "1000000") as base:
        yield base, keys


def copy_store(db: str, to) -> str:
    """A copy of the store and its trained models (kept beside it)."""
    copy = str(to / "s.duckdb")
    shutil.copy(db, copy)
    shutil.copytree(db + ".models", copy + ".models")
    return copy


def own_copy(shared, tmp_path) -> str:
    return copy_store(shared[0], tmp_path)


def events(*rows, **common):
    return {"events": [{**common, **r} for r in rows]}


def now_iso(delta=timedelta()) -> str:
    return (datetime.now(timezone.utc) + delta).strftime("%Y-%m-%dT%H:%M:%S")


# ---- 1. bodies are counted as they stream in ---------------------------------------------------------------------

def chunked_post(base: str, path: str, mib: int, headers: dict) -> int:
    """POSTs `mib` MiB as a chunked body (no Content-Length), stopping when the server answers; its status."""
    host, port = urllib.parse.urlsplit(base).netloc.split(":")
    s = socket.create_connection((host, int(port)), timeout=60)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nTransfer-Encoding: chunked\r\n{head}\r\n".encode())
    frame = b"100000\r\n" + b"k" * 0x100000 + b"\r\n"
    answer = b""
    try:
        for _ in range(mib):
            s.sendall(frame)
            s.setblocking(False)
            try:
                answer += s.recv(65536)
            except BlockingIOError:
                pass
            s.setblocking(True)
            if answer:
                break
    except OSError:
        pass  # the server closed the connection after answering
    try:
        s.settimeout(30)
        while b"\r\n" not in answer:
            more = s.recv(65536)
            if not more:
                break
            answer += more
    except OSError:
        pass
    s.close()
    return int(answer.split(b" ")[1]) if answer.startswith(b"HTTP/1.1") else 0


def peak_rss_mb(base: str) -> float:
    pid = SERVED[base][0].pid
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def test_chunked_bodies_are_refused_as_they_stream_in(served):
    base, keys = served
    origin = {"Origin": base}
    before = peak_rss_mb(base)
    jobs = [("/ui/signin", {**origin, "Content-Type": "application/x-www-form-urlencoded"})] * 8 + \
        [("/v1/events", {"X-API-Key": keys["write"], "Content-Type": "application/json"})] * 8
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda job: chunked_post(base, job[0], 200, job[1]), jobs))
    assert statuses == [413] * 16
    assert peak_rss_mb(base) - before < 50
    assert call(base, "GET", "/healthz")[0] == 200


# ---- 2. a future-dated event does not re-age a tenant ------------------------------------------------------------

def test_a_future_event_is_quarantined_and_the_tenant_keeps_its_clock(served):
    base, keys = served
    before = call(base, "GET", "/v1/users/taobao:1/profile", key=keys["read"])[1]
    status, body = call(base, "POST", "/v1/events", key=keys["write"], body=events(
        {"event_id": "future-1", "user_id": "taobao:1", "item_id": "taobao:2268318", "type": "view",
         "ts": now_iso(timedelta(days=1))}))
    assert status == 200 and body["added"] == 0 and body["quarantined"] == 1
    assert "future" in body["rejected"][0]["reason"] and body["rejected"][0]["field"] == "ts"
    after = call(base, "GET", "/v1/users/taobao:1/profile", key=keys["read"])[1]
    assert after["idle_days"] == before["idle_days"] and after["segment"] == before["segment"]


# ---- 3. tenants cannot see each other ------------------------------------------------------------------------------

def test_a_key_bound_to_a_tenant_sees_only_that_tenant(served):
    base, keys = served
    mine, theirs = keys["read_taobao"], keys["read_beauty"]
    assert call(base, "GET", "/v1/users/taobao:1/profile", key=mine)[0] == 200
    for path in ("/v1/users/taobao:1/profile", "/v1/users/taobao:1/recommendations",
                 "/v1/search?q=cream&user_id=taobao:1"):
        status, body = call(base, "GET", path, key=theirs)
        assert status == 404 and "unknown user" in body["detail"], path  # as if unknown: existence not confirmed
    found = call(base, "GET", "/v1/search?q=cream", key=theirs)[1]["items"]
    assert found and all(i["item_id"].startswith("beauty:") for i in found)
    assert call(base, "GET", "/v1/search?q=cream&tenant=", key=theirs)[0] == 404
    seg = call(base, "GET", "/v1/segments", key=mine)[1]
    assert [t["tenant"] for t in seg["tenants"]] == ["taobao"]
    metrics = call(base, "GET", "/metrics", key=mine)[1]
    assert 'huaxiang_profiles{tenant="taobao"}' in metrics and "beauty" not in metrics
    assert "huaxiang_requests_total" not in metrics  # the platform's traffic is the platform's
    everything = call(base, "GET", "/metrics", key=keys["read"])[1]
    assert 'tenant="beauty"' in everything and "huaxiang_requests_total" in everything
    for q in ("1", "beauty"):  # the finder and its suggestions
        status, page = call(base, "GET", f"/ui/users?q={q}", key=mine)
        assert status == 200 and "beauty:" not in page
        assert all(u.startswith("taobao:") for u in call(base, "GET", f"/ui/users.json?q={q}", key=mine)[1])
    assert call(base, "GET", "/ui/users/beauty:1", key=mine)[0] == 404


def test_a_key_bound_to_a_tenant_writes_only_that_tenant(served):
    base, keys = served
    status, body = call(base, "POST", "/v1/events", key=keys["write_taobao"], body=events(
        {"event_id": "t3-own", "user_id": "taobao:t3", "item_id": "taobao:2268318"},
        {"event_id": "t3-other", "user_id": "beauty:t3", "item_id": "beauty:1"}, type="view",
        ts="2017-12-03T10:00:00"))
    assert status == 200 and body["added"] == 1 and body["refused"] == 1
    assert body["rejected"] == [{"index": 1, "field": "user_id",
                                 "reason": "tenant 'beauty' is not one of this key's tenants"}]
    assert call(base, "GET", "/v1/users/beauty:t3/profile", key=keys["read"])[0] == 404
    status, body = call(base, "POST", "/v1/events", key=keys["write"], body=events(
        {"event_id": "t3-mixed", "user_id": "taobao:t3", "item_id": "beauty:1", "type": "view",
         "ts": "2017-12-03T10:00:00"}))
    assert body["added"] == 0 and body["rejected"][0]["field"] == "item_id"  # tenants never mix, for any key


def tenants_of(items):
    return {i["item_id"].split(":")[0] if ":" in i["item_id"] else "" for i in items}


def test_recommendations_and_search_never_cross_tenants(served):
    base, keys = served
    key = keys["write"]
    call(base, "POST", "/v1/events", key=key, body=events(
        {"event_id": "x-tb", "user_id": "taobao:searcher", "type": "search", "query": "cream"},
        {"event_id": "x-plain", "user_id": "newbie", "type": "search", "query": "cream"},
        {"event_id": "x-new", "user_id": "newshop:1", "type": "search", "query": "cream"},
        ts="2017-12-03T10:00:00"))
    for user, tenant in (("taobao:searcher", "taobao"), ("taobao:1", "taobao"), ("beauty:1", "beauty"),
                         ("u1", ""), ("newbie", ""), ("newshop:1", "newshop"), ("nobody-at-all", "")):
        status, recs = call(base, "GET", f"/v1/users/{user}/recommendations?k=20", key=key)
        assert status == 200 and tenants_of(recs["items"]) <= {tenant}, (user, recs)
        status, found = call(base, "GET", f"/v1/search?q=cream&user_id={user}", key=key)
        assert status == 200 and tenants_of(found["items"]) <= {tenant}, (user, found)
    assert tenants_of(call(base, "GET", "/v1/users/u1/recommendations", key=key)[1]["items"]) == {""}
    assert call(base, "GET", "/v1/users/newshop:1/recommendations", key=key)[1]["items"] == []
    status, body = call(base, "GET", "/v1/search?q=cream", key=key)  # several tenants, none named
    assert status == 400 and "tenant" in body["detail"]
    assert tenants_of(call(base, "GET", "/v1/search?q=cream&tenant=", key=key)[1]["items"]) == {""}


# ---- 4. deletion matches the exact user id -------------------------------------------------------------------------

def test_deletion_matches_the_exact_user_id(served):
    base, keys = served
    bad = {"type": "teleport", "item_id": "taobao:2268318", "ts": "2017-12-03T10:00:00"}
    call(base, "POST", "/v1/events", key=keys["write"], body=events(
        {"event_id": "d-77", "user_id": "taobao:77", **bad}, {"event_id": "d-770", "user_id": "taobao:770", **bad},
        {"event_id": "d-7701", "user_id": "taobao:7701", **bad},
        {"event_id": "d-ok", "user_id": "taobao:77", **bad, "type": "view"}))
    status, body = call(base, "DELETE", "/v1/users/2", key=keys["admin"])
    assert status == 404 and "unknown user" in body["detail"]
    status, body = call(base, "DELETE", "/v1/users/taobao:77", key=keys["admin"])
    assert status == 200 and body["removed"]["quarantine"] == 1
    status, body = call(base, "DELETE", "/v1/users/taobao:770?suppress=false", key=keys["admin"])
    assert status == 200 and body["removed"] == {"quarantine": 1}  # its own rejected row, still there


# ---- 5. a crash between an event batch's commit and its refresh ---------------------------------------------------

def test_profiles_missing_after_a_crash_are_made(shared, tmp_path):
    db = own_copy(shared, tmp_path)
    (tmp_path / "late.csv").write_text("user_id,item_id,type,ts\n" + "".join(
        f"taobao:late,taobao:2268318,view,2017-12-0{d} 10:00:00\n" for d in range(1, 4)))
    # stored, never refreshed: what a crash right after the events' commit leaves
    cli("ingest", str(tmp_path / "late.csv"), "--format", "csv", "--db", db)
    keys = shared[1]
    with start_server(db) as base:
        for _ in range(100):  # made in the background at start-up
            status, profile = call(base, "GET", "/v1/users/taobao:late/profile", key=keys["read"])
            if status == 200:
                break
            time.sleep(0.1)
        assert status == 200 and profile["n_events"] == 3
        batch = events({"event_id": "late-4", "user_id": "taobao:late2", "item_id": "taobao:2268318",
                        "type": "view", "ts": "2017-12-03T11:00:00"})
        assert call(base, "POST", "/v1/events", key=keys["write"], body=batch)[1]["added"] == 1
        again = call(base, "POST", "/v1/events", key=keys["write"], body=batch)[1]  # the resend after a crash
        assert again["duplicates"] == 1 and again["profiles_refreshed"] == 1


# ---- 6. a deletion racing a batch for the same user --------------------------------------------------------------

def test_delete_racing_post_neither_fails_nor_leaves_half_a_user(served):
    base, keys = served
    user, statuses = "taobao:racer", []

    def post(n):
        batch = events(*[{"event_id": f"race-{n}-{i}", "item_id": "taobao:2268318", "type": "view",
                          "ts": f"2017-12-03T10:{i // 60:02d}:{i % 60:02d}"} for i in range(300)], user_id=user)
        statuses.append(call(base, "POST", "/v1/events", key=keys["write"], body=batch)[0])

    def delete():
        statuses.append(call(base, "DELETE", f"/v1/users/{user}?suppress=false", key=keys["admin"])[0])
    threads = [threading.Thread(target=f, args=a) for n in range(6) for f, a in ((post, (n,)), (delete, ()))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(s in (200, 404) for s in statuses), statuses
    profile_status, profile = call(base, "GET", f"/v1/users/{user}/profile", key=keys["read"])
    deleted = call(base, "DELETE", f"/v1/users/{user}?suppress=false", key=keys["admin"])
    if profile_status == 200:  # events and profile agree: all of a batch, or none
        assert deleted[1]["removed"]["events"] == profile["n_events"] and profile["n_events"] % 300 == 0
    else:
        assert deleted[0] == 404 or "events" not in deleted[1]["removed"]


# ---- 7. heavy recommendation work stays off the event loop ---------------------------------------------------------

def test_heavy_recommendations_do_not_hold_up_other_requests(served):
    base, keys = served
    stop, rec_times = threading.Event(), []

    def hammer():
        while not stop.is_set():
            t = time.perf_counter()
            assert call(base, "GET", f"/v1/users/{HEAVY}/recommendations", key=keys["read"])[0] == 200
            rec_times.append(time.perf_counter() - t)
    workers = [threading.Thread(target=hammer) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        time.sleep(0.5)
        quick = []
        for _ in range(40):
            t = time.perf_counter()
            assert call(base, "GET", "/v1/users/taobao:1/profile", key=keys["read"])[0] == 200
            quick.append(time.perf_counter() - t)
    finally:
        stop.set()
        for w in workers:
            w.join()
    # a held profile is a dictionary lookup on the loop: it must not queue behind the heavy computations
    assert statistics.median(quick) < statistics.median(rec_times), (statistics.median(quick), statistics.median(rec_times))


# ---- 8. a forgotten user stays forgotten ---------------------------------------------------------------------------

def test_a_forgotten_user_does_not_come_back(served):
    base, keys = served
    batch = events({"event_id": "f-1", "user_id": "taobao:gone", "item_id": "taobao:2268318", "type": "view",
                    "ts": "2017-12-03T10:00:00"})
    assert call(base, "POST", "/v1/events", key=keys["write"], body=batch)[1]["added"] == 1
    assert call(base, "DELETE", "/v1/users/taobao:gone", key=keys["admin"])[0] == 200
    again = call(base, "POST", "/v1/events", key=keys["write"], body=batch)[1]
    assert again["added"] == 0 and again["suppressed"] == 1
    assert call(base, "GET", "/v1/users/taobao:gone/profile", key=keys["read"])[0] == 404


# ---- 9. ids holding a slash ----------------------------------------------------------------------------------------

def test_ids_with_a_slash_can_be_read_and_deleted(served):
    base, keys = served
    user = "taobao:a/b"
    call(base, "POST", "/v1/events", key=keys["write"], body=events(
        {"event_id": "slash-1", "user_id": user, "item_id": "taobao:2268318", "type": "view",
         "ts": "2017-12-03T10:00:00"}))
    quoted = urllib.parse.quote(user, safe="")
    for path in (f"/v1/users/{quoted}/profile", f"/v1/users/{user}/profile"):
        status, profile = call(base, "GET", path, key=keys["read"])
        assert status == 200 and profile["user_id"] == user
    assert call(base, "GET", f"/v1/users/{quoted}/recommendations", key=keys["read"])[0] == 200
    status, body = call(base, "DELETE", f"/v1/users/{quoted}", key=keys["admin"])
    assert status == 200 and body["user_id"] == user


# ---- 10. keys managed while serving; sessions, not keys, in cookies; rate limits ----------------------------------

def test_keys_are_managed_while_serving(served, shared):
    base, keys = served
    status, made = call(base, "POST", "/v1/keys", key=keys["admin"], body={"scope": "read", "tenants": ["beauty"]})
    assert status == 201 and made["key"].startswith("hx_") and made["tenants"] == ["beauty"]
    assert call(base, "GET", "/v1/users/beauty:1/profile", key=made["key"])[0] == 200
    listed = call(base, "GET", "/v1/keys", key=keys["admin"])[1]
    assert made["id"] in {k["id"] for k in listed} and all("key" not in k for k in listed)
    assert call(base, "GET", "/v1/keys", key=keys["read"])[0] == 403
    # an admin bound to taobao: neither another tenant's keys nor keys for every tenant
    assert call(base, "POST", "/v1/keys", key=keys["admin_taobao"], body={"scope": "read"})[0] == 403
    assert made["id"] not in {k["id"] for k in call(base, "GET", "/v1/keys", key=keys["admin_taobao"])[1]}
    assert call(base, "DELETE", f"/v1/keys/{made['id']}", key=keys["admin_taobao"])[0] == 404
    status, revoked = call(base, "DELETE", f"/v1/keys/{made['id']}", key=keys["admin"])
    assert status == 200 and revoked["revoked"] is True
    assert call(base, "GET", "/v1/users/beauty:1/profile", key=made["key"])[0] == 401  # at once
    short = call(base, "POST", "/v1/keys", key=keys["admin"], body={"scope": "read", "expires_in_s": 1})[1]
    assert call(base, "GET", "/healthz")[0] == 200 and short["expires_at"]
    time.sleep(1.2)
    assert call(base, "GET", "/v1/users/taobao:1/profile", key=short["key"])[0] == 401
    # the CLI while the server holds the store: a one-line error that points to the API
    proc = run("keys", "create", "--scope", "read", "--db", SERVED[base][1].with_name("s.duckdb").as_posix(),
               check=False)
    assert proc.returncode == 1 and "huaxiang serve" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def signin(base, key, origin=True):
    import http.client
    host = urllib.parse.urlsplit(base).netloc
    conn = http.client.HTTPConnection(host, timeout=30)
    conn.request("POST", "/ui/signin", urllib.parse.urlencode({"key": key, "next": "/ui/segments"}),
                 {"Content-Type": "application/x-www-form-urlencoded", **({"Origin": base} if origin else {})})
    resp = conn.getresponse()
    resp.read()
    return resp.status, resp.getheader("Set-Cookie") or ""


def test_the_pages_cookie_holds_an_expiring_session_not_the_key(served):
    base, keys = served
    made = call(base, "POST", "/v1/keys", key=keys["admin"], body={"scope": "read"})[1]
    status, cookie = signin(base, made["key"])
    assert status == 303 and made["key"] not in cookie and "huaxiang_session=hxs_" in cookie
    assert "Max-Age=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    session = cookie.split(";")[0]
    assert call(base, "GET", "/ui/segments", headers={"Cookie": session})[0] == 200
    call(base, "DELETE", f"/v1/keys/{made['id']}", key=keys["admin"])
    assert call(base, "GET", "/ui/segments", headers={"Cookie": session})[0] == 401  # revoked: the session ends


def test_failed_keys_and_busy_keys_get_429(shared, tmp_path):
    db = own_copy(shared, tmp_path)
    keys = shared[1]
    with start_server(db, "--failed-keys", "5", "--key-rate", "5") as base:
        answers = [call(base, "GET", "/v1/users/taobao:1/profile", key=keys["read"]) for _ in range(12)]
        busy = [a for a in answers if a[0] == 429]
        assert busy and "request rate" in busy[0][1]["detail"] and answers[0][0] == 200
        for n in range(5):
            assert call(base, "GET", "/v1/segments", key=f"hx_guess{n}")[0] == 401
        status, body = call(base, "GET", "/v1/segments", key="hx_guess6")
        assert status == 429 and "failed key attempts" in body["detail"]
        status, body = call(base, "GET", "/v1/segments", key=keys["admin"])  # even a good key, from there
        assert status == 429
        assert signin(base, keys["read"])[0] == 429


def test_retry_after_is_given(shared, tmp_path):
    import urllib.request
    db = own_copy(shared, tmp_path)
    with start_server(db, "--key-rate", "1") as base:
        codes = []
        for _ in range(4):
            req = urllib.request.Request(base + "/v1/segments", headers={"X-API-Key": shared[1]["read"]})
            try:
                urllib.request.urlopen(req, timeout=30).read()
                codes.append((200, None))
            except urllib.error.HTTPError as e:
                codes.append((e.code, e.headers.get("Retry-After")))
        assert (429, "1") in codes


# ---- 11-14. hostile event bodies ------------------------------------------------------------------------------------

def test_a_lone_surrogate_is_quarantined_and_the_rest_kept(served):
    base, keys = served
    body = ('{"events": [{"event_id": "sur-1", "user_id": "taobao:\\ud800", "item_id": "taobao:2268318", '
            '"type": "view", "ts": "2017-12-03T10:00:00"}, {"event_id": "sur-2", "user_id": "taobao:sur", '
            '"item_id": "taobao:2268318", "type": "view", "ts": "2017-12-03T10:00:00"}]}').encode()
    status, answer = call(base, "POST", "/v1/events", key=keys["write"], body=body)
    assert status == 200 and answer["added"] == 1 and answer["rejected"][0]["index"] == 0
    assert answer["rejected"][0]["field"] == "user_id"


def test_wrong_json_types_are_refused_not_coerced(served):
    base, keys = served
    wrong = [12345, True, ["a"], {"$ne": None}, "taobao:nul\u0000byte"]
    status, answer = call(base, "POST", "/v1/events", key=keys["write"], body=events(
        *[{"event_id": f"type-{n}", "user_id": u} for n, u in enumerate(wrong)],
        item_id="taobao:2268318", type="view", ts="2017-12-03T10:00:00"))
    assert status == 200 and answer["added"] == 0
    assert [r["index"] for r in answer["rejected"]] == [0, 1, 2, 3, 4]
    assert all(r["field"] == "user_id" for r in answer["rejected"])
    status, answer = call(base, "POST", "/v1/events", key=keys["write"], body=events(
        {"event_id": "type-price", "user_id": "taobao:typed", "item_id": "taobao:2268318", "type": "buy",
         "ts": "2017-12-03T10:00:00", "price": True}))
    assert answer["added"] == 0 and answer["rejected"][0]["field"] == "price"


def test_a_resent_event_id_with_other_content_is_a_conflict(served):
    base, keys = served
    first = {"event_id": "conflict-1", "user_id": "taobao:c", "item_id": "taobao:2268318", "type": "view",
             "ts": "2017-12-03T10:00:00"}
    assert call(base, "POST", "/v1/events", key=keys["write"], body=events(first))[1]["added"] == 1
    same = call(base, "POST", "/v1/events", key=keys["write"], body=events(first))[1]
    assert same["duplicates"] == 1 and same.get("conflicts", 0) == 0
    other = call(base, "POST", "/v1/events", key=keys["write"], body=events({**first, "type": "buy"}))[1]
    assert other["added"] == 0 and other["conflicts"] == 1 and "different content" in other["rejected"][0]["reason"]


def test_a_resent_bad_batch_does_not_double_the_quarantine(served):
    base, keys = served
    batch = events({"event_id": "q-bad", "type": "teleport"}, {"event_id": "q-ok", "type": "view"},
                   user_id="taobao:q14", item_id="taobao:2268318", ts="2017-12-03T10:00:00")
    for _ in range(3):
        assert call(base, "POST", "/v1/events", key=keys["write"], body=batch)[1]["quarantined"] == 1
    removed = call(base, "DELETE", "/v1/users/taobao:q14", key=keys["admin"])[1]["removed"]
    assert removed["quarantine"] == 1


# ---- 15-16. clients that hang up or dawdle --------------------------------------------------------------------------

def raw_connection(base):
    host, port = urllib.parse.urlsplit(base).netloc.split(":")
    return socket.create_connection((host, int(port)), timeout=30), f"{host}:{port}"


def test_a_client_hanging_up_is_not_a_server_error(served):
    base, keys = served
    for _ in range(3):
        s, host = raw_connection(base)
        s.sendall(f"POST /v1/events HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {keys['write']}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{{\"events\": [".encode())
        time.sleep(0.2)
        s.close()
    time.sleep(0.5)
    metrics = call(base, "GET", "/metrics", key=keys["read"])[1]
    assert 'route="/v1/events",status="499"' in metrics and 'status="500"' not in metrics
    assert "Traceback" not in SERVED[base][1].read_text()


def test_slow_clients_are_timed_out(shared, tmp_path):
    db = own_copy(shared, tmp_path)
    with start_server(db, "--client-timeout", "1") as base:
        s, host = raw_connection(base)
        s.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n".encode())  # headers never finished
        started = time.monotonic()
        assert s.recv(100) == b"" and time.monotonic() - started < 10  # closed by the server
        s, host = raw_connection(base)
        s.sendall(f"POST /v1/events HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {shared[1]['write']}\r\n"
                  f"Content-Length: 100\r\n\r\n{{\"ev".encode())  # a body that stops
        assert s.recv(100).startswith(b"HTTP/1.1 408")


# ---- 17-18. cross-site forms, the reference page, the OpenAPI document ----------------------------------------------

def test_sign_in_and_out_refuse_cross_site_forms(served):
    base, keys = served
    assert signin(base, keys["read"], origin=False)[0] == 403
    status, _ = call(base, "POST", "/ui/signin", body=b"key=" + keys["read"].encode(),
                     headers={"Origin": "https://evil.example", "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 403
    assert call(base, "POST", "/ui/signout", body=b"", headers={"Origin": "https://evil.example"})[0] == 403
    assert signin(base, keys["read"])[0] == 303


def test_docs_load_nothing_from_elsewhere_and_the_openapi_declares_keys(served):
    import http.client
    base, _ = served
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(base).netloc, timeout=30)
    conn.request("GET", "/docs")
    resp = conn.getresponse()
    page = resp.read().decode()
    assert resp.status == 200 and "/v1/users/{user_id}/profile" in page
    assert "<script" not in page and "cdn" not in page.lower() and "https://" not in page
    assert "default-src 'none'" in resp.getheader("Content-Security-Policy")
    spec = call(base, "GET", "/openapi.json")[1]
    assert set(spec["components"]["securitySchemes"]) == {"APIKeyHeader", "HTTPBearer"}
    assert spec["paths"]["/v1/segments"]["get"]["security"] and "security" not in spec["paths"]["/healthz"]["get"]


def test_what_held_before_still_holds(served):
    """Hashed keys, parameterised SQL, escaped pages, no open redirect."""
    base, keys = served
    hostile = "taobao:<script>alert(1)</script>' OR '1'='1"
    status, body = call(base, "GET", f"/v1/users/{urllib.parse.quote(hostile, safe='')}/profile", key=keys["read"])
    assert status == 404
    status, page = call(base, "GET", f"/ui/users?q={urllib.parse.quote(hostile)}", key=keys["read"])
    assert status == 200 and "<script>alert" not in page
    import http.client
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(base).netloc, timeout=30)
    conn.request("POST", "/ui/signin", urllib.parse.urlencode({"key": keys["read"], "next": "//evil.example/"}),
                 {"Content-Type": "application/x-www-form-urlencoded", "Origin": base})
    resp = conn.getresponse()
    assert resp.status == 303 and resp.getheader("Location") == "/ui"
    assert json.dumps(call(base, "GET", "/v1/keys", key=keys["admin"])[1]).count("hx_") == 0
