"""Bad rows go to `quarantine` (file, line, field, reason); good rows land once; an interrupted
ingest leaves the store exactly as it was (Ctrl-C in a progress callback, and a real kill -9)."""
from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

import huaxiang
from huaxiang import schema, store
from huaxiang.config import load_config
from huaxiang.errors import HuaxiangError
from huaxiang.ingest import ingest_file, ingest_records, readers
from huaxiang.ingest.validate import validation_sql

SRC = Path(huaxiang.__file__).resolve().parents[1]  # the folder holding the `huaxiang` package


# ---------------------------------------------------------------- helpers
@pytest.fixture
def db(tmp_path) -> str:
    return str(tmp_path / "store.duckdb")


@pytest.fixture
def con(db):
    c = store.connect(db)
    yield c
    c.close()


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def quarantine(con) -> list[tuple]:
    return con.execute("SELECT source, line, target, field, reason FROM quarantine ORDER BY line, target").fetchall()


def balanced(report, target: str = "events") -> bool:
    return report.rows_read == report.added[target] + report.duplicates[target] + report.quarantined


def snapshot(con) -> dict[str, list[tuple]]:
    """Every row of every table, sorted, to compare a store before and after."""
    out = {}
    for name in (*schema.TABLES, "quarantine", "ingests"):
        out[name] = sorted(con.execute(f"SELECT * FROM {name}").fetchall(), key=repr)
    return out


def taobao_lines(n: int, start_user: int = 0) -> str:
    """`n` valid Taobao rows, distinct in content."""
    types = ("pv", "cart", "fav", "buy")
    return "".join(f"{start_user + i // 50},{100000 + i},{i % 97},{types[i % 4]},{1511544070 + i}\n"
                   for i in range(n))


FUTURE = (datetime.now(timezone.utc) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")

# line -> (field, words the reason contains); line 1 is the header
BAD_ROWS = {
    3: (None, "expected 7 fields, found 8"),
    4: ("price", "not a number: 'abc'"),
    5: ("type", "unknown event type 'teleport'"),
    6: ("ts", "timestamp out of range"),
    7: ("ts", "timestamp in the future"),
    8: ("user_id", "missing user_id"),
    9: ("item_id", "invalid UTF-8 in item_id"),
    10: ("item_id", "item_id longer than 256 characters (300)"),
    11: ("query", "query longer than 20000 characters (20001)"),
    12: ("event_id", "duplicate event_id e1 (first at line 2)"),
    13: ("price", "negative price: '-1'"),
    14: ("ts", "not a timestamp"),
    15: ("item_id", "missing item_id (required for a view event)"),
}


def messy_csv(path: Path) -> Path:
    lines = [
        b"event_id,user_id,item_id,type,ts,price,query",
        b"e1,u1,i1,view,2021-03-04 05:06:07,1.5,",                 # 2 good
        b"e2,u1,i1,view,2021-03-04 05:06:07,1.5,,extra",           # 3 one field too many
        b"e3,u1,i1,view,2021-03-04 05:06:07,abc,",                 # 4 price not a number
        b"e4,u1,i1,teleport,2021-03-04 05:06:07,,",                # 5 unknown type
        b"e5,u1,i1,view,1989-12-31 23:59:59,,",                    # 6 before 1990
        b"e6,u1,i1,view," + FUTURE.encode() + b",,",               # 7 in the future
        b"e7,,i1,view,2021-03-04 05:06:07,,",                      # 8 no user
        b"e8,u1,i\xff\xfe1,view,2021-03-04 05:06:07,,",            # 9 invalid UTF-8
        b"e9,u1," + b"x" * 300 + b",view,2021-03-04 05:06:07,,",   # 10 id too long
        b"e10,u1,i1,search,2021-03-04 05:06:07,," + b"q" * 20001,  # 11 text too long
        b"e1,u2,i2,buy,2021-03-04 05:06:07,2,",                    # 12 duplicate event_id
        b"e11,u1,i1,buy,2021-03-04 05:06:07,-1,",                  # 13 negative price
        b"e12,u1,i1,view,yesterday,,",                             # 14 not a timestamp
        b"e13,u1,,view,2021-03-04 05:06:07,,",                     # 15 a view needs an item
        b"e14,u3,,search,1614834367,,red shoes",                   # 16 good: a search needs no item
        b"",                                                       # 17 blank: skipped
        b"e15,u3,i3,Purchase,1614834367000,0,",                    # 18 good: alias, epoch ms, free
    ]
    return write(path, b"\n".join(lines) + b"\n")


# ---------------------------------------------------------------- quarantine
def test_bad_rows_are_quarantined_with_line_field_and_reason(con, tmp_path):
    path = messy_csv(tmp_path / "messy.csv")
    report = ingest_file(con, str(path), "csv")

    got = quarantine(con)
    assert [line for _, line, _, _, _ in got] == sorted(BAD_ROWS)
    for source, line, target, field, reason in got:
        want_field, words = BAD_ROWS[line]
        assert source == str(path)
        assert field == want_field, (line, reason)
        assert words in reason, (line, reason)
        assert target == ("*" if want_field is None else "events")
    # the raw values come along, cut to size, for the rows that could be split into fields
    raw = dict(con.execute("SELECT line, raw FROM quarantine").fetchall())
    assert '"price":"abc"' in raw[4].replace(" ", "") and len(raw[11]) < 2000

    assert sorted(con.execute("SELECT event_id, user_id, item_id, type, ts, price, query FROM events").fetchall()) == [
        ("e1", "u1", "i1", "view", datetime(2021, 3, 4, 5, 6, 7), 1.5, None),
        ("e14", "u3", None, "search", datetime(2021, 3, 4, 5, 6, 7), None, "red shoes"),
        ("e15", "u3", "i3", "buy", datetime(2021, 3, 4, 5, 6, 7), 0.0, None),
    ]
    assert report.rows_read == 16  # 17 lines after the header, one of them blank
    assert report.added == {"events": 3} and report.duplicates == {"events": 0}
    assert report.quarantined == len(BAD_ROWS) == store.count(con, "quarantine")
    assert balanced(report)
    assert report.reasons["(unreadable line)"] == 1 and report.reasons["events.ts"] == 3
    assert sum(report.reasons.values()) == report.quarantined
    assert con.execute("SELECT source, format, rows_read, rows_added, rows_duplicate, rows_quarantined "
                       "FROM ingests").fetchall() == [(str(path), "csv", 16, 3, 0, len(BAD_ROWS))]


def test_reingest_adds_nothing_and_does_not_double_the_quarantine(con, tmp_path):
    path = messy_csv(tmp_path / "messy.csv")
    first = ingest_file(con, str(path), "csv")
    before = snapshot(con)
    second = ingest_file(con, str(path), "csv")

    assert second.rows_read == first.rows_read
    assert second.added == {"events": 0} and second.duplicates == {"events": first.added["events"]}
    assert second.quarantined == first.quarantined
    assert balanced(second)
    after = snapshot(con)
    assert after["events"] == before["events"]
    strip = lambda rows: sorted(r[:6] + r[7:] for r in rows)  # noqa: E731 -- ingested_at (7th) differs
    assert strip(after["quarantine"]) == strip(before["quarantine"])
    assert len(after["ingests"]) == 2


def test_reingest_of_a_file_without_ids_keeps_true_repeats_once(con, tmp_path):
    # no event_id: the content key tells a re-read from a repeat inside the file
    path = write(tmp_path / "tb.csv", "1,2,3,pv,1511544070\n1,2,3,pv,1511544070\n1,2,3,buy,1511544070\n")
    first = ingest_file(con, str(path), "taobao")
    assert first.added == {"events": 3}  # the repeated view happened twice
    second = ingest_file(con, str(path), "taobao")
    assert second.added == {"events": 0} and second.duplicates == {"events": 3}
    assert store.count(con, "events") == 3
    # a longer version of the file adds only its new lines
    write(tmp_path / "tb.csv", "1,2,3,pv,1511544070\n1,2,3,pv,1511544070\n1,2,3,buy,1511544070\n"
                               "1,2,3,pv,1511544070\n")
    third = ingest_file(con, str(path), "taobao")
    assert third.added == {"events": 1} and store.count(con, "events") == 4


def test_a_fixed_file_replaces_its_quarantine(con, tmp_path):
    path = write(tmp_path / "e.csv", "user_id,item_id,type,ts\nu,i,view,2021-01-01\nu,i,jump,2021-01-01\n")
    ingest_file(con, str(path), "csv")
    assert [r[3] for r in quarantine(con)] == ["type"]
    write(path, "user_id,item_id,type,ts\nu,i,view,2021-01-01\nu,i,fav,2021-01-01\n")
    report = ingest_file(con, str(path), "csv")
    assert report.added == {"events": 1} and report.duplicates == {"events": 1}
    assert quarantine(con) == []


@pytest.mark.parametrize("alias,canonical", [
    *sorted(schema.EVENT_TYPE_ALIASES.items()),
    *((t, t) for t in schema.EVENT_TYPES),
    ("PV", "view"), (" Purchase ", "buy"), ("AddToCart", "cart"), ("BUY", "buy"),
])
def test_event_type_aliases(con, tmp_path, alias, canonical):
    path = write(tmp_path / "e.csv", f"user_id,item_id,type,ts\nu,i,{alias},2021-01-01\n")
    report = ingest_file(con, str(path), "csv")
    assert report.quarantined == 0
    assert con.execute("SELECT type FROM events").fetchall() == [(canonical,)]


@pytest.mark.parametrize("raw,expected", [
    ("1614834367", datetime(2021, 3, 4, 5, 6, 7)),                  # epoch seconds
    ("1614834367000", datetime(2021, 3, 4, 5, 6, 7)),               # epoch milliseconds
    ("1614834367.5", datetime(2021, 3, 4, 5, 6, 7, 500000)),
    ("2021-03-04T05:06:07Z", datetime(2021, 3, 4, 5, 6, 7)),
    ("2021-03-04 13:06:07+08:00", datetime(2021, 3, 4, 5, 6, 7)),   # offsets are turned into UTC
    ("2021-03-04", datetime(2021, 3, 4)),
    (" 2021-03-04 05:06:07 ", datetime(2021, 3, 4, 5, 6, 7)),
    ("1990-01-01", datetime(1990, 1, 1)),                            # the earliest accepted instant
])
def test_timestamp_forms(con, tmp_path, raw, expected):
    path = write(tmp_path / "e.csv", f'user_id,item_id,type,ts\nu,i,view,"{raw}"\n')
    report = ingest_file(con, str(path), "csv")
    assert report.quarantined == 0, quarantine(con)
    assert con.execute("SELECT ts FROM events").fetchall() == [(expected,)]


@pytest.mark.parametrize("raw", ["1989-12-31 23:59:59", "631151999", "-1", "0", FUTURE, "2999-01-01",
                                 "99999999999999", "2021-02-30", "tomorrow", "NaN"])
def test_timestamps_out_of_range_or_unreadable(con, tmp_path, raw):
    path = write(tmp_path / "e.csv", f'user_id,item_id,type,ts\nu,i,view,"{raw}"\n')
    ingest_file(con, str(path), "csv")
    ((_, line, target, field, reason),) = quarantine(con)
    assert (line, target, field) == (2, "events", "ts")
    assert "timestamp" in reason
    assert store.count(con, "events") == 0


def test_invalid_json_lines_are_quarantined(con, tmp_path):
    path = write(tmp_path / "e.jsonl", b"\n".join([
        b'{"user_id": "u", "item_id": "i", "type": "view", "ts": 1614834367}',
        b'{"user_id": "u", "item_id": "i", "type": "view", "ts": ',         # 2 cut short
        b'["u", "i", "view", 1614834367]',                                  # 3 not an object
        b'{"user_id": "\\ud800", "item_id": "i", "type": "view", "ts": 1614834367}',  # 4 lone surrogate
        b'{"user_id": "u\xff", "item_id": "i", "type": "view", "ts": 1614834367}',    # 5 invalid UTF-8
        b'{"user_id": "u", "item_id": "i", "type": "view", "ts": ' + b"9" * 5000 + b"}",  # 6 huge number
        b'{"user_id": "u", "item_id": "i2", "type": "fav", "ts": "2021-03-04T05:06:07Z", "price": null}',
    ]) + b"\n")
    report = ingest_file(con, str(path), "jsonl")
    got = [(line, target, field) for _, line, target, field, _ in quarantine(con)]
    assert got == [(2, "*", None), (3, "*", None), (4, "events", "user_id"), (5, "events", "user_id"),
                   (6, "*", None)]
    reasons = {line: reason for _, line, _, _, reason in quarantine(con)}
    assert reasons[2].startswith("invalid JSON") and "object" in reasons[3]
    assert reasons[6].startswith("invalid JSON")
    assert sorted(r[0] for r in con.execute("SELECT item_id FROM events").fetchall()) == ["i", "i2"]
    assert balanced(report)


def test_jsonl_keys_may_come_and_go_across_chunks(con, tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "CHUNK_ROWS", 2)
    lines = ['{"user_id": "u0", "item_id": "i", "type": "view", "ts": 1614834367, "price": 1}',
             '{"user_id": "u1", "item_id": "i", "type": "view", "ts": 1614834367}',
             '{"user_id": "u2", "item_id": "i", "type": "view", "ts": 1614834367}',
             '{"user_id": "u3", "item_id": "i", "type": "view", "ts": 1614834367}',
             '{"user_id": "u4", "item_id": "i", "type": "search", "ts": 1614834367, "query": "q"}',
             'not json']
    path = write(tmp_path / "e.jsonl", "\n".join(lines) + "\n")
    assert len(list(readers.jsonl_chunks(str(path)))) == 3  # u0 u1 | u2 u3 | u4 + the bad line
    report = ingest_file(con, str(path), "jsonl")
    assert report.added == {"events": 5} and report.quarantined == 1
    assert sorted(con.execute("SELECT user_id, price, query FROM events").fetchall()) == [
        ("u0", 1.0, None), ("u1", None, None), ("u2", None, None), ("u3", None, None), ("u4", None, "q")]


def test_oversized_csv_field_beyond_the_csv_limit(con, tmp_path):
    big = "x" * 200_000
    path = write(tmp_path / "e.csv", f"user_id,item_id,type,ts\nu,i,view,2021-01-01\nu,{big},view,2021-01-01\n"
                                     "u,i2,view,2021-01-01\n")
    report = ingest_file(con, str(path), "csv")
    assert [r[1] for r in quarantine(con)] == [3]
    assert sorted(r[0] for r in con.execute("SELECT item_id FROM events").fetchall()) == ["i", "i2"]
    assert balanced(report)


def test_unusable_header_is_an_error_and_changes_nothing(con, tmp_path):
    path = write(tmp_path / "e.csv", "user_id,user_id,ts\nu,u,2021-01-01\n")
    with pytest.raises(HuaxiangError, match="duplicate column"):
        ingest_file(con, str(path), "csv")
    assert store.count(con, "quarantine") == 0 and store.count(con, "ingests") == 0


def test_a_source_without_a_type_column_is_quarantined_not_an_error(con, tmp_path):
    path = write(tmp_path / "e.csv", "user_id,item_id,ts\nu,i,2021-01-01\nu,,2021-01-01\n")
    report = ingest_file(con, str(path), "csv")
    assert report.added == {"events": 0} and report.quarantined == 2
    assert [(line, field, reason) for _, line, _, field, reason in quarantine(con)] == [
        (2, "type", "missing type: the source has no such column"),
        (3, "type", "missing type: the source has no such column")]


def test_reviews_without_a_text_column_are_quarantined_not_an_error(con, tmp_path):
    path = write(tmp_path / "r.csv", "user_id,rating\nu,4\n")
    report = ingest_file(con, str(path), "csv", table="reviews")
    assert report.added == {"reviews": 0}
    assert [(line, target, field) for _, line, target, field, _ in quarantine(con)] == [(2, "reviews", "text")]


@pytest.mark.parametrize("blank", ["", " ", "\t", " \t ", "\x0b"])
def test_a_blank_user_id_is_missing(con, tmp_path, blank):
    path = write(tmp_path / "e.csv", f'user_id,item_id,type,ts\n"{blank}",i,view,2021-01-01\n')
    ingest_file(con, str(path), "csv")
    assert [(line, field) for _, line, _, field, _ in quarantine(con)] == [(2, "user_id")]
    ingest_file(con, str(path), "csv", namespace="ns")  # a namespace does not make it an id
    assert [(line, field) for _, line, _, field, _ in quarantine(con)] == [(2, "user_id")]
    assert store.count(con, "events") == 0


def test_surrounding_whitespace_is_not_part_of_a_value(con, tmp_path):
    path = write(tmp_path / "e.tsv", 'user_id\titem_id\ttype\tts\tprice\n" u1\t"\t i1 \t view\t2021-01-01 \t 2.5 \n')
    ingest_file(con, str(path), "tsv")
    assert con.execute("SELECT user_id, item_id, type, price FROM events").fetchall() == [("u1", "i1", "view", 2.5)]


def test_a_truncated_gzip_file_is_an_error_and_changes_nothing(con, tmp_path):
    whole = gzip.compress(taobao_lines(20_000).encode())
    path = write(tmp_path / "tb.csv.gz", whole[: len(whole) // 2])
    before = snapshot(con)
    with pytest.raises(HuaxiangError, match="not a readable gzip file"):
        ingest_file(con, str(path), "taobao")
    assert snapshot(con) == before
    write(path, whole)
    assert ingest_file(con, str(path), "taobao").added == {"events": 20_000}


# ---------------------------------------------------------------- interrupted ingests
def seed(con, tmp_path) -> None:
    """Some committed data of every kind, so that 'unchanged' means something."""
    ingest_file(con, str(messy_csv(tmp_path / "seed.csv")), "csv")
    ingest_file(con, str(write(tmp_path / "seed_orders.txt", " 00001 19970101  1   11.77\n")), "cdnow")


def test_ctrl_c_in_progress_callback_leaves_the_store_unchanged(con, tmp_path, monkeypatch):
    seed(con, tmp_path)
    before = snapshot(con)
    monkeypatch.setattr(readers, "CHUNK_ROWS", 1000)
    # ~2.8 MB in 1,000-row chunks; progress fires as the reader goes (every few KiB)
    path = write(tmp_path / "big.csv", taobao_lines(100_000) + "1,2,3,jump,1511544070\n")
    # the same file's quarantine from an earlier run must survive the interrupted re-run too
    con.execute("INSERT INTO quarantine (source, line, target, field, reason, raw) "
                "VALUES (?, 7, 'events', 'type', 'old verdict', '{}')", [str(path)])
    before = snapshot(con)
    calls, staged = [], []

    def progress(done, total):
        calls.append(done)
        if done > total // 2 and not staged:  # half-way through the file
            staged.append(con.execute("SELECT count(*) FROM _stage_events").fetchone()[0])
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest_file(con, str(path), "taobao", progress=progress)
    assert staged and staged[0] > 1000, "the interrupt must land after some chunks were staged"
    assert calls[-1] < 0.6 * os.path.getsize(path)
    assert snapshot(con) == before
    assert not con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE '_stage%'").fetchone()[0]

    # the connection is still usable, and the file ingests in full afterwards
    report = ingest_file(con, str(path), "taobao")
    assert report.added == {"events": 100_000} and report.quarantined == 1
    assert store.count(con, "events") == len(before["events"]) + 100_000


KILLED_INGEST = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {src!r})
    from huaxiang import store
    from huaxiang.ingest import ingest_file, readers
    readers.CHUNK_ROWS = 2000
    con = store.connect({db!r})
    calls = []

    def progress(done, total):
        calls.append(done)
        if done > total // 3:  # a third of the way through the file
            staged = con.execute("SELECT count(*) FROM _stage_events").fetchone()[0]
            with open({marker!r} + ".tmp", "w") as f:
                f.write(str(staged))
            import os
            os.replace({marker!r} + ".tmp", {marker!r})
            time.sleep(120)  # killed here, mid-transaction

    ingest_file(con, {path!r}, "taobao", progress=progress)
    open({marker!r} + ".finished", "w").close()
""")


@pytest.mark.slow
def test_kill_9_mid_ingest_leaves_the_store_unchanged(db, tmp_path):
    path = write(tmp_path / "big.csv", taobao_lines(120_000, start_user=10_000))
    con = store.connect(db)
    seed(con, tmp_path)
    # an earlier verdict on the same file: the ingest deletes it first, inside its transaction
    con.execute("INSERT INTO quarantine (source, line, target, field, reason, raw) "
                "VALUES (?, 7, 'events', 'type', 'old verdict', '{}')", [str(path)])
    before = snapshot(con)
    con.close()

    marker = str(tmp_path / "progress.marker")
    script = tmp_path / "ingest.py"
    script.write_text(KILLED_INGEST.format(src=str(SRC), db=db, path=str(path), marker=marker))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(marker):
            if proc.poll() is not None:
                pytest.fail(f"the ingest ended before it was killed: {proc.stdout.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the ingest never reported progress")
            time.sleep(0.05)
        staged = int(Path(marker).read_text())
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert staged > 2000, "the kill must land after some chunks were staged"
    assert not os.path.exists(marker + ".finished")

    con = store.connect(db)
    try:
        assert snapshot(con) == before
        # the store is healthy: the same file now ingests in full
        report = ingest_file(con, str(path), "taobao")
        assert report.added == {"events": 120_000}
        assert store.count(con, "events") == len(before["events"]) + 120_000
    finally:
        con.close()


@pytest.mark.parametrize("namespace", ["", "a:b", ":"])
def test_a_namespace_is_a_tenant_name_without_the_separator(con, tmp_path, namespace):
    """The tenant of an id is the text before its first ':' (schema.tenant_of), so a namespace with one would be
    read as another tenant: refused before anything is stored."""
    path = write(tmp_path / "e.csv", "user_id,item_id,type,ts\nu1,i,view,2021-01-01\n")
    with pytest.raises(HuaxiangError, match="namespace"):
        ingest_file(con, str(path), "csv", namespace=namespace)
    assert store.count(con, "events") == 0


def test_the_tenant_rule_is_the_text_before_the_first_colon():
    assert [schema.tenant_of(i) for i in ("shop:42", "shop:session:42", "plain", ":x", "")] == \
        ["shop", "shop", "", "", ""]
    con = duckdb.connect()
    rows = con.execute(f"SELECT {schema.tenant_sql('i')} FROM (SELECT unnest(?) AS i)",
                       [["shop:42", "shop:session:42", "plain", ":x", ""]]).fetchall()
    assert [r[0] for r in rows] == ["shop", "shop", "", "", ""]


# ---------------------------------------------------------------- in-memory batches and re-sent rows
def view(**kw) -> dict:
    return {"user_id": "u1", "item_id": "i1", "type": "view", "ts": "2021-03-04T05:06:07Z", **kw}


def rejected(con, source: str) -> list[tuple]:
    return con.execute("SELECT line, field, reason FROM quarantine WHERE source = ? ORDER BY line", [source]).fetchall()


def iso(delta: timedelta) -> str:
    return (datetime.now(timezone.utc) + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_timestamp_past_the_clock_skew_tolerance_is_in_the_future(con, tmp_path):
    """One event dated tomorrow would move its tenant's reference time (its latest event) ahead a day."""
    batch = [view(event_id="soon", ts=iso(timedelta(minutes=2))),        # within the 5 minutes of clock skew
             view(event_id="later", ts=iso(timedelta(hours=1))),
             view(event_id="tomorrow", ts=iso(timedelta(hours=23)))]
    report = ingest_records(con, batch, "api:1")
    assert [(line, field) for line, field, _ in rejected(con, "api:1")] == [(2, "ts"), (3, "ts")]
    assert all(r.startswith("timestamp in the future: ") and "300 s after the time of ingest" in r
               for _, _, r in rejected(con, "api:1"))
    assert report.added == {"events": 1} and report.quarantined == 2
    # the tolerance is a setting: none at all, or two hours
    strict = ingest_records(con, [view(event_id="s", ts=iso(timedelta(minutes=2)))], "api:2", future_tolerance_s=0)
    assert strict.quarantined == 1 and rejected(con, "api:2")[0][1] == "ts"
    loose = ingest_records(con, [view(event_id="l", ts=iso(timedelta(hours=1)))], "api:3", future_tolerance_s=7200)
    assert loose.added == {"events": 1}
    # the same for files, and the cut-off is a literal in the statement, not now()
    path = write(tmp_path / "e.csv", f"user_id,item_id,type,ts\nu,i,view,{iso(timedelta(hours=3))}\n")
    ingest_file(con, str(path), "csv")
    assert [(line, field) for line, field, _ in rejected(con, str(path))] == [(2, "ts")]
    assert "now()" not in validation_sql(schema.EVENTS, set(schema.EVENTS.names))
    cfg = tmp_path / "h.toml"
    cfg.write_text("future_tolerance_seconds = 60\n")
    assert load_config(str(cfg)).future_tolerance_seconds == 60 and load_config().future_tolerance_seconds == 300


def test_a_lone_surrogate_quarantines_its_row_not_the_batch(con):
    batch = [view(event_id="ok"), view(event_id="a", user_id="\ud800"), view(event_id="b", item_id="i\udfff"),
             view(event_id="c", type="search", query="shoes \udc00")]
    report = ingest_records(con, batch, "api:1")
    assert [(line, field) for line, field, _ in rejected(con, "api:1")] == [(2, "user_id"), (3, "item_id"),
                                                                            (4, "query")]
    assert all("invalid UTF-8 in " + field in reason for _, field, reason in rejected(con, "api:1"))
    assert report.added == {"events": 1} and [r[0] for r in con.execute("SELECT event_id FROM events").fetchall()] \
        == ["ok"]


@pytest.mark.parametrize("field,value,reason", [
    ("user_id", 12345, "user_id must be a string, not a JSON number"),
    ("user_id", True, "user_id must be a string, not a JSON boolean"),
    ("item_id", ["a"], "item_id must be a string, not a JSON array"),
    ("user_id", {"$ne": None}, "user_id must be a string, not a JSON object"),
    ("event_id", 7, "event_id must be a string, not a JSON number"),
    ("type", 1, "type must be a string, not a JSON number"),
    ("query", False, "query must be a string, not a JSON boolean"),
    ("price", True, "price must be a string or a number, not a JSON boolean"),
    ("ts", [1614834367], "ts must be a string or a number, not a JSON array"),
    ("quantity", {"n": 1}, "quantity must be a string or a number, not a JSON object"),
    ("user_id", "u\x00", "NUL character in user_id"),
    ("query", "red\x00shoes", "NUL character in query"),
])
def test_records_are_held_to_their_json_types(con, field, value, reason):
    report = ingest_records(con, [view(event_id="ok"), view(**{"event_id": "bad", field: value})], "api:1")
    assert rejected(con, "api:1") == [(2, field, reason)]
    assert report.added == {"events": 1} and report.rejected == [(2, field, reason)]


def test_numbers_and_strings_are_both_read_for_numeric_and_time_columns(con):
    report = ingest_records(con, [view(event_id="a", price=2.5, quantity=2, ts=1614834367),
                                  view(event_id="b", price="2.5", quantity="2", ts="1614834367")], "api:1")
    assert report.quarantined == 0
    assert sorted(con.execute("SELECT event_id, price, quantity, ts FROM events").fetchall()) == [
        ("a", 2.5, 2.0, datetime(2021, 3, 4, 5, 6, 7)), ("b", 2.5, 2.0, datetime(2021, 3, 4, 5, 6, 7))]


def test_a_nul_byte_in_a_file_field_is_quarantined(con, tmp_path):
    path = write(tmp_path / "e.csv", b"user_id,item_id,type,ts\nu1,i\x001,view,2021-01-01\nu2,i2,view,2021-01-01\n")
    report = ingest_file(con, str(path), "csv")
    assert rejected(con, str(path)) == [(2, "item_id", "NUL character in item_id")]
    assert report.added == {"events": 1}


def test_a_resent_key_with_other_content_is_a_conflict(con, tmp_path):
    first = ingest_records(con, [view(event_id="e1", price=1), view(event_id="e2")], "api:1")
    assert first.added == {"events": 2}
    same = ingest_records(con, [view(event_id="e1", price=1)], "api:2")  # a plain resend
    assert same.duplicates == {"events": 1} and same.conflicts == 0 and same.quarantined == 0
    other = ingest_records(con, [view(event_id="e1", price=2), view(event_id="e2"), view(event_id="e3")], "api:3")
    assert other.conflicts == 1 and other.quarantined == 1
    assert other.added == {"events": 1} and other.duplicates == {"events": 1}
    assert other.rows_read == other.added["events"] + other.duplicates["events"] + other.quarantined
    assert rejected(con, "api:3") == [(1, "event_id", "event_id e1 already stored with different content")]
    assert con.execute("SELECT price FROM events WHERE event_id = 'e1'").fetchall() == [(1.0,)]  # the first kept
    assert con.execute("SELECT user_id FROM quarantine WHERE source = 'api:3'").fetchall() == [("u1",)]
    # files and orders alike
    path = write(tmp_path / "o.csv", "order_id,user_id,ts,amount\no1,u1,2021-01-01,5\no2,u1,2021-01-01,6\n")
    ingest_file(con, str(path), "csv", table="orders")
    path2 = write(tmp_path / "o2.csv", "order_id,user_id,ts,amount\no1,u1,2021-01-01,5\no2,u1,2021-01-01,7\n")
    again = ingest_file(con, str(path2), "csv", table="orders")
    assert again.conflicts == 1 and again.duplicates == {"orders": 1}
    assert rejected(con, str(path2)) == [(3, "order_id", "order_id o2 already stored with different content")]


def test_a_resent_batch_does_not_pile_up_in_the_quarantine(con, tmp_path):
    batch = [view(event_id="ok"), view(event_id="x", type="teleport"), "not an object", view(event_id="y", ts="soon")]
    first = ingest_records(con, batch, "api:1")
    rows = store.count(con, "quarantine")
    assert rows == 3 and first.quarantined == 3
    second = ingest_records(con, batch, "api:2")  # a fresh label, as the API gives every batch
    assert store.count(con, "quarantine") == rows
    assert second.quarantined == 3 and [line for line, _, _ in second.rejected] == [2, 3, 4]
    assert second.rejected == first.rejected and second.duplicates == {"events": 1}
    third = ingest_records(con, [*batch, view(event_id="z", type="jump")], "api:3")  # only the new one is added
    assert third.quarantined == 4 and rejected(con, "api:3") == [(5, "type", third.rejected[-1][2])]


def test_in_memory_batches_run_prepared_and_survive_a_rollback_and_a_file_between_them(con, tmp_path, monkeypatch):
    """The live path keeps its statements prepared and its temporary tables from batch to batch; a batch that
    fails half-way (its temporary tables created in the rolled-back transaction) and a file ingested on the same
    connection (whose staging tables come and go) leave the next batches working and counting right."""
    from huaxiang.ingest import pipeline, prepared

    real = pipeline._merge_keyed

    def broken(*args, **kw):
        raise RuntimeError("disk full")
    monkeypatch.setattr(pipeline, "_merge_keyed", broken)
    with pytest.raises(RuntimeError):
        ingest_records(con, [view(event_id="a")], "api:0")
    monkeypatch.setattr(pipeline, "_merge_keyed", real)
    assert store.count(con, "events") == 0

    def prepared_names() -> dict[str, str]:
        return {sql: name for sql, (name, _) in prepared._of(con).statements.items()}
    first = ingest_records(con, [view(event_id="a"), view(event_id="b", type="jump")], "api:1")
    second = ingest_records(con, [view(event_id="c"), view(event_id="d", ts="soon")], "api:2")
    names = prepared_names()  # (the first batch created the temporary tables: its statements were prepared again)
    assert ingest_records(con, [view(event_id="c")], "api:2b").duplicates == {"events": 1}
    assert prepared_names() == names and len(names) > 10
    assert first.added == second.added == {"events": 1} and first.quarantined == second.quarantined == 1
    assert [r[:2] for r in second.rejected] == [(2, "ts")] and second.new_events[0]["event_id"] == "c"

    path = write(tmp_path / "e.csv", "event_id,user_id,item_id,type,ts\ne,u2,i1,view,2021-03-04\nf,u2,,buy,2021-03-04\n")
    assert ingest_file(con, str(path), "csv").added == {"events": 1}
    third = ingest_records(con, [view(event_id="g"), view(event_id="a")], "api:3")  # "a" is a duplicate
    assert third.added == {"events": 1} and third.duplicates == {"events": 1} and third.users == ["u1"]
    assert sorted(e for (e,) in con.execute("SELECT event_id FROM events").fetchall()) == ["a", "c", "e", "g"]
    assert [r[:3] for r in quarantine(con)] == [("api:1", 2, "events"), ("api:2", 2, "events"),
                                                (str(path), 3, "events")]


def test_prepared_batches_see_what_earlier_batches_never_had(con):
    """A prepared statement must not be planned on the statistics of the batches before it (DuckDB 1.4 keeps such a
    plan: a column that only ever held NULL was taken to hold nothing else, and strings of a table emptied and
    refilled came back garbled). After clean batches: a first wrong JSON type, a first repeated event id (its
    reason built from strings), a first price — each still caught, named and stored right."""
    for n in range(3):
        assert ingest_records(con, [view(event_id=f"ok{n}", user_id=f"u{n}")], f"stream:1764510000000-{n}"
                              ).added == {"events": 1}
    report = ingest_records(con, [view(event_id="p1", price=True), view(event_id="p2", price=12.5),
                                  view(event_id="dup-event-id"), view(event_id="dup-event-id")],
                            "stream:1764510000000-9")
    assert report.added == {"events": 2}
    assert [(line, field) for line, field, _ in report.rejected] == [(1, "price"), (4, "event_id")]
    assert report.rejected[1][2] == "duplicate event_id dup-event-id (first at line 3)"
    assert con.execute("SELECT price FROM events WHERE event_id = 'p2'").fetchone() == (12.5,)
    assert con.execute("SELECT reason FROM quarantine WHERE field = 'event_id'").fetchone()[0] \
        == "duplicate event_id dup-event-id (first at line 3)"
