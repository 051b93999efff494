"""Events' optional `request_id` (the answer a click, cart or purchase came from): a store made before it gains the
column; ingest validates it (a string of at most 64 characters) and leaves it out of content keys, so that a file
read before it came is still recognised when read again; Parquet inputs without it read as NULL (DuckDB and Spark);
the API documents it."""
from __future__ import annotations

import shutil

import duckdb
import pandas as pd
import pytest

from huaxiang import schema, store
from huaxiang.errors import HuaxiangError
from huaxiang.folders import Folder
from huaxiang.ingest import ingest_file, ingest_records
from huaxiang.online.source import _input
from huaxiang.scale import engine

# the events table as stores were made before request_id (its columns, in order)
OLD_COLUMNS = ("event_id", "user_id", "item_id", "category_id", "type", "ts", "price", "quantity", "query",
               "session_id")
OLD_DDL = ("CREATE TABLE events (event_id VARCHAR, user_id VARCHAR, item_id VARCHAR, category_id VARCHAR, "
           "type VARCHAR, ts TIMESTAMP, price DOUBLE, quantity DOUBLE, query VARCHAR, session_id VARCHAR)")
# the content key as it was computed before request_id: every column but the key, in order
OLD_KEY = ("left(md5(concat_ws('|', " + ", ".join(f"coalesce(CAST({c} AS VARCHAR), '')" for c in OLD_COLUMNS[1:])
           + ")), 24)")

CSV = ("user_id,item_id,type,ts,price,session_id\n"
       "u1,a,view,2026-11-01 10:00:00,,s1\n"
       "u1,a,buy,2026-11-01 10:05:00,9.5,s1\n"
       "u1,a,buy,2026-11-01 10:05:00,9.5,s1\n"  # a true repeat: kept, as the second occurrence
       "u2,b,click,1793527200,,s2\n")


@pytest.fixture
def con(tmp_path):
    c = store.connect(str(tmp_path / "s.duckdb"))
    yield c
    c.close()


def rows(con, sql, params=None):
    return con.execute(sql, params).fetchall()


def test_a_store_made_before_request_ids_gains_the_column_and_new_events_fill_it(tmp_path):
    db = str(tmp_path / "old.duckdb")
    raw = duckdb.connect(db)
    raw.execute(OLD_DDL)
    raw.execute("INSERT INTO events VALUES ('e0', 'u1', 'a', NULL, 'view', '2026-11-01 09:00:00', NULL, NULL, "
                "NULL, 's0')")
    raw.execute("CREATE INDEX events_event_id ON events (event_id)")  # as the online writer makes it
    raw.close()
    con = store.connect(db)
    assert [c for (c,) in rows(con, "SELECT column_name FROM duckdb_columns() WHERE table_name = 'events' "
                                    "ORDER BY column_index")] == [*OLD_COLUMNS, "request_id"]
    report = ingest_records(con, [
        {"event_id": "e1", "user_id": "u1", "item_id": "a", "type": "click", "ts": "2026-11-01T10:00:00",
         "session_id": "s1", "request_id": "9f86d081884c7d659a2feaa0c55ad015"},
        {"event_id": "e2", "user_id": "u1", "item_id": "a", "type": "buy", "ts": "2026-11-01T10:01:00",
         "price": 3, "session_id": "s1"}], "api:1", future_tolerance_s=10 ** 9)
    assert report.added == {"events": 2} and report.quarantined == 0
    assert report.new_events[0]["request_id"] == "9f86d081884c7d659a2feaa0c55ad015"
    assert rows(con, "SELECT event_id, session_id, request_id FROM events ORDER BY event_id") == [
        ("e0", "s0", None), ("e1", "s1", "9f86d081884c7d659a2feaa0c55ad015"), ("e2", "s1", None)]
    con.close()
    again = store.connect(db)  # (the column is there: nothing to add)
    assert rows(again, "SELECT count(*) FROM events")[0][0] == 3
    again.close()


def test_content_keys_leave_request_id_out_so_an_old_file_read_again_finds_its_duplicates(tmp_path):
    path = tmp_path / "old.csv"
    path.write_text(CSV)
    # a store made before request_id, holding this file as the ingest of that time stored it
    db = str(tmp_path / "old.duckdb")
    raw = duckdb.connect(db)
    raw.execute("SET TimeZone = 'UTC'")
    raw.execute(OLD_DDL)
    fresh = store.connect(str(tmp_path / "fresh.duckdb"))
    assert ingest_file(fresh, str(path), "csv").added == {"events": 4}
    stored = fresh.execute(f"SELECT {', '.join(OLD_COLUMNS)} FROM events ORDER BY ALL").df()
    # today's keys are the keys of that time: the hash of the old columns, then the occurrence number
    assert sorted(rows(fresh, "SELECT event_id FROM events")) == sorted(rows(fresh, f"""
        SELECT {OLD_KEY} || '-' || row_number() OVER (PARTITION BY {OLD_KEY} ORDER BY ts) FROM events"""))
    fresh.close()
    raw.register("stored", stored)
    raw.execute("INSERT INTO events SELECT * FROM stored")
    raw.close()
    con = store.connect(db)  # gains request_id
    report = ingest_file(con, str(path), "csv")
    assert report.added == {"events": 0} and report.duplicates == {"events": 4} and report.quarantined == 0
    # the same rows sent again with a request_id are the same events (the key leaves it out): duplicates too
    with_ids = tmp_path / "with_ids.csv"
    with_ids.write_text(CSV.replace("session_id\n", "session_id,request_id\n", 1).replace("s1\n", "s1,r1\n")
                        .replace("s2\n", "s2,r2\n"))
    report = ingest_file(con, str(with_ids), "csv")
    assert report.added == {"events": 0} and report.duplicates == {"events": 4}
    assert rows(con, "SELECT count(*), count(request_id) FROM events") == [(4, 0)]
    con.close()


def test_request_id_is_an_optional_string_of_at_most_64_characters(con, tmp_path):
    base = {"user_id": "u1", "item_id": "a", "type": "click", "ts": "2026-11-01T10:00:00"}
    report = ingest_records(con, [
        {**base, "event_id": "ok", "request_id": "r" * 64},
        {**base, "event_id": "long", "request_id": "r" * 65},
        {**base, "event_id": "number", "request_id": 12345},
        {**base, "event_id": "blank", "request_id": "  "},
        {**base, "event_id": "none"},
        {**base, "event_id": "nul", "request_id": "a\x00b"},
    ], "api:1", future_tolerance_s=10 ** 9)
    assert report.added == {"events": 3}
    assert report.rejected == [(2, "request_id", "request_id longer than 64 characters (65)"),
                               (3, "request_id", "request_id must be a string, not a JSON number"),
                               (6, "request_id", "NUL character in request_id")]
    assert rows(con, "SELECT event_id, request_id FROM events ORDER BY 1") == [
        ("blank", None), ("none", None), ("ok", "r" * 64)]
    path = tmp_path / "e.csv"
    path.write_text("event_id,user_id,item_id,type,ts,request_id\n"
                    f"f1,u1,a,click,2026-11-01 10:00:00,{'x' * 70}\nf2,u1,a,click,2026-11-01 10:00:00,r9\n")
    report = ingest_file(con, str(path), "csv", future_tolerance_s=10 ** 9)
    assert report.added == {"events": 1}
    assert rows(con, "SELECT line, field, reason FROM quarantine WHERE source = ?", [str(path)]) == [
        (2, "request_id", "request_id longer than 64 characters (70)")]


def rows_of_parquet(folder, frame: pd.DataFrame, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(folder / name, index=False)


def events_frame(users, request_ids=None) -> pd.DataFrame:
    f = pd.DataFrame({"event_id": [f"e-{u}" for u in users], "user_id": users, "item_id": "a", "type": "click",
                      "ts": pd.Timestamp("2026-11-01 10:00:00")})
    return f if request_ids is None else f.assign(request_id=request_ids)


def inputs(tmp_path, with_new_partition: bool):
    """An input folder (as `huaxiang export` writes it) whose first day predates request_id; with
    `with_new_partition`, a second day has it."""
    inp = tmp_path / "in"
    shutil.rmtree(inp, ignore_errors=True)
    rows_of_parquet(inp / "events" / "date=2026-11-01", events_frame(["u1", "u2"]), "old.parquet")
    if with_new_partition:
        rows_of_parquet(inp / "events" / "date=2026-11-02", events_frame(["u3"], ["r3"]), "new.parquet")
    return inp


def test_parquet_inputs_without_request_id_read_it_as_null(tmp_path):
    for mixed in (False, True):
        inp = inputs(tmp_path, mixed)
        expected = [("u1", None), ("u2", None)] + ([("u3", "r3")] if mixed else [])
        ib = engine.connect("duckdb")
        engine.register_inputs(ib, "duckdb", Folder(str(inp)))
        assert ib.raw_sql("SELECT user_id, request_id FROM events ORDER BY 1").fetchall() == expected
        assert ib.raw_sql("SELECT count(*) FROM items").fetchall() == [(0,)]  # (no items folder: empty)
        served = duckdb.connect()
        _input(served, "events", inp / "events")
        assert served.execute("SELECT user_id, request_id FROM events ORDER BY 1").fetchall() == expected
    # a required column missing is an error naming it
    rows_of_parquet(inp / "events" / "date=2026-11-01", events_frame(["u1"]).drop(columns="user_id"), "old.parquet")
    shutil.rmtree(inp / "events" / "date=2026-11-02")
    with pytest.raises(HuaxiangError, match="no user_id column"):
        engine.register_inputs(engine.connect("duckdb"), "duckdb", Folder(str(inp)))
    with pytest.raises(HuaxiangError, match="no user_id column"):
        _input(duckdb.connect(), "events", inp / "events")


@pytest.mark.slow
def test_spark_reads_inputs_with_and_without_request_id(tmp_path):
    pytest.importorskip("pyspark", reason="the [spark] extra is part of the README's set-up")
    ib = engine.connect("spark")
    for mixed in (False, True):
        inp = inputs(tmp_path, mixed)
        engine.register_inputs(ib, "spark", Folder(str(inp)))
        got = sorted((r.user_id, r.request_id) for r in ib._session.sql("SELECT * FROM events").collect())
        # (the files' schemas are merged: the older files read request_id as NULL, the newer as written)
        assert got == [("u1", None), ("u2", None)] + ([("u3", "r3")] if mixed else [])
        assert dict(ib._session.table("events").dtypes)["request_id"] == "string"


def test_the_events_body_documents_request_id():
    from huaxiang.serve.api.write import events_body_schema
    from huaxiang.serve.service import ServeSettings
    body = events_body_schema(ServeSettings())["requestBody"]["content"]["application/json"]["schema"]
    event = body["properties"]["events"]["items"]
    assert event["properties"]["request_id"]["maxLength"] == schema.MAX_REQUEST_ID_CHARS == 64
    assert "request_id" not in event["required"]
