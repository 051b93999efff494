"""Property tests for readers and validation.

(a) Whatever text or bytes a field holds, an ingest never crashes: it quarantines what it cannot use
    (only a header it cannot use may stop it, with a HuaxiangError), and what it keeps is well-formed.
(b) It never drops a valid row: in a batch mixing valid and invalid events, every valid row lands in
    `events` and every invalid one in `quarantine` (on its line, with the field at fault), nothing else.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import string
import tempfile
from collections import Counter
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from huaxiang import schema, store
from huaxiang.errors import HuaxiangError
from huaxiang.ingest import ingest_file
from huaxiang.ingest.validate import validation_sql

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NOW = datetime.now(timezone.utc).replace(tzinfo=None)
MARK = "@BAD@"  # stands for an invalid UTF-8 byte sequence; '@' never appears in generated values
BAD_BYTES = b"\xff\xfe"


def ingest_bytes(data: bytes, fmt: str, suffix: str, **kw):
    """Writes `data` to a file and ingests it into a fresh in-memory store.

    Returns (report, connection, path, temporary directory); the caller closes and cleans up."""
    tmp = tempfile.TemporaryDirectory()
    path = os.path.join(tmp.name, "in" + suffix)
    with open(path, "wb") as f:
        f.write(data)
    con = store.connect(":memory:")
    try:
        report = ingest_file(con, path, fmt, **kw)
    except BaseException:
        con.close()
        tmp.cleanup()
        raise
    return report, con, path, tmp


# ================================================================ (a) never crash
SPECIAL = ["", " ", "NA", "null", "None", "nan", "inf", "-inf", "1e400", "-0", "9" * 40, "0", "-1",
           "1511544070", "1511544070000", "2016-05-09", "2021-03-04T05:06:07+08:00", "C490397", "12417.0",
           "pv", "buy", "PURCHASE", "\x00", '"', '""', "'", "\\", "\r", "\n", "\r\n", ",", ";", "\t",
           "\ufeff", "\ufffd", "💥", "中文", "{}", "[1, 2]", '{"a": 1}', "x" * 300]

field_values = st.one_of(
    st.sampled_from(SPECIAL),
    st.text(max_size=30),
    st.binary(max_size=12),                     # raw bytes, usually not UTF-8
    st.integers(-(10 ** 20), 10 ** 20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


def as_bytes(value) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


# format -> (header line or None, field separator, field count, file suffix)
DELIMITED = {
    "taobao": (None, b",", 5, ".csv"),
    "csv": (b"event_id,user_id,item_id,type,ts,price,quantity,query,session_id", b",", 9, ".csv"),
    "tsv": (b"user_id\titem_id\ttype\tts\tprice", b"\t", 5, ".tsv"),
    "diginetica": (b"session_id;user_id;item_id;timeframe;eventdate", b";", 5, ".csv"),
    "online-retail": (b"Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country", b",", 8,
                      ".csv"),
    "shopping-reviews": (b"cat,label,review", b",", 3, ".csv"),
    "cdnow": (None, b" ", 4, ".txt"),
    "s3rec": (None, b" ", 4, ".txt"),
}
SINGLE_TARGET = {"taobao": "events", "csv": "events", "tsv": "events", "diginetica": "events",
                 "shopping-reviews": "reviews", "cdnow": "orders", "jsonl": "events"}


def physical_lines(data: bytes) -> int:
    """Lines as the readers count them (universal newlines, nothing translated)."""
    return sum(1 for _ in io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", errors="replace", newline=""))


def is_broken_gzip(data: bytes, exc: HuaxiangError) -> bool:
    """Random bytes may start with the gzip magic number: that file is unusable as a whole."""
    return data[:2] == b"\x1f\x8b" and "not a readable gzip file" in str(exc)


def check_store(con, report, fmt: str, path: str, data: bytes) -> None:
    """What an ingest left behind is consistent, whatever went in."""
    if fmt in SINGLE_TARGET:
        target = SINGLE_TARGET[fmt]
        assert report.rows_read == (report.added.get(target, 0) + report.duplicates.get(target, 0)
                                    + report.quarantined)
    assert report.quarantined == store.count(con, "quarantine")
    assert sum(report.reasons.values()) == report.quarantined
    n_lines = physical_lines(data)
    for source, line, target, field, reason in con.execute(
            "SELECT source, line, target, field, reason FROM quarantine").fetchall():
        assert source == path
        assert 1 <= line <= max(n_lines, 1)
        assert reason
        if target == "*":
            assert field is None
        else:
            assert field in schema.TABLES[target].names
    for (n,) in [con.execute(f"SELECT count(*) FROM {t}").fetchone() for t in schema.TABLES]:
        assert n >= 0
    # every kept event is a well-formed event
    bad = con.execute(f"""
        SELECT count(*) FROM events WHERE user_id IS NULL OR trim(user_id) = '' OR type NOT IN
            ({', '.join(repr(t) for t in schema.EVENT_TYPES)}) OR ts IS NULL OR ts < TIMESTAMP '1990-01-01'
            OR ts > now()::TIMESTAMP + INTERVAL 1 DAY OR price < 0 OR isnan(price) OR isinf(price)
            OR (item_id IS NULL AND type <> 'search') OR contains(user_id, chr(65533))
            OR length(user_id) > {schema.MAX_ID_CHARS}""").fetchone()[0]
    assert bad == 0
    assert con.execute("SELECT count(*) FROM orders WHERE user_id IS NULL OR ts IS NULL OR amount IS NULL "
                       "OR isnan(amount) OR isinf(amount)").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM reviews WHERE text IS NULL "
                       "OR rating < 0 OR rating > 5").fetchone()[0] == 0


def ingest_and_check(data: bytes, fmt: str, suffix: str, allowed) -> None:
    """Ingests `data`; either the store passes `check_store`, or the HuaxiangError is one `allowed`."""
    try:
        report, con, path, tmp = ingest_bytes(data, fmt, suffix)
    except HuaxiangError as exc:
        assert allowed(exc), exc
        return
    try:
        check_store(con, report, fmt, path, data)
    finally:
        con.close()
        tmp.cleanup()


@SETTINGS
@given(fmt=st.sampled_from(sorted(DELIMITED)),
       rows=st.lists(st.lists(field_values, min_size=0, max_size=10), min_size=0, max_size=12),
       ends=st.sampled_from([b"\n", b"\r\n"]),
       fill_to_width=st.booleans())
def test_delimited_formats_never_crash_on_any_field(fmt, rows, ends, fill_to_width):
    header, sep, width, suffix = DELIMITED[fmt]
    lines = [header] if header else []
    for row in rows:
        if fill_to_width:  # mostly the right number of fields, so that rows reach validation
            row = (row + [""] * width)[:width]
        lines.append(sep.join(as_bytes(v) for v in row))
    data = ends.join(lines) + (ends if lines else b"")
    ingest_and_check(data, fmt, suffix, allowed=lambda exc: is_broken_gzip(data, exc))


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10 ** 30), 10 ** 30),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                         st.sampled_from(SPECIAL))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)), max_leaves=6)
EVENT_KEYS = ["user_id", "item_id", "type", "ts", "price", "query", "event_id"]
REVIEW_KEYS = ["reviewerID", "asin", "unixReviewTime", "overall", "summary", "reviewText"]


@SETTINGS
@given(fmt=st.sampled_from(["jsonl", "amazon-reviews"]),
       records=st.lists(st.one_of(
           st.dictionaries(st.sampled_from(EVENT_KEYS + REVIEW_KEYS), json_values, max_size=8),
           json_values,
           st.binary(max_size=30),                                         # not JSON at all
           st.sampled_from([b'{"user_id": "\\ud800", "item_id": "i", "type": "view", "ts": 1600000000}',
                            b'{"user_id": "u\xff", "item_id": "i", "type": "view", "ts": 1600000000}',
                            b'{"ts": ' + b"1" * 5000 + b"}", b"[" * 5000, b'{"a": 1}{"b": 2}'])),
           max_size=12))
def test_json_lines_never_crash_on_any_value(fmt, records):
    lines = []
    for r in records:
        if isinstance(r, bytes):
            lines.append(r.replace(b"\n", b" ").replace(b"\r", b" "))
        else:
            lines.append(json.dumps(r, ensure_ascii=bool(len(lines) % 2)).encode("utf-8", "surrogatepass"))
    data = b"\n".join(lines) + b"\n"
    # an error only for a generic file in which no line had any usable column at all
    ingest_and_check(data, fmt, ".jsonl", allowed=lambda exc: is_broken_gzip(data, exc) or (
        fmt == "jsonl" and "no column maps onto events" in str(exc)))


@SETTINGS
@given(fmt=st.sampled_from(["csv", "tsv", "jsonl"]),
       header=st.one_of(st.binary(max_size=40), st.lists(st.sampled_from(
           ["user_id", "USER_ID", "item_id", "type", "ts", "", " ", "_line", '"', "a,b", "user_id "]),
           max_size=6).map(lambda names: ",".join(names).encode())),
       body=st.lists(st.binary(max_size=40), max_size=5))
def test_any_header_gives_a_report_or_a_huaxiang_error(fmt, header, body):
    data = b"\n".join([header, *body]) + b"\n"
    ingest_and_check(data, fmt, "." + fmt, allowed=lambda exc: True)


@SETTINGS
@given(table=st.sampled_from(sorted(schema.TABLES)), data=st.data())
def test_validation_sql_classifies_any_strings(table, data):
    t = schema.TABLES[table]
    present = data.draw(st.sets(st.sampled_from(t.names), min_size=1), label="present")
    n = data.draw(st.integers(1, 8), label="rows")
    text = st.one_of(st.none(), st.sampled_from(SPECIAL), st.text(max_size=25))
    cols = {name: pa.array([data.draw(text) for _ in range(n)], pa.string()) for name in sorted(present)}
    cols["_line"] = pa.array(range(1, n + 1), pa.int64())
    con = store.connect(":memory:")
    try:
        con.register("mapped", pa.table(cols))
        sql = validation_sql(t, set(present))
        verdicts = con.execute(f"SELECT _line, _field, _reason FROM ({sql})").fetchall()
        # only kept rows are ever read as typed values (a rejected one may hold e.g. an infinite timestamp)
        kept = con.execute(f"SELECT * FROM ({sql}) WHERE _field IS NULL").fetch_arrow_table().to_pylist()
    finally:
        con.close()
    assert sorted(line for line, _, _ in verdicts) == list(range(1, n + 1))
    for _, field, reason in verdicts:
        assert (field is None and reason is None) or (field in t.names and reason)
    for r in kept:  # required columns are there, typed and in range
        for col in t.columns:
            if col.required:
                assert r[col.name] is not None, (col.name, r)
        if "ts" in t.names and r["ts"] is not None:
            assert datetime(1990, 1, 1) <= r["ts"] <= NOW + timedelta(days=2)
        for col in t.columns:
            if col.type == "DOUBLE" and r[col.name] is not None:
                assert math.isfinite(r[col.name])


# ================================================================ (b) never drop a valid row
ALIASES = sorted(schema.EVENT_TYPE_ALIASES)
ALL_TYPES = list(schema.EVENT_TYPES) + ALIASES
id_chars = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp"),
                         exclude_characters="\ufffd\ufeff@")
ids = st.text(id_chars, min_size=1, max_size=12)


def canonical(type_raw: str) -> str:
    t = type_raw.strip().lower()
    return schema.EVENT_TYPE_ALIASES.get(t, t)


@st.composite
def valid_events(draw):
    type_raw = draw(st.sampled_from(ALL_TYPES))
    type_raw = draw(st.sampled_from([type_raw, type_raw.upper(), type_raw.title(), f" {type_raw} "]))
    item = draw(ids) if canonical(type_raw) != "search" else draw(st.one_of(st.just(""), ids))
    when = draw(st.datetimes(min_value=datetime(1990, 1, 2), max_value=NOW - timedelta(days=2)))
    form = draw(st.sampled_from(["epoch_s", "epoch_ms", "iso_z", "iso_offset", "iso_naive", "date"]))
    if form in ("epoch_s", "date"):
        when = when.replace(microsecond=0)
    if form == "epoch_ms":
        when = when.replace(microsecond=when.microsecond // 1000 * 1000)
    if form == "date":
        when = when.replace(hour=0, minute=0, second=0)
    utc = when.replace(tzinfo=timezone.utc)
    if form == "epoch_s":
        ts = int(utc.timestamp())
    elif form == "epoch_ms":
        ts = int(utc.timestamp()) * 1000 + when.microsecond // 1000
    elif form == "iso_z":
        ts = when.isoformat() + "Z"
    elif form == "iso_offset":
        minutes = draw(st.integers(-12 * 60, 14 * 60).map(lambda m: m - m % 15))
        ts = utc.astimezone(timezone(timedelta(minutes=minutes))).isoformat()
    elif form == "iso_naive":
        ts = when.isoformat(sep=draw(st.sampled_from([" ", "T"])))
    else:
        ts = when.date().isoformat()
    price = draw(st.one_of(st.none(), st.just(""), st.integers(0, 10 ** 6),
                           st.floats(0, 1e9, allow_nan=False, allow_infinity=False)))
    return {"user_id": draw(ids), "item_id": item, "type": type_raw, "ts": ts, "price": price}


def expected_row(e: dict) -> tuple:
    ts = e["ts"]
    if isinstance(ts, int):
        when = datetime.fromtimestamp(ts / 1000 if ts > 10 ** 11 else ts, timezone.utc)
        if ts > 10 ** 11:
            when = datetime.fromtimestamp(ts // 1000, timezone.utc) + timedelta(milliseconds=ts % 1000)
    else:
        when = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
    price = None if e["price"] in (None, "") else float(e["price"])
    return (e["user_id"], e["item_id"] or None, canonical(e["type"]),
            when.astimezone(timezone.utc).replace(tzinfo=None), price)


# (field at fault, how to break a valid event there)
def _future(draw):
    return (NOW + timedelta(days=draw(st.integers(3, 60_000)))).isoformat()


BREAKERS = {
    "empty user": ("user_id", lambda draw, e: {**e, "user_id": draw(st.sampled_from(["", " ", "\t"]))}),
    "long user": ("user_id", lambda draw, e: {**e, "user_id": "u" * draw(st.integers(257, 400))}),
    "bad bytes in user": ("user_id", lambda draw, e: {**e, "user_id": e["user_id"] + MARK}),
    "bad bytes in item": ("item_id", lambda draw, e: {**e, "item_id": MARK + (e["item_id"] or "i")}),
    "no item": ("item_id", lambda draw, e: {**e, "item_id": "", "type": draw(st.sampled_from(
        [t for t in ALL_TYPES if canonical(t) != "search"]))}),
    "unknown type": ("type", lambda draw, e: {**e, "type": draw(st.text(string.ascii_letters, min_size=1, max_size=9)
                                                                .filter(lambda t: canonical(t) not in schema.EVENT_TYPES))}),
    "old ts": ("ts", lambda draw, e: {**e, "ts": draw(st.datetimes(datetime(1900, 1, 1), datetime(1989, 12, 30)))
                                      .isoformat()}),
    "old epoch": ("ts", lambda draw, e: {**e, "ts": draw(st.integers(-10 ** 9, 631_065_600))}),
    "future ts": ("ts", lambda draw, e: {**e, "ts": _future(draw)}),
    "no ts": ("ts", lambda draw, e: {**e, "ts": ""}),
    "garbage ts": ("ts", lambda draw, e: {**e, "ts": draw(st.sampled_from(["yesterday", "soon", "2021-13-01",
                                                                            "2021-02-30", "12:00", "1e400"]))}),
    "negative price": ("price", lambda draw, e: {**e, "price": draw(st.floats(-1e9, -1e-3))}),
    "text price": ("price", lambda draw, e: {**e, "price": draw(st.sampled_from(["abc", "1,5", "$3", "NaN", "inf"]))}),
}


@st.composite
def invalid_events(draw):
    kind = draw(st.sampled_from(sorted(BREAKERS)))
    field, brk = BREAKERS[kind]
    e = draw(valid_events())
    if canonical(e["type"]) == "search" and not e["item_id"]:
        e = {**e, "item_id": "i"}
    return brk(draw, e), field


batches = st.lists(st.one_of(valid_events().map(lambda e: (e, None)), invalid_events()), min_size=1, max_size=25)


def text(value) -> str:
    return "" if value is None else value if isinstance(value, str) else repr(value)


def encode(fmt: str, events: list[dict]) -> tuple[bytes, int]:
    """The batch as a file in `fmt`; returns (data, line number of the first event)."""
    names = ["user_id", "item_id", "type", "ts", "price"]
    if fmt in ("csv", "tsv"):
        buf = io.StringIO()
        w = csv.writer(buf, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
        w.writerow(names)
        for e in events:
            w.writerow([text(e[n]) for n in names])
        return buf.getvalue().encode("utf-8").replace(MARK.encode(), BAD_BYTES), 2
    if fmt == "jsonl":
        lines = []
        for e in events:  # numbers stay JSON numbers; an absent price is sometimes left out
            obj = {n: e[n] for n in names if not (n == "price" and e[n] is None)}
            lines.append(json.dumps(obj, ensure_ascii=False).encode("utf-8").replace(MARK.encode(), BAD_BYTES))
        return b"\n".join(lines) + b"\n", 1
    # parquet, with binary columns so that invalid UTF-8 can be stored
    cols = {n: pa.array([text(e[n]).encode("utf-8").replace(MARK.encode(), BAD_BYTES) for e in events],
                        pa.binary()) for n in names}
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(cols), sink)
    return sink.getvalue().to_pybytes(), 1


@SETTINGS
@given(fmt=st.sampled_from(["csv", "tsv", "jsonl", "parquet"]), batch=batches)
def test_valid_rows_land_in_events_and_invalid_ones_in_quarantine(fmt, batch):
    events = [e for e, _ in batch]
    data, first_line = encode(fmt, events)
    report, con, path, tmp = ingest_bytes(data, fmt, "." + fmt)
    try:
        want_events = Counter(expected_row(e) for e, fault in batch if fault is None)
        want_quarantine = sorted((first_line + i, "events", fault) for i, (_, fault) in enumerate(batch)
                                 if fault is not None)
        got_events = Counter(con.execute("SELECT user_id, item_id, type, ts, price FROM events").fetchall())
        got_quarantine = sorted(con.execute("SELECT line, target, field FROM quarantine").fetchall())
        assert got_quarantine == want_quarantine, con.execute("SELECT line, field, reason FROM quarantine").fetchall()
        assert got_events == want_events
        assert report.rows_read == len(batch)
        assert report.added == {"events": sum(want_events.values())}
        assert report.duplicates == {"events": 0} and report.quarantined == len(want_quarantine)
        for price in (r[4] for r in got_events):
            assert price is None or (math.isfinite(price) and price >= 0)
    finally:
        con.close()
        tmp.cleanup()


@SETTINGS
@given(batch=batches)
def test_a_second_ingest_of_the_same_batch_changes_nothing(batch):
    data, _ = encode("csv", [e for e, _ in batch])
    report, con, path, tmp = ingest_bytes(data, "csv", ".csv")
    try:
        before_events = sorted(con.execute("SELECT * FROM events").fetchall(), key=repr)
        before_q = sorted(con.execute("SELECT line, target, field, reason FROM quarantine").fetchall(), key=repr)
        again = ingest_file(con, path, "csv")
        assert again.added == {"events": 0} and again.duplicates == {"events": report.added["events"]}
        assert again.quarantined == report.quarantined
        assert sorted(con.execute("SELECT * FROM events").fetchall(), key=repr) == before_events
        assert sorted(con.execute("SELECT line, target, field, reason FROM quarantine").fetchall(),
                      key=repr) == before_q
    finally:
        con.close()
        tmp.cleanup()

