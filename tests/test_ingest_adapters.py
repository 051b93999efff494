"""One test per source format, on small slices of the bundled demo data or tiny hand-written files.

Expected values are worked out by hand from the lines quoted in each test (timestamps in UTC).
"""
from __future__ import annotations

import csv
import gzip
import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import huaxiang
from huaxiang import store
from huaxiang.errors import HuaxiangError
from huaxiang.ingest import FORMATS, adapters, ingest_file, parse_mapping

from conftest import DATA

DEMO = Path(huaxiang.__file__).parent / "data" / "demo"


# ---------------------------------------------------------------- helpers
@pytest.fixture
def con(tmp_path):
    c = store.connect(str(tmp_path / "store.duckdb"))
    yield c
    c.close()


def head(name: str, dst: Path, n: int) -> Path:
    """The first `n` lines of a bundled (gzip) demo slice, written as a plain file."""
    with gzip.open(DEMO / name, "rt", encoding="utf-8", newline="") as f:
        lines = [line for _, line in zip(range(n), f)]
    dst.write_text("".join(lines), encoding="utf-8", newline="")
    return dst


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def rows(con, sql: str, *params) -> list[tuple]:
    return con.execute(sql, list(params)).fetchall()


def one(con, sql: str, *params):
    return con.execute(sql, list(params)).fetchone()


def count(con, table: str) -> int:
    return store.count(con, table)


def assert_balanced(report, target: str) -> None:
    """For a single-target format every row read is added, a duplicate, or quarantined."""
    assert report.rows_read == report.added[target] + report.duplicates[target] + report.quarantined


# ---------------------------------------------------------------- Taobao UserBehavior
def test_taobao_demo_slice(con, tmp_path):
    path = head("taobao_UserBehavior_head.csv.gz", tmp_path / "taobao.csv", 300)  # header + 299 rows
    report = ingest_file(con, str(path), "taobao")

    assert report.rows_read == 299
    assert report.added == {"events": 299} and report.quarantined == 0
    assert_balanced(report, "events")
    # line 2: 1,2268318,2520377,pv,1511544070 -> 1511544070 s = 2017-11-24 17:21:10 UTC
    assert one(con, "SELECT user_id, category_id, type, ts, price FROM events WHERE item_id = '2268318'") == (
        "1", "2520377", "view", datetime(2017, 11, 24, 17, 21, 10), None)
    # line 73: 100,1603476,2951233,buy,1511579908 -> 2017-11-25 03:18:28 UTC
    assert one(con, "SELECT user_id, category_id, type, ts FROM events WHERE item_id = '1603476'") == (
        "100", "2951233", "buy", datetime(2017, 11, 25, 3, 18, 28))
    # behaviour counts in those 299 lines: pv 268, fav 18, buy 9, cart 4
    assert dict(rows(con, "SELECT type, count(*) FROM events GROUP BY type")) == {
        "view": 268, "fav": 18, "buy": 9, "cart": 4}
    # every event got a content key
    assert one(con, "SELECT count(DISTINCT event_id), count(*) FILTER (WHERE event_id IS NULL) FROM events") == (299, 0)


def test_taobao_without_header_maps_all_behaviours(con, tmp_path):
    path = write(tmp_path / "UserBehavior.csv",
                 "7,11,21,pv,1511544070\n"
                 "7,12,21,cart,1511544071\n"
                 "7,13,22,fav,1511544072\n"
                 "8,11,21,buy,1511630470\n")
    report = ingest_file(con, str(path), "taobao")
    assert report.rows_read == 4 and report.added == {"events": 4}
    got = rows(con, "SELECT user_id, item_id, category_id, type, ts FROM events ORDER BY ts")
    assert got == [
        ("7", "11", "21", "view", datetime(2017, 11, 24, 17, 21, 10)),
        ("7", "12", "21", "cart", datetime(2017, 11, 24, 17, 21, 11)),
        ("7", "13", "22", "fav", datetime(2017, 11, 24, 17, 21, 12)),
        ("8", "11", "21", "buy", datetime(2017, 11, 25, 17, 21, 10)),  # + 86400 s
    ]


def test_taobao_namespace_prefixes_ids(con, tmp_path):
    path = write(tmp_path / "tb.csv", "user_id,item_id,category_id,behavior_type,timestamp\n"
                                      "1,2268318,2520377,pv,1511544070\n")
    ingest_file(con, str(path), "taobao", namespace="tb")
    # user and item ids are prefixed (they could collide across sources); categories are not
    assert one(con, "SELECT user_id, item_id, category_id, type FROM events") == (
        "tb:1", "tb:2268318", "2520377", "view")
    # the same row under another namespace is another event, not a duplicate
    report = ingest_file(con, str(path), "taobao", namespace="tb2")
    assert report.added == {"events": 1}
    assert sorted(r[0] for r in rows(con, "SELECT user_id FROM events")) == ["tb2:1", "tb:1"]


def test_namespace_does_not_turn_an_empty_id_into_a_valid_one(con, tmp_path):
    path = write(tmp_path / "tb.csv", "1,2268318,2520377,pv,1511544070\n"
                                      ",2268318,2520377,pv,1511544070\n"
                                      "  ,2268318,2520377,pv,1511544070\n"
                                      "2,,2520377,pv,1511544070\n")
    report = ingest_file(con, str(path), "taobao", namespace="tb")
    assert report.added == {"events": 1}
    assert rows(con, "SELECT line, field FROM quarantine ORDER BY line") == [
        (2, "user_id"), (3, "user_id"), (4, "item_id")]


# ---------------------------------------------------------------- Amazon 2014 S3-Rec
def s3rec_day(days_before_last: int) -> datetime:
    """Sequences have order but no time: step k of n is stamped `S3REC_ANCHOR - (n - k) days`."""
    return datetime.fromisoformat(adapters.S3REC_ANCHOR) - timedelta(days=days_before_last)


def test_s3rec_anchor_is_the_end_of_the_2014_crawl():
    assert datetime.fromisoformat(adapters.S3REC_ANCHOR).date() == datetime(2014, 7, 23).date()


def test_s3rec_sequences_with_sibling_items_and_attributes(con, tmp_path):
    seq = write(tmp_path / "Mini.txt", "1 1 2 3\n2 2 3\n")
    write(tmp_path / "Mini_items.tsv", "item_id\tasin\ttitle\tidgenrec_textid\n"
                                       "1\tB004756YJA\tOPI Nail Lacquer\tnail lacquer\n"
                                       "2\tB004ZT0SSG\tOPI Red Shatter\tred shatter\n")
    write(tmp_path / "Mini_item2attributes.json", '{"1": [1, 2], "3": [7]}')
    report = ingest_file(con, str(seq), "s3rec")

    # position k of n is stamped (n - k) days before the anchor; every step is a 'buy'
    assert rows(con, "SELECT user_id, item_id, type, ts FROM events ORDER BY user_id, ts") == [
        ("1", "1", "buy", s3rec_day(2)),
        ("1", "2", "buy", s3rec_day(1)),
        ("1", "3", "buy", s3rec_day(0)),
        ("2", "2", "buy", s3rec_day(1)),
        ("2", "3", "buy", s3rec_day(0)),
    ]
    assert report.added["events"] == 5
    items = {r[0]: r[1:] for r in rows(con, "SELECT item_id, title, attributes FROM items")}
    assert set(items) == {"1", "2", "3"}
    assert items["1"][0] == "OPI Nail Lacquer"
    # attributes from the TSV and from item2attributes.json are merged into one JSON object
    assert json.loads(items["1"][1]) == {"asin": "B004756YJA", "textid": "nail lacquer", "attr_ids": [1, 2]}
    assert json.loads(items["2"][1]) == {"asin": "B004ZT0SSG", "textid": "red shatter"}
    assert items["3"][0] is None and json.loads(items["3"][1]) == {"attr_ids": [7]}


def test_s3rec_demo_slice(con, tmp_path):
    # the demo sequences file plus its two siblings, renamed together, first 50 users only
    head("Beauty_head2000.txt.gz", tmp_path / "Beauty.txt", 50)
    shutil.copy(DEMO / "Beauty_head2000_items.tsv.gz", tmp_path / "Beauty_items.tsv.gz")
    shutil.copy(DEMO / "Beauty_head2000_item2attributes.json.gz", tmp_path / "Beauty_item2attributes.json.gz")
    report = ingest_file(con, str(tmp_path / "Beauty.txt"), "s3rec")

    n_steps = sum(len(line.split()) - 1 for line in (tmp_path / "Beauty.txt").read_text().splitlines())
    assert report.added["events"] == count(con, "events") == n_steps
    # line 1: "1 1 2 3 4 5": user 1 bought items 1..5 on the last five days (2014-07-19 .. 2014-07-23)
    assert rows(con, "SELECT item_id, ts FROM events WHERE user_id = '1' ORDER BY ts") == [
        (str(i), s3rec_day(5 - i)) for i in range(1, 6)]
    assert count(con, "items") == 8017
    title, attrs = one(con, "SELECT title, attributes FROM items WHERE item_id = '1'")
    assert title == "OPI Nail Lacquer, Simmer and Shimmer, 0.5-Fluid Ounce"
    assert json.loads(attrs)["asin"] == "B004756YJA"
    assert json.loads(one(con, "SELECT attributes FROM items WHERE item_id = '4'")[0])["attr_ids"] == [1, 2, 3]
    assert count(con, "quarantine") == 0


def test_s3rec_items_file_alone(con, tmp_path):
    path = write(tmp_path / "X_items.tsv", "item_id\tasin\ttitle\n9\tB000\tA title\n")
    report = ingest_file(con, str(path), "s3rec")
    assert report.added == {"items": 1}
    assert count(con, "events") == 0
    title, attrs = one(con, "SELECT title, attributes FROM items WHERE item_id = '9'")
    assert title == "A title" and json.loads(attrs) == {"asin": "B000", "textid": None}


def test_s3rec_line_without_items_is_quarantined(con, tmp_path):
    path = write(tmp_path / "Seq.txt", "1 5 6\n2\n3 7\n")
    report = ingest_file(con, str(path), "s3rec")
    assert report.added == {"events": 3}
    line, field, reason = one(con, "SELECT line, field, reason FROM quarantine")
    assert line == 2 and field is None and "at least one item" in reason


# ---------------------------------------------------------------- Amazon 2018 reviews (JSON lines)
def test_amazon_reviews_demo_slice(con, tmp_path):
    path = head("All_Beauty_5_head1500.json.gz", tmp_path / "All_Beauty_5.json", 200)
    report = ingest_file(con, str(path), "amazon-reviews")
    assert report.rows_read == 200 and report.quarantined == 0
    assert report.added == {"reviews": 200, "events": 200}

    # line 1: reviewerID A3CIUOJXQ5VDQ2, asin B0000530HU, overall 5.0, unixReviewTime 1472688000 (2016-09-01)
    got = one(con, "SELECT item_id, ts, rating, text, language FROM reviews WHERE user_id = 'A3CIUOJXQ5VDQ2'")
    assert got == ("B0000530HU", datetime(2016, 9, 1), 5.0, "Five Stars. As advertised. Reasonably priced", "en")
    assert one(con, "SELECT item_id, type, ts FROM events WHERE user_id = 'A3CIUOJXQ5VDQ2'") == (
        "B0000530HU", "review", datetime(2016, 9, 1))
    # line 3 is the 1-star "Smells awful" review
    assert one(con, "SELECT rating FROM reviews WHERE user_id = 'A3J034YH7UG4KT'") == (1.0,)


def test_amazon_reviews_missing_parts(con, tmp_path):
    path = write(tmp_path / "r.json", "\n".join([
        '{"reviewerID": "U1", "asin": "A1", "overall": 4.0, "reviewText": "only text", "unixReviewTime": 1400000000}',
        '{"reviewerID": "U2", "asin": "A2", "overall": 3.0, "summary": "  ", "unixReviewTime": 1400000000}',
        '{"asin": "A3", "overall": 2.0, "summary": "no reviewer", "unixReviewTime": 1400000000}',
    ]) + "\n")
    report = ingest_file(con, str(path), "amazon-reviews")
    # U1: text without summary; ts 1400000000 = 2014-05-13 16:53:20 UTC
    assert one(con, "SELECT text, ts FROM reviews WHERE user_id = 'U1'") == (
        "only text", datetime(2014, 5, 13, 16, 53, 20))
    # U2 has neither text nor summary: no review, but the review event is kept
    assert rows(con, "SELECT line, target, field FROM quarantine ORDER BY line, target") == [
        (2, "reviews", "text"), (3, "events", "user_id")]
    assert sorted(r[0] for r in rows(con, "SELECT user_id FROM events")) == ["U1", "U2"]
    # the review without a reviewer is still a review
    assert one(con, "SELECT item_id, user_id FROM reviews WHERE text = 'no reviewer'") == ("A3", None)
    assert report.added == {"reviews": 2, "events": 2}


# ---------------------------------------------------------------- online_shopping_10_cats
def test_shopping_reviews_demo_slice(con, tmp_path):
    path = head("online_shopping_10_cats_2000.csv.gz", tmp_path / "shop.csv", 301)
    report = ingest_file(con, str(path), "shopping-reviews")
    assert report.rows_read == 300 and report.added == {"reviews": 300}
    assert_balanced(report, "reviews")
    # the demo slice is 100 rows per (cat, label): the first 300 are 书籍/1, 书籍/0, 平板/1
    assert dict(((c, lab), n) for c, lab, n in rows(
        con, "SELECT category, label, count(*) FROM reviews GROUP BY ALL")) == {
        ("书籍", 1): 100, ("书籍", 0): 100, ("平板", 1): 100}
    assert one(con, "SELECT DISTINCT language FROM reviews") == ("zh",)
    assert one(con, "SELECT count(*) FROM reviews WHERE text LIKE '%做父母一定要有刘墉这样的心态%'") == (1,)


def test_shopping_reviews_by_hand(con, tmp_path):
    path = write(tmp_path / "shop.csv", "cat,label,review\n水果,0,不新鲜\n书籍,1,\"好书, 推荐\"\n酒店,x,还行\n")
    report = ingest_file(con, str(path), "shopping-reviews")
    assert rows(con, "SELECT category, label, text, language, user_id FROM reviews ORDER BY label") == [
        ("水果", 0, "不新鲜", "zh", None), ("书籍", 1, "好书, 推荐", "zh", None)]
    assert rows(con, "SELECT line, field FROM quarantine") == [(4, "label")]
    assert_balanced(report, "reviews")


# ---------------------------------------------------------------- CDNOW
def test_cdnow_master_demo_slice(con, tmp_path):
    path = head("CDNOW_master.txt.gz", tmp_path / "CDNOW_master.txt", 300)  # header + 299 rows
    report = ingest_file(con, str(path), "cdnow")
    assert report.rows_read == 299 and report.added == {"orders": 299}
    assert_balanced(report, "orders")
    # " 00001 19970101  1   11.77"
    assert rows(con, "SELECT ts, amount, quantity FROM orders WHERE user_id = '00001'") == [
        (datetime(1997, 1, 1), 11.77, 1.0)]
    # " 00002 19970112  1   12.00" and " 00002 19970112  5   77.00": same day, two orders
    assert sorted(rows(con, "SELECT ts, amount, quantity FROM orders WHERE user_id = '00002'")) == [
        (datetime(1997, 1, 12), 12.0, 1.0), (datetime(1997, 1, 12), 77.0, 5.0)]
    # 00003 bought six times in the slice: 20.76 + 20.76 + 19.54 + 57.45 + 20.96 + 16.99 = 156.46,
    # last on 19980528
    assert one(con, "SELECT count(*), round(sum(amount), 2), max(ts) FROM orders WHERE user_id = '00003'") == (
        6, 156.46, datetime(1998, 5, 28))


def test_cdnow_sample_format(con, tmp_path):
    # the 1/10 sample has no header, an extra customer_index column and CRLF line ends
    path = tmp_path / "CDNOW_sample.txt"
    path.write_bytes(b" 00004 0001 19970101  2   29.33\r\n"
                     b" 00004 0001 19970118  2   29.73\r\n"
                     b" 00021 0002 19970101  3   63.34\r\n")
    report = ingest_file(con, str(path), "cdnow")
    assert report.added == {"orders": 3}
    assert sorted(rows(con, "SELECT user_id, ts, quantity, amount FROM orders")) == [
        ("00004", datetime(1997, 1, 1), 2.0, 29.33),
        ("00004", datetime(1997, 1, 18), 2.0, 29.73),
        ("00021", datetime(1997, 1, 1), 3.0, 63.34)]


def test_cdnow_wrong_field_count_and_bad_date(con, tmp_path):
    path = write(tmp_path / "c.txt", " 00001 19970101  1   11.77\n 00002 19970112  1\n 00003 19971340  2   20.76\n")
    report = ingest_file(con, str(path), "cdnow")
    assert report.added == {"orders": 1}
    assert rows(con, "SELECT line, field, reason FROM quarantine ORDER BY line") == [
        (2, None, "expected 4 fields, found 3"),
        (3, "ts", "not a timestamp (epoch seconds/ms or ISO 8601): '1997-13-40'")]


def test_cdnow_sample_whole_file(con):
    report = ingest_file(con, str(DATA / "CDNOW_sample.txt.gz"), "cdnow")
    assert report.rows_read == 6919 and report.added == {"orders": 6919} and report.quarantined == 0
    assert one(con, "SELECT user_id, ts, quantity, amount FROM orders ORDER BY user_id, ts LIMIT 1") == (
        "00004", datetime(1997, 1, 1), 2.0, 29.33)


# ---------------------------------------------------------------- UCI Online Retail II
RETAIL_HEADER = "Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country,sheet\n"


def test_online_retail_orders_cancellations_and_missing_customers(con, tmp_path):
    path = write(tmp_path / "retail.csv", RETAIL_HEADER + (
        # line 2: a sale, 6 x 2.95
        "490397,21844,RETRO SPOT MUG,6,2009-12-06 10:30:00,2.95,12417.0,Belgium,Year 2009-2010\n"
        # line 3: a cancellation (invoice C...), -1 x 9.95
        "C494271,22061,LARGE CAKE STAND  HANGING STRAWBERY,-1,2010-01-13 09:42:00,9.95,12417.0,Belgium,Year 2009-2010\n"
        # line 4: no Customer ID
        "504096,22218,CAKE STAND LACE WHITE,2,2010-04-09 13:28:00,4.25,,France,Year 2009-2010\n"
        # line 5: a quoted description with a comma and padding
        '490398,21430,"  SET/3 RED GINGHAM ROSE, STORAGE BOX ",4,2009-12-06 10:31:00,3.75,12417,Belgium,Year 2009-2010\n'
    ))
    report = ingest_file(con, str(path), "online-retail")

    assert sorted(rows(con, "SELECT invoice, user_id, ts, amount, quantity FROM orders")) == [
        ("490397", "12417", datetime(2009, 12, 6, 10, 30), pytest.approx(17.7), 6.0),
        ("490398", "12417", datetime(2009, 12, 6, 10, 31), 15.0, 4.0),
        ("C494271", "12417", datetime(2010, 1, 13, 9, 42), -9.95, -1.0),  # negative amount
    ]
    # one buy event per sold line; the cancellation is no purchase
    assert sorted(rows(con, "SELECT session_id, user_id, item_id, type, price, quantity FROM events")) == [
        ("490397", "12417", "21844", "buy", 2.95, 6.0),
        ("490398", "12417", "21430", "buy", 3.75, 4.0)]
    # the line without a customer is quarantined for both per-user tables, with field user_id
    assert rows(con, "SELECT line, target, field, reason FROM quarantine ORDER BY target") == [
        (4, "events", "user_id", "missing user_id"), (4, "orders", "user_id", "missing user_id")]
    assert all(src == str(path) for (src,) in rows(con, "SELECT source FROM quarantine"))
    # items come from every line, customer or not, with trimmed titles
    items = dict(rows(con, "SELECT item_id, title FROM items"))
    assert items == {"21844": "RETRO SPOT MUG", "22061": "LARGE CAKE STAND  HANGING STRAWBERY",
                     "22218": "CAKE STAND LACE WHITE", "21430": "SET/3 RED GINGHAM ROSE, STORAGE BOX"}
    assert report.rows_read == 4 and report.quarantined == 2
    assert report.added == {"orders": 3, "events": 2, "items": 4}


def test_online_retail_demo_slice(con, tmp_path):
    # lines 2600..2700 of the slice hold French invoices without a Customer ID
    with gzip.open(DEMO / "online_retail_ii_10countries.csv.gz", "rt", encoding="utf-8", newline="") as f:
        lines = f.readlines()
    body = lines[2599:2700]
    path = tmp_path / "retail.csv"
    path.write_text(lines[0] + "".join(body), encoding="utf-8", newline="")
    ingest_file(con, str(path), "online-retail")

    parsed = list(csv.DictReader(path.open(encoding="utf-8", newline="")))
    no_customer = [r for r in parsed if not r["Customer ID"].strip()]
    cancelled = [r for r in parsed if r["Invoice"].startswith("C") and r["Customer ID"].strip()]
    sold = [r for r in parsed if not r["Invoice"].startswith("C") and r["Customer ID"].strip()]
    assert no_customer, "the slice was chosen to contain lines without a customer"
    assert count(con, "orders") == len(cancelled) + len(sold)
    assert count(con, "events") == len(sold)
    assert one(con, "SELECT count(*) FROM orders WHERE amount < 0") == (
        sum(float(r["Quantity"]) * float(r["Price"]) < 0 for r in cancelled + sold),)
    assert one(con, "SELECT count(*) FROM events WHERE session_id LIKE 'C%'") == (0,)
    assert one(con, "SELECT count(*) FROM quarantine WHERE field = 'user_id' AND target = 'orders'") == (
        len(no_customer),)
    # lines 2647 .. of the original file are 504096 (France) without a customer; here line 2647 - 2598
    assert (2647 - 2598, "user_id") in rows(con, "SELECT line, field FROM quarantine WHERE target = 'orders'")


# ---------------------------------------------------------------- Diginetica
def test_diginetica_anonymous_sessions_and_timeframe(con, tmp_path):
    path = write(tmp_path / "views.csv", "session_id;user_id;item_id;timeframe;eventdate\n"
                                         "1;NA;81766;526309;2016-05-09\n"
                                         "2;5;100;1000;2016-05-10\n"
                                         "3;;7;0;2016-05-11\n")
    report = ingest_file(con, str(path), "diginetica")
    assert report.added == {"events": 3}
    # timeframe is milliseconds after midnight of eventdate: 526309 ms = 00:08:46.309
    assert sorted(rows(con, "SELECT user_id, item_id, type, ts, session_id FROM events")) == [
        ("5", "100", "view", datetime(2016, 5, 10, 0, 0, 1), "2"),
        ("session:1", "81766", "view", datetime(2016, 5, 9, 0, 8, 46, 309000), "1"),
        ("session:3", "7", "view", datetime(2016, 5, 11), "3"),
    ]


def test_diginetica_timeframe_too_large_for_an_interval_is_quarantined(con, tmp_path):
    path = write(tmp_path / "views.csv", "session_id;user_id;item_id;timeframe;eventdate\n"
                                         "1;NA;5;9223372036854775807;2016-05-09\n"
                                         "2;NA;5;100000000000000;2016-05-09\n"
                                         "3;NA;5;100;2016-05-09\n")
    report = ingest_file(con, str(path), "diginetica")
    assert report.added == {"events": 1}
    assert rows(con, "SELECT line, field FROM quarantine ORDER BY line") == [(2, "ts"), (3, "ts")]
    assert rows(con, "SELECT user_id, ts FROM events") == [("session:3", datetime(2016, 5, 9, 0, 0, 0, 100000))]


def test_diginetica_demo_slice(con, tmp_path):
    path = head("diginetica_sample_train-item-views.csv.gz", tmp_path / "views.csv", 301)
    report = ingest_file(con, str(path), "diginetica")
    assert report.rows_read == 300 and report.added == {"events": 300}
    assert_balanced(report, "events")
    # every anonymous ('NA') view belongs to the pseudo-user of its session
    assert one(con, "SELECT count(*) FROM events WHERE user_id <> 'session:' || session_id "
                    "AND user_id LIKE 'session:%'") == (0,)
    anon = sum(1 for line in path.read_text().splitlines()[1:] if line.split(";")[1] == "NA")
    assert one(con, "SELECT count(*) FROM events WHERE user_id LIKE 'session:%'") == (anon,)
    assert one(con, "SELECT user_id, ts FROM events WHERE session_id = '1' AND item_id = '81766'") == (
        "session:1", datetime(2016, 5, 9, 0, 8, 46, 309000))


# ---------------------------------------------------------------- generic csv / tsv / jsonl / parquet
MAPPING = {"user_id": "customer", "item_id": "sku", "ts": "time"}


def test_generic_csv_with_mapping(con, tmp_path):
    path = write(tmp_path / "export.csv", "customer,sku,time,type,price,extra\n"
                                          "c1,s1,2021-03-04T05:06:07Z,purchase,9.5,x\n"
                                          "c2,s2,1614834367,pv,,y\n")
    report = ingest_file(con, str(path), "csv", mapping=MAPPING)
    assert report.added == {"events": 2}
    assert sorted(rows(con, "SELECT user_id, item_id, type, ts, price FROM events")) == [
        ("c1", "s1", "buy", datetime(2021, 3, 4, 5, 6, 7), 9.5),
        ("c2", "s2", "view", datetime(2021, 3, 4, 5, 6, 7), None)]  # 1614834367 is the same instant


def test_generic_tsv_into_orders(con, tmp_path):
    path = write(tmp_path / "orders.tsv", "customer\twhen\ttotal\n"
                                          "c1\t2020-01-02 03:04:05+08:00\t-3.5\n")
    ingest_file(con, str(path), "tsv", table="orders",
                mapping={"user_id": "customer", "ts": "when", "amount": "total"})
    # +08:00 local time is 8 hours earlier in UTC
    assert rows(con, "SELECT user_id, ts, amount FROM orders") == [
        ("c1", datetime(2020, 1, 1, 19, 4, 5), -3.5)]


def test_generic_jsonl_with_mapping(con, tmp_path):
    path = write(tmp_path / "e.jsonl",
                 '{"customer": "c1", "sku": 42, "time": 1614834367000, "type": "addtocart", "price": 3}\n'
                 '{"customer": "c2", "sku": "s9", "time": "2021-03-04", "type": "search", "query": "红色 连衣裙"}\n')
    report = ingest_file(con, str(path), "jsonl", mapping=MAPPING)
    assert report.added == {"events": 2}
    assert sorted(rows(con, "SELECT user_id, item_id, type, ts, price, query FROM events")) == [
        ("c1", "42", "cart", datetime(2021, 3, 4, 5, 6, 7), 3.0, None),  # epoch milliseconds
        ("c2", "s9", "search", datetime(2021, 3, 4), None, "红色 连衣裙")]


def test_generic_parquet_with_mapping(con, tmp_path):
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({
        "customer": pa.array([1, 2], pa.int64()),
        "sku": pa.array(["s1", "s2"]),
        "time": pa.array([datetime(2021, 3, 4, 5, 6, 7), datetime(2022, 1, 1)], pa.timestamp("us")),
        "type": pa.array(["fav", "VIEW"]),
        "price": pa.array([1.25, None], pa.float64()),
    }), path)
    report = ingest_file(con, str(path), "parquet", mapping=MAPPING, namespace="pq")
    assert report.added == {"events": 2}
    assert sorted(rows(con, "SELECT user_id, item_id, type, ts, price FROM events")) == [
        ("pq:1", "pq:s1", "fav", datetime(2021, 3, 4, 5, 6, 7), 1.25),
        ("pq:2", "pq:s2", "view", datetime(2022, 1, 1), None)]


def test_generic_parquet_binary_columns_with_invalid_utf8(con, tmp_path):
    path = tmp_path / "b.parquet"
    pq.write_table(pa.table({
        "user_id": pa.array([b"u1", b"u\xff2", None], pa.binary()),
        "item_id": pa.array([b"i1", b"i2", b"i3"], pa.binary()),
        "type": pa.array(["view"] * 3),
        "ts": pa.array([1614834367] * 3, pa.int64()),
    }), path)
    report = ingest_file(con, str(path), "parquet")
    assert rows(con, "SELECT user_id, item_id, ts FROM events") == [("u1", "i1", datetime(2021, 3, 4, 5, 6, 7))]
    assert rows(con, "SELECT line, field, reason FROM quarantine ORDER BY line") == [
        (2, "user_id", "invalid UTF-8 in user_id"), (3, "user_id", "missing user_id")]
    assert_balanced(report, "events")


def test_generic_without_mapping_uses_canonical_names(con, tmp_path):
    path = write(tmp_path / "e.csv", "user_id,item_id,type,ts\nu,i,view,2020-01-01\n")
    ingest_file(con, str(path), "csv")
    assert rows(con, "SELECT user_id, item_id, type, ts FROM events") == [("u", "i", "view", datetime(2020, 1, 1))]


def test_unknown_canonical_name_in_mapping_is_an_error(con, tmp_path):
    path = write(tmp_path / "e.csv", "customer,sku,time,type\nc,s,2020-01-01,view\n")
    with pytest.raises(HuaxiangError, match="user_name"):
        ingest_file(con, str(path), "csv", mapping={"user_name": "customer"})
    assert count(con, "events") == 0 and count(con, "ingests") == 0


def test_mapping_to_a_missing_source_column_is_an_error(con, tmp_path):
    path = write(tmp_path / "e.csv", "customer,sku,time,type\nc,s,2020-01-01,view\n")
    with pytest.raises(HuaxiangError, match="clientid"):
        ingest_file(con, str(path), "csv", mapping={"user_id": "clientid", "item_id": "sku", "ts": "time"})
    assert count(con, "events") == 0 and count(con, "quarantine") == 0 and count(con, "ingests") == 0


def test_mapping_is_refused_for_named_adapters_and_unknown_formats(con, tmp_path):
    path = write(tmp_path / "tb.csv", "1,2,3,pv,1511544070\n")
    with pytest.raises(HuaxiangError, match="--map"):
        ingest_file(con, str(path), "taobao", mapping={"user_id": "x"})
    with pytest.raises(HuaxiangError, match="unknown format 'excel'"):
        ingest_file(con, str(path), "excel")
    with pytest.raises(HuaxiangError, match="unknown table 'users'"):
        ingest_file(con, str(path), "csv", table="users")


def test_parse_mapping():
    assert parse_mapping("user_id=customer, item_id = sku,ts=time") == MAPPING
    assert parse_mapping("") == {} and parse_mapping(None) == {}
    assert parse_mapping("user_id=Customer ID") == {"user_id": "Customer ID"}
    with pytest.raises(HuaxiangError, match="user_id"):
        parse_mapping("user_id")


def test_every_format_has_a_test_here():
    tested = {"taobao", "s3rec", "amazon-reviews", "shopping-reviews", "cdnow", "online-retail", "diginetica",
              "csv", "tsv", "jsonl", "parquet"}
    assert set(FORMATS) == tested
