"""What was shown: recommendation and search answers carry a request_id and their items land in `exposures`
(embedded: written to the store off the request path; online: a stream entry the one writer stores)."""
import threading
import time
from datetime import datetime

import duckdb
import numpy as np
import pytest

from conftest import call, cli, start_server, taobao_store

from huaxiang import store
from huaxiang.experiments.exposures import ExposureLog, record
from huaxiang.forget import forget_user
from huaxiang.stream import Message, _store_exposures


def test_the_log_batches_bounds_and_keeps_records_a_failed_write_did_not_store():
    written, fail = [], threading.Event()

    def sink(lines):
        if fail.is_set():
            raise OSError("store away")
        written.extend(lines)
    log = ExposureLog(sink, interval=0.05, batch=1_000, limit=50)
    log.add("r1")
    for _ in range(100):
        if written:
            break
        time.sleep(0.01)
    assert written == ["r1"]
    fail.set()
    log.add("r2")
    time.sleep(0.2)  # (its writes fail: the record stays queued)
    assert log.queue == ["r2"]
    for n in range(60):
        log.add(f"r3-{n}")
    assert len(log.queue) == 50 and log.dropped == 11  # the oldest dropped, counted
    fail.clear()
    log.close()
    assert not log.queue and written[1:] == [f"r3-{n}" for n in range(10, 60)] and log.written == 51


def test_an_online_workers_entry_is_stored_by_the_writer(tmp_path):
    con = store.connect(str(tmp_path / "s.duckdb"))
    lines = [record("req-1", "shop:u1", "recommendations", [{"item_id": "shop:i1", "score": 0.9},
                                                            {"item_id": "shop:i2", "score": 0.1}], "itemknn")]
    assert _store_exposures(con, Message("1-0", "\n".join(lines).encode(), "exposures")) == 2
    assert con.execute("SELECT request_id, user_id, item_id, position, model FROM exposures ORDER BY position"
                       ).fetchall() == [("req-1", "shop:u1", "shop:i1", 1, "itemknn"),
                                        ("req-1", "shop:u1", "shop:i2", 2, "itemknn")]
    for bad in (b"[[1, 2]]", b'{"request_id": "x", "ts": "today"}', b"\xff\xfe", lines[0].encode()[:-3]):
        assert _store_exposures(con, Message("2-0", bad, "exposures")) == 0  # unreadable: logged, skipped
    assert con.execute("SELECT count(*) FROM exposures").fetchone()[0] == 2
    # rows of a user forgotten (suppressed) meanwhile — queued before the deletion, written after — are refused
    forget_user(con, str(tmp_path / "s.duckdb"), "shop:u1")
    late = [record("req-2", "shop:u1", "search", [{"item_id": "shop:i3", "score": 1.0}]),
            record("req-3", None, "search", [{"item_id": "shop:i3", "score": 1.0}])]
    assert _store_exposures(con, Message("3-0", "\n".join(late), "exposures")) == 1
    assert con.execute("SELECT request_id, user_id FROM exposures").fetchall() == [("req-3", None)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    db = taobao_store(tmp_path_factory.mktemp("exposures"))
    key = cli("keys", "create", "--scope", "read", "--db", db).strip().splitlines()[-1]
    return db, key


def test_answers_carry_a_request_id_and_their_items_are_stored(trained):
    db, key = trained
    user = "taobao:1000251"
    with start_server(db) as base:
        status, recs = call(base, "GET", f"/v1/users/{user}/recommendations?k=5", key=key)
        assert status == 200 and len(recs["request_id"]) == 32 and len(recs["items"]) == 5
        again = call(base, "GET", f"/v1/users/{user}/recommendations?k=5", key=key)[1]
        status, found = call(base, "GET", f"/v1/search?q=phone&user_id={user}", key=key)
        assert status == 200 and found["request_id"] not in (recs["request_id"], again["request_id"])
    # (the server has stopped: what it still held was written at shutdown)
    con = duckdb.connect(db, read_only=True)
    try:
        shown = con.execute("""SELECT request_id, user_id, item_id, position, score, surface, model, latency_ms
            FROM exposures ORDER BY request_id, position""").fetchall()
    finally:
        con.close()
    by_request = {}
    for row in shown:
        by_request.setdefault(row[0], []).append(row)
    assert set(by_request) == {recs["request_id"], again["request_id"]} | (
        {found["request_id"]} if found["items"] else set())
    mine = by_request[recs["request_id"]]
    assert [r[2] for r in mine] == [i["item_id"] for i in recs["items"]] and [r[3] for r in mine] == [1, 2, 3, 4, 5]
    assert [r[4] for r in mine] == [i["score"] for i in recs["items"]]
    assert recs["model"] == {"name": "itemknn", "version": "1"} and "experiment" not in recs
    assert {(r[1], r[5], r[6]) for r in mine} == {(user, "recommendations", "itemknn")}
    assert all(r[7] > 0 for r in mine)
    if found["items"]:
        assert {r[5] for r in by_request[found["request_id"]]} == {"search"}


def test_a_server_can_record_nothing(trained):
    db, key = trained
    before = _exposures(db)
    with start_server(db, "--no-exposures") as base:
        status, recs = call(base, "GET", "/v1/users/taobao:1000251/recommendations?k=3", key=key)
        assert status == 200 and len(recs["request_id"]) == 32 and len(recs["items"]) == 3
    assert _exposures(db) == before


def _exposures(db: str) -> int:
    con = duckdb.connect(db, read_only=True)
    try:
        return con.execute("SELECT count(*) FROM exposures").fetchone()[0]
    finally:
        con.close()


def test_a_click_is_its_own_event_type_and_an_item_interaction(tmp_path):
    """`click` (a click on something shown) is stored as such, not as a view; the recommender's sequences and the
    knowledge graph read it as an interaction with the item."""
    from huaxiang.graph.triples import RULES
    from huaxiang.ingest import ingest_records
    from huaxiang.recommend.store_model import store_sequences
    con = store.connect(str(tmp_path / "s.duckdb"))
    events = [{"user_id": "u1", "item_id": "a", "type": "view", "ts": "2021-03-04T05:00:00"},
              {"user_id": "u1", "item_id": "b", "type": "CLICK", "ts": "2021-03-04T05:01:00"},
              {"user_id": "u1", "item_id": "c", "type": "pv", "ts": "2021-03-04T05:02:00"}]
    assert ingest_records(con, events, "api:1").added == {"events": 3}
    assert con.execute("SELECT item_id, type FROM events ORDER BY ts").fetchall() == [
        ("a", "view"), ("b", "click"), ("c", "view")]
    seqs = store_sequences(con)
    assert seqs.users == ["u1"] and [seqs.items[i - 1] for i in seqs.seqs[0]] == ["a", "b", "c"]
    edges = con.execute(RULES["behaviour"]).fetchall()  # (subject, predicate, object, weight)
    assert ("user:u1", "clicked", "item:b", 1.0) in edges


def test_a_record_keeps_every_value_and_each_item_becomes_a_row_in_order():
    from huaxiang.experiments.exposures import store_lines
    con = store.connect(":memory:")
    at = datetime(2026, 11, 30, 12, 1, 2, 345678)
    hostile = "x\n\u2028'\"; DROP TABLE exposures; --\x00 \u753b"  # (no character may split a line)
    lines = [record("r1", hostile, "search", [{"item_id": "a", "score": 2.0}, {"item_id": hostile}], "m", "3", "exp",
                    "b", latency_ms=1.5, ts=at),
             record("r2", None, "recommendations", [{"item_id": "c", "score": np.float32(0.5)}], ts=at),
             record("r3", "u3", "search", [], ts=at)]  # (nothing shown: no row)
    assert all("\n" not in line and line.isascii() for line in lines)
    assert store_lines(con, lines) == 3 and store_lines(con, []) == 0
    assert con.execute("SELECT * FROM exposures").fetchall() == [
        ("r1", at, hostile, "a", 1, 2.0, "search", "m", "3", "exp", "b", 1.5, None),
        ("r1", at, hostile, hostile, 2, None, "search", "m", "3", "exp", "b", 1.5, None),
        ("r2", at, None, "c", 1, 0.5, "recommendations", None, None, None, None, None, None)]


def test_the_rows_of_forgotten_users_are_refused_the_others_stored_with_their_positions(tmp_path):
    from huaxiang.experiments.exposures import store_lines
    db = str(tmp_path / "s.duckdb")
    con = store.connect(db)
    items = [{"item_id": "i1", "score": 1.0}, {"item_id": "i2", "score": 0.5}]
    assert store_lines(con, [record("q0", "gone", "search", items)]) == 2  # (not forgotten yet)
    forget_user(con, db, "gone")
    assert con.execute("SELECT count(*) FROM exposures").fetchone()[0] == 0
    lines = [record(q, u, "search", items) for q, u in (("q1", "stays"), ("q2", "gone"), ("q3", None), ("q4", "stays"))]
    assert store_lines(con, lines) == 6
    assert store_lines(con, [record("q7", "gone", "search", items)]) == 0
    assert con.execute("SELECT request_id, user_id, position FROM exposures ORDER BY ALL").fetchall() == [
        ("q1", "stays", 1), ("q1", "stays", 2), ("q3", None, 1), ("q3", None, 2), ("q4", "stays", 1),
        ("q4", "stays", 2)]


def test_the_stores_sink_writes_under_the_lock_it_is_given(tmp_path):
    """The embedded server's sink holds the write lock, under which a deletion writes the queue and then deletes:
    no write can look the forgotten users up before a deletion and insert after it."""
    from huaxiang.experiments.exposures import store_sink
    con = store.connect(str(tmp_path / "s.duckdb"))
    lock = threading.RLock()
    sink = store_sink(con, lock)
    done = threading.Event()
    with lock:
        writer = threading.Thread(target=lambda: (sink([record("r1", "u1", "search", [{"item_id": "a"}])]),
                                                  done.set()))
        writer.start()
        assert not done.wait(0.3)  # (waits for the lock)
        sink([record("r0", "u1", "search", [{"item_id": "b"}])])  # (the holder itself may write: a re-entrant lock)
    assert done.wait(10)
    writer.join()
    assert con.execute("SELECT request_id FROM exposures").fetchall() == [("r0",), ("r1",)]
