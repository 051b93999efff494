"""Online mode against real processes: a store published to a real redis-server, stateless API workers
(`huaxiang serve --online`, one of them with `--workers 2`), and the one writer (`huaxiang consume --publish`)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest

from conftest import DEMO, TAOBAO, call, cli, start_server
from huaxiang.online import layout
from huaxiang.recommend.search import search_store
from huaxiang.recommend.store_model import load_store_recommender
from huaxiang.recommend.top_k import recommend
from huaxiang.serve.docs import ProfileDocs
from huaxiang.store import connect
from huaxiang.stream import local_redis

ITEMS = [("beauty:t1", "red lipstick matte"), ("beauty:t2", "rose lip balm"), ("beauty:t3", "night cream")]


def wait_for(check, seconds=15.0, every=0.05):
    """`check()`'s first truthy answer within `seconds` (None: it never came)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(every)
    return None


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store of two tenants (taobao, beauty with a few titled items), built, with a recommender and a read key;
    a copy of it (`frozen`) that no writer ever holds."""
    d = tmp_path_factory.mktemp("online")
    db = str(d / "s.duckdb")
    (d / "items.csv").write_text("item_id,title\n" + "".join(f"{i},{t}\n" for i, t in ITEMS))
    cli("ingest", str(TAOBAO), "--format", "taobao", "--namespace", "taobao", "--db", db)
    cli("ingest", str(DEMO / "Beauty_head2000.txt.gz"), "--format", "s3rec", "--namespace", "beauty", "--db", db)
    cli("ingest", str(d / "items.csv"), "--format", "csv", "--table", "items", "--db", db)
    cli("build", "--db", db)
    cli("train", "recommender", "--model", "itemknn", "--db", db)
    store_key = cli("keys", "create", "--scope", "read", "--db", db).strip().splitlines()[-1]
    frozen = str(d / "frozen.duckdb")
    shutil.copy(db, frozen)
    shutil.copytree(db + ".models", frozen + ".models")
    return d, db, frozen, store_key


@pytest.fixture(scope="module")
def online(store):
    """The store published; a writer; worker A (one process) and worker B (`--workers 2`); keys made online."""
    d, db, _, store_key = store
    with local_redis(str(d)) as url:
        cli("publish", "--to", url, "--db", db)
        keys = {scope: cli("keys", "create", "--scope", scope, "--online", url).strip().splitlines()[-1]
                for scope in ("read", "write", "admin")}
        keys["store"] = store_key
        with open(d / "writer.log", "wb") as err:
            writer = subprocess.Popen([sys.executable, "-m", "huaxiang.cli", "consume", "--db", db, "--redis", url,
                                       "--publish", url, "--batch", "100"], stdout=subprocess.DEVNULL, stderr=err)
        try:
            with start_server(db, online=url) as a, start_server(db, "--workers", "2", online=url) as b:
                yield {"url": url, "a": a, "b": b, "keys": keys, "frozen": store[2]}
        finally:
            writer.terminate()
            writer.wait(20)


def users(db: str, tenant: str, n: int) -> list[str]:
    con = connect(db, read_only=True)
    try:
        return [u for (u,) in con.execute("SELECT user_id FROM profiles WHERE starts_with(user_id, ?) "
                                          "ORDER BY n_events DESC, user_id LIMIT ?", [tenant + ":", n]).fetchall()]
    finally:
        con.close()


def raw_get(base: str, path: str, key: str) -> tuple[int, bytes]:
    import urllib.request
    req = urllib.request.Request(base + path, headers={"X-API-Key": key})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def shown(answer: dict) -> dict:
    """An answer less its `request_id` (a fresh one per request), which it must carry, and less the recommender that
    made it (a recommendation's `model`), which must be the store's promoted item-KNN."""
    assert len(answer["request_id"]) == 32 and answer.get("model", {"name": "itemknn"})["name"] == "itemknn"
    return {k: v for k, v in answer.items() if k not in ("request_id", "model")}


def test_online_workers_answer_what_the_embedded_server_answers(online, store):
    """Profiles byte for byte, recommendations with their reasons, segments and search — from Redis only."""
    frozen = store[2]
    con = connect(frozen, read_only=True)
    sample = users(frozen, "taobao", 5) + users(frozen, "beauty", 5)
    docs = ProfileDocs(con).load(sample)
    rec = load_store_recommender(frozen)
    key = online["keys"]["read"]
    for u in sample:
        path = "/v1/users/" + urllib.parse.quote(u, safe="")
        assert raw_get(online["a"], path + "/profile", key) == (200, docs[u])
        status, got = call(online["b"], "GET", path + "/recommendations?k=10", key)
        assert status == 200 and shown(got) == recommend(con.cursor(), rec, u, 10, True), u
    assert call(online["a"], "GET", "/v1/users/taobao%3Anobody/profile", key)[0] == 404
    status, seg = call(online["b"], "GET", "/v1/segments", key)
    assert status == 200 and [t["tenant"] for t in seg["tenants"]] == ["beauty", "taobao"]
    status, private = call(online["a"], "GET", "/v1/segments?epsilon=2", key)  # computed per request, noised
    assert status == 200 and private["privacy"]["epsilon"] == 2 and len(private["tenants"]) == 2
    for exact, noisy in zip(seg["tenants"], private["tenants"]):
        assert [s["segment"] for s in exact["segments"]] == [s["segment"] for s in noisy["segments"]]
        assert all(abs(a["size"] - b["size"]) < 60 for a, b in zip(exact["segments"], noisy["segments"]))
        assert "definition" not in noisy["segments"][0]
    status, found = call(online["a"], "GET", "/v1/search?q=red+lipstick+matte&tenant=beauty", key)
    assert status == 200 and shown(found) == search_store(con.cursor(), "red lipstick matte", None, 10, tenant="beauty")
    assert found["items"][0]["item_id"] == "beauty:t1"
    user = sample[-1]
    status, found = call(online["b"], "GET", f"/v1/search?q=cream&user_id={urllib.parse.quote(user)}", key)
    assert status == 200 and shown(found) == search_store(con.cursor(), "cream", user, 10, None, rec)
    # no tenant named: the one tenant with titled items, as in embedded mode
    status, found = call(online["a"], "GET", "/v1/search?q=lipstick", key)
    assert status == 200 and shown(found) == search_store(con.cursor(), "lipstick", None, 10)
    # the store's own keys were published with it
    assert raw_get(online["a"], "/v1/users/" + urllib.parse.quote(sample[0], safe="") + "/profile",
                   online["keys"]["store"])[0] == 200
    con.close()


def test_an_event_posted_to_one_worker_is_read_from_another(online):
    key, user = online["keys"]["write"], users(online["frozen"], "taobao", 1)[0]
    path = "/v1/users/" + urllib.parse.quote(user, safe="") + "/profile"
    before = call(online["b"], "GET", path, key)[1]["n_events"]
    event = {"user_id": user, "item_id": "taobao:12345", "type": "buy", "ts": "2017-12-03T12:00:00"}
    status, answer = call(online["a"], "POST", "/v1/events", key, {"events": [event]})
    assert status == 202 and answer["accepted"] == 1
    seen = wait_for(lambda: call(online["b"], "GET", path, key)[1]["n_events"] == before + 1)
    assert seen, "the event never reached the other worker"
    recs = call(online["b"], "GET", path.replace("/profile", "/recommendations"), key)[1]
    assert all(i["item_id"] != "taobao:12345" for i in recs["items"])  # bought: never recommended


def test_workers_are_processes_and_a_dead_one_is_replaced(online):
    def pids():
        return {call(online["b"], "GET", "/healthz")[1]["pid"] for _ in range(40)}
    seen = wait_for(lambda: len(pids()) >= 2 and pids())
    assert seen and len(seen) >= 2
    os.kill(next(iter(seen)), signal.SIGKILL)
    assert wait_for(lambda: (p := pids()) and len(p) >= 2 and p != seen, seconds=20)


def test_a_revocation_reaches_every_worker_within_two_seconds(online):
    admin = online["keys"]["admin"]
    status, made = call(online["a"], "POST", "/v1/keys", admin, {"scope": "read"})
    assert status == 201
    assert wait_for(lambda: call(online["b"], "GET", "/v1/segments", made["key"])[0] == 200, seconds=3)
    assert call(online["a"], "DELETE", f"/v1/keys/{made['id']}", admin)[0] == 200
    started = time.monotonic()
    for base in (online["a"], online["b"], online["b"]):
        assert wait_for(lambda: call(base, "GET", "/v1/segments", made["key"])[0] == 401, seconds=3)
    assert time.monotonic() - started <= 2.5


def test_a_pages_session_holds_on_every_worker(online):
    import http.client
    host = urllib.parse.urlsplit(online["a"]).netloc
    conn = http.client.HTTPConnection(host, timeout=30)
    conn.request("POST", "/ui/signin", urllib.parse.urlencode({"key": online["keys"]["read"], "next": "/ui"}),
                 {"Content-Type": "application/x-www-form-urlencoded", "Origin": online["a"]})
    resp = conn.getresponse()
    resp.read()
    cookie = resp.getheader("Set-Cookie").split(";")[0]
    for base in (online["b"], online["b"], online["a"]):
        status, page = call(base, "GET", "/ui/segments", headers={"Cookie": cookie})
        assert status == 200 and "beauty" in page
    user = users(online["frozen"], "beauty", 1)[0]
    status, page = call(online["b"], "GET", "/ui/users/" + urllib.parse.quote(user, safe=""),
                        headers={"Cookie": cookie})
    assert status == 200 and user in page
    status, page = call(online["b"], "GET", "/ui/users?q=" + urllib.parse.quote(user[:9]), headers={"Cookie": cookie})
    assert status in (200, 303)


def test_a_deletion_on_one_worker_is_404_on_the_others_and_done_by_the_writer(online):
    user = users(online["frozen"], "beauty", 3)[-1]
    path = "/v1/users/" + urllib.parse.quote(user, safe="")
    assert call(online["b"], "GET", path + "/profile", online["keys"]["read"])[0] == 200
    status, answer = call(online["a"], "DELETE", path, online["keys"]["admin"])
    assert status == 202 and answer["queued"]
    assert call(online["b"], "GET", path + "/profile", online["keys"]["read"])[0] == 404
    r = layout.connect(online["url"])
    assert wait_for(lambda: not r.sismember(layout.FORGET_PENDING, user), seconds=20), "the writer never ran it"
    event = {"user_id": user, "item_id": "beauty:t1", "type": "view", "ts": "2017-12-03T12:00:00"}
    assert call(online["a"], "POST", "/v1/events", online["keys"]["write"], {"events": [event]})[0] == 202
    time.sleep(1.5)  # (the writer refuses it: the user was suppressed)
    assert call(online["b"], "GET", path + "/profile", online["keys"]["read"])[0] == 404


def test_a_publish_switches_versions_whole_under_concurrent_reads(store, tmp_path):
    """Two stores whose documents differ published in turn while readers read: every answer is exactly one
    version's bytes, never a mix and never missing."""
    _, _, frozen, _ = store
    other = str(tmp_path / "other.duckdb")
    shutil.copy(frozen, other)
    shutil.copytree(frozen + ".models", other + ".models")
    sample = users(frozen, "taobao", 20)
    events = "".join(f"{u.split(':', 1)[1]},1,1,pv,1512302400\n" for u in sample)
    (tmp_path / "more.csv").write_text("User_id,item_id,category_id,behavior_type,timestamp\n" + events)
    cli("ingest", str(tmp_path / "more.csv"), "--format", "taobao", "--namespace", "taobao", "--db", other)
    cli("build", "--db", other)
    expected = {}
    for db in (frozen, other):
        con = connect(db, read_only=True)
        for u, doc in ProfileDocs(con).load(sample).items():
            expected.setdefault(u, set()).add(doc)
        con.close()
    assert all(len(v) == 2 for v in expected.values())
    with local_redis(str(tmp_path)) as url:
        cli("publish", "--to", url, "--db", frozen)
        key = cli("keys", "create", "--scope", "read", "--online", url).strip().splitlines()[-1]
        with start_server(frozen, online=url) as base:
            stop, bad, reads = threading.Event(), [], [0]

            def read():
                while not stop.is_set():
                    for u in sample:
                        status, body = raw_get(base, "/v1/users/" + urllib.parse.quote(u, safe="") + "/profile", key)
                        reads[0] += 1
                        if status != 200 or body not in expected[u]:
                            bad.append((u, status, body[:80]))
            threads = [threading.Thread(target=read) for _ in range(4)]
            for t in threads:
                t.start()
            try:
                for db in (other, frozen, other):
                    cli("publish", "--to", url, "--db", db, "--grace", "0.5")
            finally:
                stop.set()
                for t in threads:
                    t.join()
        r = layout.connect(url)
        versions = layout.current(r)
        assert not bad, bad[:3]
        assert reads[0] > 100
        assert versions["taobao"] == 4
        assert not list(r.scan_iter(match=layout.version_prefix("taobao", 1) + b"*"))  # the old ones are gone


def test_workers_need_the_online_store(store, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "huaxiang.cli", "serve", "--db", store[2], "--workers", "2"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "--workers needs --online" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "huaxiang.cli", "serve", "--online", "redis://127.0.0.1:1/0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "cannot reach the online store" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_what_a_worker_showed_reaches_the_writer(online):
    """A worker queues its answers' items as one stream entry per batch (within 5 s); the writer stores and
    acknowledges it (the rows themselves: tests/test_exposures.py)."""
    user = users(online["frozen"], "taobao", 2)[-1]
    status, got = call(online["a"], "GET", "/v1/users/" + urllib.parse.quote(user, safe="") + "/recommendations?k=3",
                       online["keys"]["read"])
    assert status == 200 and len(got["items"]) == 3
    r = layout.connect(online["url"])

    def entry():
        for entry_id, fields in r.xrange(layout.STREAM):
            if b"exposures" in fields and got["request_id"].encode() in fields[b"exposures"]:
                return entry_id, [json.loads(line) for line in fields[b"exposures"].splitlines()]
    assert wait_for(entry, seconds=10), "no exposures entry"
    entry_id, records = entry()
    [mine] = [r for r in records if r["request_id"] == got["request_id"]]  # (one record per answer)
    assert (mine["user_id"], mine["items"]) == (user, [i["item_id"] for i in got["items"]])
    assert wait_for(lambda: not r.xpending_range(layout.STREAM, "huaxiang", min=entry_id, max=entry_id, count=1)
                    and r.xinfo_groups(layout.STREAM)[0]["last-delivered-id"] >= entry_id, seconds=20)


def test_online_workers_serve_the_experiments_published(store, tmp_path):
    """A running experiment of the store, published with its variants' recommenders: every worker serves each user
    their variant's recommender (the same assignment as the store's); a stop, published, ends it within a second."""
    from huaxiang.experiments.catalog import get
    from huaxiang.experiments.assign import variants_of
    db = str(tmp_path / "exp.duckdb")
    shutil.copy(store[2], db)
    shutil.copytree(store[2] + ".models", db + ".models")
    cli("train", "recommender", "--model", "popularity", "--no-promote", "--db", db)
    cli("experiment", "create", "on1", "--variants", "a=itemknn,b=popularity", "--tenant", "beauty", "--db", db)
    con = connect(db, read_only=True)
    test, sample = get(con, "on1"), users(db, "beauty", 30) + users(db, "taobao", 3)
    con.close()
    expected = dict(zip(sample, variants_of(test.salt, sample, test.split)))
    with local_redis(str(tmp_path)) as url:
        assert json.loads(cli("publish", "--to", url, "--db", db, "--json"))["experiments"] == ["on1"]
        key = cli("keys", "create", "--scope", "read", "--online", url).strip().splitlines()[-1]
        with start_server(db, "--workers", "2", online=url) as base:
            for u in sample:
                status, got = call(base, "GET", "/v1/users/" + urllib.parse.quote(u, safe="") + "/recommendations",
                                   key)
                assert status == 200, got
                if u.startswith("beauty:"):
                    assert got["experiment"] == {"name": "on1", "variant": expected[u]}, u
                    assert got["model"]["name"] == {"a": "itemknn", "b": "popularity"}[expected[u]]
                else:  # (another tenant: not in it)
                    assert "experiment" not in got and got["model"] == {"name": "itemknn", "version": "1"}
            assert {expected[u] for u in sample if u.startswith("beauty:")} == {"a", "b"}
            cli("experiment", "stop", "on1", "--db", db)
            cli("publish", "--to", url, "--db", db)
            path = "/v1/users/" + urllib.parse.quote(sample[0], safe="") + "/recommendations"
            assert wait_for(lambda: "experiment" not in call(base, "GET", path, key)[1], 3.0)
