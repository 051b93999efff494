"""The one writer of the online store (`huaxiang consume --publish`), against a real redis-server and real
`huaxiang consume` processes killed with SIGKILL at each point of a batch: once restarted and idle, the online
store holds what the store holds (every user's doc, ctx and week as a fresh render gives them), every entry is
acknowledged and no event is stored twice. Deletions queued on the stream run in stream order, online too."""
import json
import os
import shutil
import subprocess
import sys

import duckdb
import pytest

from conftest import TAOBAO
from test_cli import run

from huaxiang.forget import id_hash
from huaxiang.online import layout

TENANTS = ("taobao", "shop")
SAMPLE = 40  # untouched users compared as well, besides every user the events touched


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    from huaxiang.stream import local_redis
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (Debian package redis-server; .ci/run installs it)")
    with local_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url.rsplit("/", 1)[0]  # redis://127.0.0.1:PORT: each test takes its own database number


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A store with two tenants (the same slice under two namespaces), built."""
    db = str(tmp_path_factory.mktemp("built") / "two.duckdb")
    for tenant in TENANTS:
        run("ingest", str(TAOBAO), "--format", "taobao", "--namespace", tenant, "--db", db)
    run("build", "--db", db)
    return db


def fresh(built, tmp_path, redis_server, number):
    """A copy of the built store, published to Redis database `number` (empty before)."""
    db = str(tmp_path / "store.duckdb")
    shutil.copy(built, db)
    url = f"{redis_server}/{number}"
    r = layout.connect(url)
    r.flushdb()
    publish(db, url)
    return db, url, r


def publish(db: str, url: str) -> None:
    """The whole store as each tenant's first version (as `huaxiang publish --db` writes it)."""
    from huaxiang.online.publish import publish as publish_store
    con = duckdb.connect(db, read_only=True)
    try:
        publish_store(con, layout.connect(url), f"db:{db}", grace=0)
    finally:
        con.close()
    assert set(layout.current(layout.connect(url))) == set(TENANTS)


def consume(db, url, crash_at=None, marker=None, batch=4):
    env = {**os.environ, "COLUMNS": "200"}
    if crash_at:
        env.update(HUAXIANG_CRASH_AT=crash_at, HUAXIANG_CRASH_MARKER=str(marker))
    return subprocess.run([sys.executable, "-m", "huaxiang.cli", "consume", "--db", db, "--redis", url,
                           "--publish", url, "--batch", str(batch), "--idle-exit", "1"],
                          capture_output=True, text=True, env=env, timeout=120)


def push(r, entries):
    with r.pipeline(transaction=False) as p:
        for kind, body in entries:
            p.xadd(layout.STREAM, {kind: json.dumps(body)})
        p.execute()


def queue_forget(r, user_id, suppress):
    """What an online API worker does for DELETE /v1/users/{id}: the user hidden at once, the deletion queued."""
    t = user_id.split(":", 1)[0]
    with r.pipeline(transaction=True) as p:
        p.sadd(layout.FORGET_PENDING, user_id)
        for v in layout.live_versions(r, t):
            p.delete(layout.user_key(t, v, user_id))
            p.zrem(layout.ids_key(t, v), user_id)
        p.xadd(layout.STREAM, {"forget": json.dumps({"user_id": user_id, "suppress": suppress})})
        p.execute()


def rows(db, sql, params=()):
    con = duckdb.connect(db, read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def assert_consistent(db, r, touched):
    """The online store equals a fresh render of the store: every touched user and a sample of the others, the
    finder's ids equal the profiles, nothing left pending in the group or the deletion queue."""
    from huaxiang.online.publish import render_users
    con = duckdb.connect(db, read_only=True)
    try:
        everyone = [u for (u,) in con.execute("SELECT user_id FROM profiles ORDER BY 1").fetchall()]
        check = sorted(set(touched) | set(everyone[::max(1, len(everyone) // SAMPLE)]))
        expected = render_users(con, check)
    finally:
        con.close()
    current = layout.current(r)
    for u in check:
        t = u.split(":", 1)[0]
        got = r.hmget(layout.user_key(t, current[t], u), "doc", "ctx", "week")
        want = [expected[u][f] for f in ("doc", "ctx", "week")] if u in expected else [None, None, None]
        assert got == want, f"{u}: online {'differs from' if u in expected else 'has'} the store"
    for t in TENANTS:
        ids = {m.decode() for m in r.zrange(layout.ids_key(t, current[t]), 0, -1)}
        assert ids == {u for u in everyone if u.startswith(t + ":")}
    assert r.xpending(layout.STREAM, "huaxiang")["pending"] == 0
    assert r.scard(layout.FORGET_PENDING) == 0


def event(user, item, minute, event_id=None):
    e = {"user_id": user, "item_id": item, "type": "buy" if minute % 3 == 0 else "view",
         "ts": f"2017-12-03T18:{minute:02d}:00"}
    return ("event", {**e, "event_id": event_id} if event_id else e)


@pytest.mark.parametrize("crash_at", ["after_commit", "after_refresh", "after_online"])
def test_writer_killed_anywhere_leaves_online_equal_to_store(built, tmp_path, redis_server, crash_at):
    number = 1 + ["after_commit", "after_refresh", "after_online"].index(crash_at)
    db, url, r = fresh(built, tmp_path, redis_server, number)
    old = ["taobao:1000001", "taobao:1000027", "shop:1000001", "shop:1000040"]
    new = ["taobao:w-new-1", "shop:w-new-2"]
    touched = old + new
    before_events = rows(db, "SELECT count(*) FROM events")[0][0]
    before_docs = {u: r.hget(layout.user_key(u.split(":")[0], 1, u), "doc") for u in old}
    # the first batch (the one the writer dies in) holds the old users, and no later batch does: only its
    # redelivery can bring their online documents up to date
    entries = [event(u, f"{u.split(':')[0]}:2268318", i) for i, u in enumerate(old)]
    entries += [event(u, f"{u.split(':')[0]}:2333346", 10 + i) for i, u in enumerate(new * 3)]
    entries += [event(new[0], "taobao:1", 59, event_id="w-dup")] * 2  # stored once
    push(r, entries)

    marker = tmp_path / "crashed"
    killed = consume(db, url, crash_at, marker, batch=len(old))
    assert killed.returncode == -9 and marker.read_text() == crash_at, killed.stderr[-2000:]
    assert r.xpending(layout.STREAM, "huaxiang")["pending"] > 0  # the batch it died in: never acknowledged
    done = consume(db, url, batch=len(old))
    assert done.returncode == 0, done.stderr[-2000:]

    assert rows(db, "SELECT count(*) FROM events")[0][0] == before_events + len(old) + len(new) * 3 + 1
    assert rows(db, "SELECT count(*) FROM (SELECT event_id FROM events GROUP BY 1 HAVING count(*) > 1)") == [(0,)]
    assert_consistent(db, r, touched)
    for u in old:  # the documents did change (the check above compares something that moved)
        assert r.hget(layout.user_key(u.split(":")[0], 1, u), "doc") != before_docs[u]
    for t in TENANTS:
        seg = json.loads(r.get(layout.seg_key(t, 1)))
        assert seg["tenant"] == t and sum(s["size"] for s in seg["segments"]) > 0


def test_deletions_run_in_stream_order_online_too(built, tmp_path, redis_server):
    db, url, r = fresh(built, tmp_path, redis_server, 4)
    gone, back, other = "taobao:1000001", "shop:1000027", "shop:1000040"
    queue_forget(r, gone, True)
    push(r, [event(gone, "taobao:5", 1), event(other, "shop:5", 2), event(back, "shop:6", 3)])
    queue_forget(r, back, False)
    push(r, [event(back, "shop:7", 4)])
    assert r.hget(layout.user_key("taobao", 1, gone), "doc") is None  # hidden at once, before the writer ran

    marker = tmp_path / "crashed"  # killed right after the first deletion's commit: it runs again, harmlessly
    assert consume(db, url, "after_commit", marker, batch=10).returncode == -9
    done = consume(db, url, batch=10)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 users forgotten" in done.stdout  # (the first deletion ran before the kill; its redelivery finds no one)

    tables = [t for (t,) in rows(db, "SELECT table_name FROM information_schema.columns WHERE column_name = "
                                    "'user_id' AND table_schema = 'main'")]
    for t in tables:
        assert rows(db, f"SELECT count(*) FROM {t} WHERE user_id = ?", [gone]) == [(0,)], t
    assert rows(db, "SELECT count(*) FROM forgotten_users WHERE id_hash = ?", [id_hash(gone)]) == [(1,)]
    # the user who may come back has exactly the event sent after the deletion; the one before it went with them
    assert rows(db, "SELECT item_id FROM events WHERE user_id = ?", [back]) == [("shop:7",)]
    assert r.hget(layout.user_key("shop", 1, back), "doc") is not None
    for t in TENANTS:
        assert r.zscore(layout.ids_key(t, 1), gone) is None
    assert r.exists(layout.user_key("taobao", 1, gone)) == 0
    assert_consistent(db, r, [gone, back, other])  # (the event of `gone` after the deletion: suppressed)


def test_writer_reaches_a_version_switched_mid_write_and_skips_parquet_tenants(built, tmp_path, redis_server):
    from huaxiang.online.writer import OnlineWriter
    db, url, r = fresh(built, tmp_path, redis_server, 5)
    user, parquet_user = "taobao:1000001", "shop:1000001"
    for u in (user, parquet_user):
        r.delete(layout.user_key(u.split(":")[0], 1, u))
    r.hset(layout.meta_key("shop", 1), "source", "parquet:/elsewhere@1")
    con = duckdb.connect(db, read_only=True)
    try:
        writer = OnlineWriter(url, con)
        other = layout.connect(url)
        real, began = writer._writable, []

        def racing(p, tenants):  # a publish begins version 2 between the writer's reads and its EXEC
            out = real(p, tenants)
            if not began:
                began.append(layout.begin(other, "taobao", f"db:{db}"))
            return out
        writer._writable = racing
        assert writer.write([user, parquet_user]) == 1
        assert began == [2]
        for v in (1, 2):  # the retried transaction wrote the served version and the one being published
            assert r.hget(layout.user_key("taobao", v, user), "doc") is not None
            assert r.zscore(layout.ids_key("taobao", v), user) == 0
        assert r.exists(layout.user_key("shop", 1, parquet_user)) == 0  # a Parquet tenant is not written
        assert writer.write([user]) == 0  # unchanged: nothing written again
    finally:
        con.close()
