"""`huaxiang publish`: a store (or a Parquet build) written to a real Redis as versions per tenant — the documents
byte for byte as the embedded server serves them, the recommenders' contexts as `user_view` reads them, the
segment reports; a re-run with nothing changed writes nothing; a change in one tenant moves only that tenant; a
publish that fails half-way leaves what is served as it was.

The store: three tenants — `tb` (the Taobao slice), `am` (Amazon reviews: items reviewed well) and the default ''
(the Beauty slice, with titles) — plus a heavy `tb` user (repeats, far over the history length), searches, a
default-tenant user who touched another tenant's item, and a few scores written in an odd order."""
import json
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest

from huaxiang.config import Config
from huaxiang.errors import HuaxiangError
from huaxiang.ingest import ingest_file
from huaxiang.online import layout
from huaxiang.online.publish import publish, tenant_users, write_users
from huaxiang.online.source import parquet_source
from huaxiang.profile.build import build_profiles
from huaxiang.profile.render import week_hours
from huaxiang.profile.segment_report import segment_report
from huaxiang.recommend.store_model import HISTORY_LENGTH
from huaxiang.recommend.user_view import _from_store
from huaxiang.scale.build import build, export, read_profiles
from huaxiang.schema import tenant_of
from huaxiang.serve.docs import ProfileDocs
from huaxiang.store import connect
from huaxiang.stream import local_redis

from conftest import DEMO, write_events

TENANTS = ["", "am", "tb"]
READS = {"hget", "hgetall", "hmget", "info", "scan", "exists", "ping", "zcard", "client", "hello", "select"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("publish")
    db = str(tmp / "p.duckdb")
    con = connect(db)
    ingest_file(con, str(DEMO / "taobao_UserBehavior_head.csv.gz"), "taobao", namespace="tb")
    ingest_file(con, str(DEMO / "All_Beauty_5_head1500.json.gz"), "amazon-reviews", namespace="am")
    ingest_file(con, str(DEMO / "Beauty_head2000.txt.gz"), "s3rec")
    items = [i for (i,) in con.execute("SELECT item_id FROM events WHERE starts_with(item_id, 'tb:') GROUP BY 1 "
                                       "ORDER BY count(*) DESC, 1 LIMIT 30").fetchall()]
    heavy = [("heavy", items[n % 7 if n % 3 else n % 30].removeprefix("tb:"), "view",
              f"2017-11-2{5 + n // 100} 10:{n % 100 // 60:02d}:{n % 60:02d}", "") for n in range(240)]
    heavy[-3:] = [heavy[-4][:3] + (f"2017-11-27 23:59:5{k}", "") for k in range(3)]  # ends on a repeated item
    searches = [("heavy", "", "search", f"2017-11-26 0{k}:00:00", f"query {k}") for k in range(5)]
    ingest_file(con, write_events(tmp / "tb.csv", heavy + searches), "csv", namespace="tb")
    # a default-tenant user with a namespaced item (another tenant's: never in their context) and a search
    ingest_file(con, write_events(tmp / "mixed.csv", [("mixed", items[0], "view", "2014-07-01 10:00:00", ""),
                                                   ("mixed", "B0001", "view", "2014-07-01 10:01:00", ""),
                                                   ("mixed", "", "search", "2014-07-01 10:02:00", "lipstick")]),
                "csv")
    build_profiles(con, Config())
    con.execute("CREATE TABLE scores (user_id VARCHAR, kind VARCHAR, score DOUBLE, detail VARCHAR)")
    con.execute("""INSERT INTO scores SELECT user_id, k.kind, 0.5, '{"text": "because"}' FROM
        (SELECT user_id FROM profiles ORDER BY user_id LIMIT 60) CROSS JOIN (VALUES ('risk'), ('churn')) k(kind)""")
    con.close()
    return db


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with local_redis(str(tmp_path_factory.mktemp("redis"))) as url:
        yield url


def client(redis_url, db: int):
    r = layout.connect(redis_url.rsplit("/", 1)[0] + f"/{db}")
    r.flushdb()
    return r


def served_docs(r, tenant: str) -> dict[str, bytes]:
    version = layout.current(r)[tenant]
    users = [u.decode() for u in r.zrange(layout.ids_key(tenant, version), 0, -1)]
    with r.pipeline(transaction=False) as p:
        for u in users:
            p.hget(layout.user_key(tenant, version, u), "doc")
        return dict(zip(users, p.execute()))


def version_keys(r, tenant: str, version: int) -> list[bytes]:
    return list(r.scan_iter(match=layout.version_prefix(tenant, version) + b"*", count=1_000))


class AnyItem(dict):
    """An item index of every id (as itself), for `_from_store`."""
    def __contains__(self, key):
        return key is not None

    def __getitem__(self, key):
        return key


def test_publish_writes_what_the_embedded_server_serves(store, redis_url):
    r = client(redis_url, 1)
    con = connect(store, read_only=True)
    model = {"model/weights.bin": b"\x00\x01" * 1000, "recommender.json": b"{}"}
    result = publish(con, r, f"db:{store}", grace=0, model_files=model, batch=500)
    assert set(result["tenants"]) == set(TENANTS)
    assert all(not t["unchanged"] and t["version"] == 1 and t["written"] == t["users"] > 0
               for t in result["tenants"].values())
    assert result["redis_used_memory_delta"] > 0 and layout.current(r) == {t: 1 for t in TENANTS}
    report = {p["tenant"]: p for p in segment_report(con)["tenants"]}
    for tenant in TENANTS:
        users = tenant_users(con, tenant)
        assert result["tenants"][tenant]["users"] == len(users)
        expected = ProfileDocs(con).load(users)
        assert served_docs(r, tenant) == expected  # every document, byte for byte
        assert json.loads(r.get(layout.seg_key(tenant, 1))) == report[tenant]
        meta = {k.decode(): v.decode() for k, v in r.hgetall(layout.meta_key(tenant, 1)).items()}
        assert meta["state"] == "ready" and meta["source"] == f"db:{store}" and int(meta["users"]) == len(users)
        assert meta["model"] == layout.blob_id(model) and layout.read_blob(r, meta["model"]) == model
        sample = users[:40] + {"tb": ["tb:heavy"], "": ["mixed"]}.get(tenant, [])
        rec = SimpleNamespace(index=AnyItem())
        for user in sample:
            fields = r.hgetall(layout.user_key(tenant, 1, user))
            view = _from_store(con, rec, user, HISTORY_LENGTH, lambda i, u=user: tenant_of(i) == tenant_of(u))
            ctx = layout.decode_ctx(fields[b"ctx"])
            assert ctx["h"] == [list(x) for x in view.history] and ctx["q"] == view.queries
            assert sorted(ctx["l"]) == sorted(view.liked)  # (reviews of one day have no order among them)
            assert (ctx["s"], ctx["c"]) == (view.segment, view.top_category)
            offset = json.loads(fields[b"doc"])["habit_utc_offset"] or 0
            assert layout.decode_week(fields[b"week"]) == week_hours(con, user, offset)
            assert fields[b"h"] == layout.content_hash(fields[b"doc"], fields[b"ctx"], fields[b"week"])
    heavy = layout.decode_ctx(r.hget(layout.user_key("tb", 1, "tb:heavy"), "ctx"))
    assert len(heavy["h"]) == HISTORY_LENGTH and heavy["q"] == [f"query {k}" for k in (4, 3, 2)]
    assert all(a != b for a, b in zip(heavy["h"], heavy["h"][1:]))  # a repeat of the item before is dropped
    mixed = layout.decode_ctx(r.hget(layout.user_key("", 1, "mixed"), "ctx"))
    assert [i for i, _ in mixed["h"]] == ["B0001"] and mixed["q"] == ["lipstick"]  # not the tb: item
    liked = sum(len(layout.decode_ctx(r.hget(layout.user_key("am", 1, u), "ctx"))["l"])
                for u in tenant_users(con, "am")[:40])
    assert liked > 0
    first = con.execute("SELECT min(user_id) FROM profiles").fetchone()[0]  # (one of the users with scores)
    scored = json.loads(r.hget(layout.user_key(tenant_of(first), 1, first), "doc"))
    assert list(scored["scores"]) == ["churn", "risk"]  # the order of KINDS, not the rows'
    con.close()


def test_a_rerun_with_nothing_changed_writes_nothing(store, redis_url):
    r = client(redis_url, 2)
    con = connect(store, read_only=True)
    first = publish(con, r, f"db:{store}", grace=0)
    before, keys_before = r.info("commandstats"), sorted(r.scan_iter(count=1_000))
    again = publish(con, r, f"db:{store}", grace=0)
    con.close()
    proc = subprocess.run([sys.executable, "-m", "huaxiang.cli", "publish", "--to", redis_url.rsplit("/", 1)[0] + "/2",
                           "--db", store, "--grace", "0", "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    after = r.info("commandstats")
    changed = {k.removeprefix("cmdstat_") for k in after if after[k]["calls"] != before.get(k, {}).get("calls")}
    # not one write command, bar the publish lock's (SET NX at the start, GET and DEL at the end)
    assert changed <= READS | {"set", "get", "del"}, changed
    assert after["cmdstat_set"]["calls"] - before["cmdstat_set"]["calls"] == 2  # (the two publishes' locks)
    assert sorted(r.scan_iter(count=1_000)) == keys_before
    for result in (again, json.loads(proc.stdout)):
        assert all(t["unchanged"] and t["written"] == 0 for t in result["tenants"].values())
        assert {t: v["version"] for t, v in result["tenants"].items()} == {t: 1 for t in TENANTS}
        assert {t: v["users"] for t, v in result["tenants"].items()} == \
            {t: v["users"] for t, v in first["tenants"].items()}


def test_a_change_in_one_tenant_moves_only_that_tenant(store, redis_url, tmp_path):
    db = str(tmp_path / "copy.duckdb")
    shutil.copy(store, db)
    r = client(redis_url, 3)
    con = connect(db)
    publish(con, r, f"db:{db}", grace=0)
    untouched = {t: served_docs(r, t) for t in ("", "am")}
    ingest_file(con, write_events(tmp_path / "new.csv", [("heavy", "", "search", "2017-12-03 15:00:00", "new query")]),
                "csv", namespace="tb")
    result = publish(con, r, f"db:{db}", grace=0)
    assert {t: (v["version"], v["unchanged"]) for t, v in result["tenants"].items()} == \
        {"": (1, True), "am": (1, True), "tb": (2, False)}
    assert layout.current(r) == {"": 1, "am": 1, "tb": 2} and layout.pending(r) == {}
    assert version_keys(r, "tb", 1) == []  # the replaced version is gone (grace 0)
    assert {t: served_docs(r, t) for t in ("", "am")} == untouched
    doc = json.loads(r.hget(layout.user_key("tb", 2, "tb:heavy"), "doc"))
    assert doc["recent_events"][0]["query"] == "new query"
    assert layout.decode_ctx(r.hget(layout.user_key("tb", 2, "tb:heavy"), "ctx"))["q"][0] == "new query"
    con.close()


def test_a_failed_or_killed_publish_leaves_what_is_served(store, redis_url):
    r = client(redis_url, 4)
    con = connect(store, read_only=True)
    publish(con, r, f"db:{store}", grace=0, model_files={"m": b"1"})
    served = {t: served_docs(r, t) for t in TENANTS}

    def fail(done, total):
        if done >= 200:
            raise RuntimeError("stopped half-way")

    with pytest.raises(RuntimeError):  # another model: every tenant would move to version 2
        publish(con, r, f"db:{store}", grace=0, model_files={"m": b"2"}, progress=fail, batch=100)
    assert layout.current(r) == {t: 1 for t in TENANTS} and layout.pending(r) == {}
    assert {t: served_docs(r, t) for t in TENANTS} == served
    assert all(version_keys(r, t, 2) == [] for t in TENANTS)
    # a publish killed half-way (nothing cleaned up): a version pending, some users written, its model blob
    version = layout.begin(r, "tb", "db:killed")
    assert write_users(con, r, "tb", version, tenant_users(con, "tb")[:150], 50)[0] == 150
    orphan = layout.write_blob(r, {"m": b"3"})
    assert version_keys(r, "tb", version)
    result = publish(con, r, f"db:{store}", grace=0, model_files={"m": b"1"})  # nothing changed since v1
    assert all(t["unchanged"] for t in result["tenants"].values())
    assert layout.pending(r) == {} and version_keys(r, "tb", version) == []
    assert not r.exists(layout.blob_key(orphan)) and r.exists(layout.blob_key(layout.blob_id({"m": b"1"})))
    assert {t: served_docs(r, t) for t in TENANTS} == served
    assert not r.exists(layout.PUBLISH_LOCK)  # (each publish let go of its lock, failed ones too)
    r.set(layout.PUBLISH_LOCK, b"someone else", px=60_000)  # another publish running: this one waits its turn
    with pytest.raises(HuaxiangError, match="another publish to this online store is running"):
        publish(con, r, f"db:{store}", grace=0, model_files={"m": b"2"})
    assert layout.current(r) == {t: 1 for t in TENANTS} and r.get(layout.PUBLISH_LOCK) == b"someone else"
    con.close()


def test_workers_write_the_same(store, redis_url):
    from functools import partial
    con = connect(store, read_only=True)
    one, two = client(redis_url, 5), client(redis_url, 6)
    publish(con, one, f"db:{store}", grace=0, tenants=["tb"])
    result = publish(con, two, f"db:{store}", grace=0, tenants=["tb"], workers=2,
                     opener=partial(connect, store, read_only=True), batch=100)
    assert set(result["tenants"]) == {"tb"} and layout.current(two) == {"tb": 1}
    for tenant in ("tb",):
        assert served_docs(two, tenant) == served_docs(one, tenant)
        users = tenant_users(con, tenant)
        for a, b in zip(*[[r.hget(layout.user_key(tenant, 1, u), "h") for u in users] for r in (one, two)]):
            assert a == b is not None
    con.close()


def test_a_parquet_build_is_published(store, redis_url, tmp_path):
    from conftest import cli
    con = connect(store, read_only=True)
    export(con, str(tmp_path / "in"))  # (what `huaxiang export` and `build --engine duckdb` run, in this process)
    con.close()
    build("duckdb", str(tmp_path / "in"), str(tmp_path / "out"), Config())
    r = client(redis_url, 7)
    result = json.loads(cli("publish", "--to", redis_url.rsplit("/", 1)[0] + "/7", "--input", str(tmp_path / "out"),
                            "--grace", "0", "--json"))
    profiles = read_profiles(str(tmp_path / "out"))
    by_tenant = profiles.groupby(profiles["user_id"].map(tenant_of))["user_id"].apply(list).to_dict()
    assert {t: v["users"] for t, v in result["tenants"].items()} == {t: len(u) for t, u in by_tenant.items()}
    for tenant, users in by_tenant.items():
        docs = served_docs(r, tenant)
        assert sorted(docs) == sorted(users)
        assert all(json.loads(docs[u])["user_id"] == u for u in users)
        assert r.hget(layout.meta_key(tenant, 1), "source").decode() == f"parquet:{tmp_path / 'out'}"
        seg = json.loads(r.get(layout.seg_key(tenant, 1)))
        assert sum(s["size"] for s in seg["segments"]) == len(users) and seg["segments"][0]["definition"]
    src = parquet_source(str(tmp_path / "out"))  # the documents are those of the build's profiles
    users = by_tenant["tb"][:50]
    assert {u: served_docs(r, "tb")[u] for u in users} == ProfileDocs(src).load(users)
    again = json.loads(cli("publish", "--to", redis_url.rsplit("/", 1)[0] + "/7", "--input", str(tmp_path / "out"),
                           "--grace", "0", "--json"))  # the same build again: nothing written
    assert all(t["unchanged"] and t["version"] == 1 for t in again["tenants"].values()), again
    with pytest.raises(HuaxiangError, match="URI"):
        parquet_source("s3a://bucket/out")
    with pytest.raises(HuaxiangError, match="no profiles"):
        parquet_source(str(tmp_path / "in"))
