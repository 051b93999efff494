"""Live updates from a real Redis server (Debian redis-server, started here): batches stored, profiles refreshed,
acknowledged after the commit; a consumer killed with SIGKILL loses nothing and counts nothing twice.
The Kafka source's logic runs against a stand-in consumer (no broker can be installed here)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import duckdb
import pytest

from conftest import TAOBAO
from test_cli import run


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    from huaxiang.stream import local_redis
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (Debian package redis-server; .ci/run installs it)")
    with local_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture()
def store(tmp_path):
    db = str(tmp_path / "live.duckdb")
    run("ingest", str(TAOBAO), "--format", "taobao", "--namespace", "taobao", "--db", db)
    run("build", "--db", db)
    return db


def push(url, stream, events):
    import redis
    r = redis.Redis.from_url(url)
    pipe = r.pipeline()
    for e in events:
        pipe.xadd(stream, {"event": e if isinstance(e, (str, bytes)) else json.dumps(e)})
    pipe.execute()


def one(db, sql, params=()):
    con = duckdb.connect(db, read_only=True)
    try:
        return con.execute(sql, list(params)).fetchone()
    finally:
        con.close()


def test_stream_updates_profiles_and_quarantines_bad_messages(redis_url, store):
    before = one(store, "SELECT n_events, n_buy FROM profiles WHERE user_id = 'taobao:1000001'")
    events = [{"user_id": "taobao:1000001", "item_id": "taobao:2268318", "type": t, "ts": f"2017-12-03T12:0{i}:00"}
              for i, t in enumerate(["view", "cart", "buy"])]
    events.append({"event_id": "dup", "user_id": "taobao:1000001", "item_id": "taobao:1", "type": "view",
                   "ts": "2017-12-03T12:05:00"})
    events.append({"event_id": "dup", "user_id": "taobao:1000001", "item_id": "taobao:1", "type": "view",
                   "ts": "2017-12-03T12:05:00"})  # the same event twice in one batch: kept once, the copy noted
    events += ["{broken json", {"user_id": "taobao:1000001", "type": "fly", "ts": "2017-12-03T12:06:00"}]
    push(redis_url, "s1", events)
    out = run("consume", "--db", store, "--redis", redis_url, "--stream", "s1", "--idle-exit", "1").stdout
    assert "7 messages" in out and "4 events added" in out and "3 quarantined" in out
    assert one(store, "SELECT n_events, n_buy FROM profiles WHERE user_id = 'taobao:1000001'") == (
        before[0] + 4, before[1] + 1)  # refreshed without a rebuild
    reasons = [r for (r,) in duckdb.connect(store, read_only=True).execute(
        "SELECT reason FROM quarantine WHERE starts_with(source, 'stream:') ORDER BY line").fetchall()]
    assert len(reasons) == 3 and reasons[0].startswith("duplicate event_id dup")
    import redis
    assert redis.Redis.from_url(redis_url).xpending("s1", "huaxiang")["pending"] == 0  # all acknowledged


def test_kill_9_mid_stream_loses_nothing_and_counts_nothing_twice(redis_url, store):
    n = 3000
    push(redis_url, "s2", [{"user_id": f"taobao:{1000001 + i % 50}", "item_id": f"taobao:{i}", "type": "view",
                            "ts": "2017-12-03T13:00:00"} for i in range(n)])
    cmd = [sys.executable, "-m", "huaxiang.cli", "consume", "--db", store, "--redis", redis_url, "--stream", "s2",
           "--batch", "100", "--idle-exit", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    import redis
    r = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until it is part-way through, then kill it hard
        groups = r.xinfo_groups("s2")
        if groups and groups[0]["pending"] + (groups[0].get("entries-read") or 0) > 300:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    stored_at_kill = one(store, "SELECT count(*) FROM events WHERE starts_with(event_id, 'redis:s2:')")[0]
    assert stored_at_kill < n  # it really was interrupted
    run("consume", "--db", store, "--redis", redis_url, "--stream", "s2", "--batch", "100", "--idle-exit", "1")
    total, distinct = one(store, "SELECT count(*), count(DISTINCT event_id) FROM events "
                                 "WHERE starts_with(event_id, 'redis:s2:')")
    assert total == distinct == n
    assert r.xpending("s2", "huaxiang")["pending"] == 0


class StandInKafka:
    """What confluent-kafka's Consumer offers to the source: consume() and commit()."""

    class Msg:
        def __init__(self, offset, value):
            self._offset, self._value = offset, value

        def error(self):
            return None

        def partition(self):
            return 0

        def offset(self):
            return self._offset

        def value(self):
            return self._value

    def __init__(self, values):
        self.log = [self.Msg(i, v) for i, v in enumerate(values)]
        self.position = self.committed = 0

    def consume(self, num_messages, timeout):
        got = self.log[self.position:self.position + num_messages]
        self.position += len(got)
        return got

    def commit(self, asynchronous=False):
        self.committed = self.position


def test_kafka_source_commits_after_the_store(store):
    from huaxiang.config import load_config
    from huaxiang.store import connect
    from huaxiang.stream import KafkaSource, consume
    values = [json.dumps({"user_id": "taobao:1000004", "item_id": f"taobao:k{i}", "type": "view",
                          "ts": "2017-12-03T14:00:00"}).encode() for i in range(25)] + [b"\xff not json"]
    kafka = StandInKafka(values)
    con = connect(store)
    report = consume(con, load_config(), KafkaSource("events", consumer=kafka), batch=10, block_ms=1, idle_exit_s=0)
    assert report.added == 25 and report.quarantined == 1 and kafka.committed == 26
    ids = [i for (i,) in con.execute("SELECT event_id FROM events WHERE starts_with(event_id, 'kafka:')").fetchall()]
    assert sorted(ids)[:2] == ["kafka:events:0:0", "kafka:events:0:1"]
    con.close()


def test_the_service_consumes_the_stream_and_serves_the_fresh_profile(redis_url, store):
    from conftest import call, start_server
    key = run("keys", "create", "--scope", "read", "--db", store).stdout.strip().splitlines()[-1]
    with start_server(store, "--redis", redis_url, "--stream", "served") as base:
        before = call(base, "GET", "/v1/users/taobao:1000001/profile", key=key)[1]
        push(redis_url, "served", [{"user_id": "taobao:1000001", "item_id": "taobao:2268318", "type": "buy",
                                    "ts": "2017-12-03T13:00:00"}])
        for _ in range(100):
            after = call(base, "GET", "/v1/users/taobao:1000001/profile", key=key)[1]
            if after["n_buy"] == before["n_buy"] + 1:
                break
            time.sleep(0.1)
        assert after["n_buy"] == before["n_buy"] + 1 and after["n_events"] == before["n_events"] + 1


def test_rewind_delivers_the_unacknowledged_batch_again(redis_url):
    from huaxiang.stream import RedisSource
    push(redis_url, "rewind", [{"user_id": "u", "n": i} for i in range(3)])
    source = RedisSource(redis_url, "rewind")
    first = source.read(10, 10)
    assert len(first) == 3 and source.read(10, 10) == []  # delivered, not acknowledged: nothing new
    source.rewind()
    assert [m.id for m in source.read(10, 10)] == [m.id for m in first]
    source.ack(first)
    source.rewind()
    assert source.read(10, 10) == []
