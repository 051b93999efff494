"""The one writer of the online store (`huaxiang consume --publish`), against a real redis-server and real
`huaxiang consume` processes killed with SIGKILL at each point of a batch: once restarted and idle, the online
store holds what the store holds (every user's doc, ctx and week as a fresh render gives them), every entry is
acknowledged and no event is stored twice. Deletions queued on the stream run in stream order, online too."""
import json
import os
import shutil
import subprocess
import sys
import time

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
    assert r.hlen(layout.LIVE_DIRTY) == 0  # (every user the live path patched was refreshed)


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
    # redelivery, or the refresh marks the live path left, can bring their online documents up to date
    entries = [event(u, f"{u.split(':')[0]}:2268318", i) for i, u in enumerate(old)]
    entries += [event(u, f"{u.split(':')[0]}:2333346", 10 + i) for i, u in enumerate(new * 3)]
    entries += [event(new[0], "taobao:1", 59, event_id="w-dup")] * 2  # stored once
    push(r, entries)

    marker = tmp_path / "crashed"
    killed = consume(db, url, crash_at, marker, batch=len(old))
    assert killed.returncode == -9 and marker.read_text() == crash_at, killed.stderr[-2000:]
    if crash_at == "after_refresh":  # in a refresh round, after the batches' acknowledgements: the marks remain
        assert r.hlen(layout.LIVE_DIRTY) > 0
    else:
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


LIVE_FIELDS = ("n_events", "n_view", "n_cart", "n_fav", "n_buy", "n_search", "n_review", "first_ts", "last_ts",
               "hour_hist", "dow_hist", "recent_events")


def test_live_path_patches_online_at_once_and_the_refresh_agrees(built, tmp_path, redis_server):
    """An event is in its user's online document right after the writer's commit — its live fields only, the rest
    still the last refresh's — and the refresh round that follows changes none of those live fields: the patch
    computed them exactly as the SQL does. A duplicate of it is counted once."""
    db, url, r = fresh(built, tmp_path, redis_server, 6)
    user, key = "taobao:1000001", layout.user_key("taobao", 1, "taobao:1000001")
    before = json.loads(r.hget(key, "doc"))
    week_before = layout.decode_week(r.hget(key, "week"))
    proc = subprocess.Popen([sys.executable, "-m", "huaxiang.cli", "consume", "--db", db, "--redis", url,
                             "--publish", url, "--batch", "3", "--idle-exit", "3", "--refresh-every", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        batch = [("event", {"user_id": user, "item_id": "taobao:2268318", "type": "view", "event_id": "live-1",
                            "ts": "2017-12-03T18:59:00"}),  # a Sunday
                 ("event", {"user_id": user, "item_id": "taobao:2333346", "type": "cart", "event_id": "live-2",
                            "ts": "2017-12-03T07:30:00"}),
                 ("event", {"user_id": user, "type": "search", "query": "red dress", "event_id": "live-3",
                            "ts": "2017-12-02T23:10:00"})]
        push(r, batch)
        deadline = time.monotonic() + 60
        while json.loads(r.hget(key, "doc"))["n_events"] == before["n_events"]:
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()[-2000:] if proc.poll() else ""
            time.sleep(0.05)
        push(r, batch[:1])  # the same event again: stored once
        time.sleep(1.0)
        patched = json.loads(r.hget(key, "doc"))
        assert r.hget(key, "seq") is not None and r.hexists(layout.LIVE_DIRTY, user)  # marked for the refresh
        week_patched = layout.decode_week(r.hget(key, "week"))
    finally:
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert patched["n_events"] == before["n_events"] + 3
    assert [patched[f"n_{t}"] - before[f"n_{t}"] for t in ("view", "cart", "search", "buy")] == [1, 1, 1, 0]
    assert patched["last_ts"] == max(before["last_ts"], "2017-12-03T18:59:00")
    for hour, day in ((18, 6), (7, 6), (23, 5)):
        assert week_patched[day][hour] == week_before[day][hour] + 1
    assert [patched["hour_hist"][h] - before["hour_hist"][h] for h in (18, 7, 23)] == [1, 1, 1]
    assert [patched["dow_hist"][d] - before["dow_hist"][d] for d in (5, 6)] == [1, 2]
    assert patched["recent_events"][0] == {"ts": "2017-12-03T18:59:00", "type": "view", "item_id": "taobao:2268318"}
    assert {k: v for k, v in patched.items() if k not in LIVE_FIELDS} == \
        {k: v for k, v in before.items() if k not in LIVE_FIELDS}  # the rest waits for the refresh round
    final = json.loads(r.hget(key, "doc"))  # written by the round the writer ran before exiting
    assert {k: patched[k] for k in LIVE_FIELDS} == {k: final[k] for k in LIVE_FIELDS}
    assert layout.decode_week(r.hget(key, "week")) == week_patched
    assert_consistent(db, r, [user])


def test_live_patches_and_refresh_rounds_interleaved_count_every_event_once(built, tmp_path, redis_server):
    """Many small batches while refresh rounds run back to back (in-process, one round every 10 ms), each patch
    held back 0.3 s after its commit so that rounds overtake it: once the writer is done, every document equals a
    fresh render — a patch applied over a round that already held its events would count them twice in a user
    no longer marked for refresh."""
    import threading
    from huaxiang.config import load_config
    from huaxiang.online.live import LivePath
    from huaxiang.online.writer import OnlineWriter
    from huaxiang.store import connect
    from huaxiang.stream import RedisSource, consume as run_consume
    db, url, r = fresh(built, tmp_path, redis_server, 7)
    users = [f"{t}:{u}" for t in TENANTS for u in ("1000001", "1000027", "1000040", "1001305")]

    def produce():
        for i in range(48):
            u = users[i % len(users)]
            push(r, [event(u, f"{u.split(':')[0]}:2268318", i % 60, event_id=f"mix-{i}")])
            time.sleep(0.005)
    con = connect(db)
    try:
        writer = OnlineWriter(url, con)
        live = LivePath(writer, con, load_config(), every=0.01)
        real_patch = writer.patch

        def late_patch(*args):
            time.sleep(0.3)  # (longer than a round)
            return real_patch(*args)
        writer.patch = late_patch
        producer = threading.Thread(target=produce)
        producer.start()
        report = run_consume(con, load_config(), RedisSource(url, layout.STREAM), batch=2, block_ms=50,
                             idle_exit_s=1.0, writer=writer, live=live)
        producer.join()
    finally:
        con.close()
    assert report.added == 48 and report.online > 0 and report.refreshed > 0
    assert_consistent(db, r, users)
