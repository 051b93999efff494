"""Differential privacy for segment reports: the noise has the scale ε promises, CLV is clipped before summing,
and a private report withholds what it cannot protect. Forgetting a person removes exactly their rows (the
quarantine included) and, unless they may return, refuses their rows from then on."""
import hashlib
import json
import subprocess
import sys

import duckdb
import numpy as np
import pytest

from huaxiang import store
from huaxiang.errors import HuaxiangError
from huaxiang.forget import forget_user
from huaxiang.ingest import ingest_file, ingest_records
from huaxiang.privacy import KEY_ENV, pseudonym
from huaxiang.profile.scores import value_tiers
from huaxiang.profile.segment_report import _private, clipped_tiers, tier_values


def test_count_noise_is_unbiased_with_the_scale_epsilon_sets():
    rows = [("a", "rule a", 1000), ("b", "rule b", 50)]
    eps = 1.0
    noisy = np.array([[s["size"] for s in _private(rows, [], eps, 100.0, seed)["segments"]] for seed in range(600)])
    err = noisy[:, 0] - 1000
    p = np.exp(-eps / 3)  # each histogram gets ε/3; two-sided geometric noise, variance 2p / (1 - p)²
    assert abs(err.mean()) < 0.6
    assert 0.85 < err.std() / np.sqrt(2 * p / (1 - p) ** 2) < 1.15
    assert (noisy != [1000, 50]).any(axis=1).mean() > 0.9  # noise is really added
    tight = np.array([_private(rows, [], 50.0, 100.0, seed)["segments"][0]["size"] for seed in range(200)])
    assert np.abs(tight - 1000).mean() < np.abs(err).mean() / 5  # a larger ε, less noise


def test_clv_is_clipped_before_it_is_summed():
    con = duckdb.connect()
    con.execute("CREATE TABLE profiles AS SELECT * FROM (VALUES ('u1', 'regular'), ('u2', 'regular')) t(user_id, segment)")
    con.execute("""CREATE TABLE scores AS SELECT * FROM (VALUES ('u1', 'clv', 5.0, '{"value_tier": "top"}'),
                   ('u2', 'clv', 1e9, '{"value_tier": "top"}')) t(user_id, kind, score, detail)""")
    assert value_tiers(con)[0]["mean_clv"] == pytest.approx((5 + 1e9) / 2)
    assert value_tiers(con, clv_cap=100.0)[0]["mean_clv"] == pytest.approx(52.5)
    cells = [_private([], value_tiers(con, 100.0), 10.0, 100.0, seed)["value_tiers"][0] for seed in range(100)]
    assert np.median([c["mean_clv"] for c in cells]) < 200  # the 1e9 outlier cannot leak through the mean
    # the online store keeps each cell's CLVs (tier_values) and clips them per request: the same cells
    for cap in (None, 100.0, 1e12):
        rows = [{k: v for k, v in t.items() if k != "tenant"} for t in value_tiers(con, cap)]
        assert clipped_tiers(tier_values(con, ""), cap if cap else np.inf) == rows


def test_a_private_report_says_so_and_withholds_rule_text():
    report = _private([("a", "monetary ≥ 123.45", 10)], [], 1.0, 100.0, 0)
    assert report["privacy"]["epsilon"] == 1.0 and "definition" not in report["segments"][0]
    for bad in (0.0, -1.0, 1e-9, 1e9):
        with pytest.raises(HuaxiangError, match="epsilon must be"):
            _private([], [], bad, 100.0, 0)


def test_a_pseudonym_keeps_the_tenant_and_hides_the_rest_of_the_id():
    key = b"k"
    p = pseudonym("shop:session:42", key)
    assert p.startswith("shop:u_") and "session" not in p and len(p) == len("shop:u_") + 20
    assert pseudonym("shop:session:42", key) == p and pseudonym("shop:session:43", key) != p
    assert pseudonym("42", key).startswith("u_") and pseudonym(None, key) is None


# ---------------------------------------------------------------- forgetting a person, exactly, and for good
def event(user: str, event_id: str, type_: str = "view") -> dict:
    return {"event_id": event_id, "user_id": user, "item_id": "i1", "type": type_, "ts": "2021-03-04T05:06:07Z"}


def quarantined_users(con) -> list:
    return sorted(u for (u,) in con.execute("SELECT coalesce(user_id, raw) FROM quarantine").fetchall())


def test_forget_removes_exactly_that_users_rows_from_the_quarantine(tmp_path):
    """`contains(raw, id)` took user '2' for everyone with a 2 in a row, and 'taobao:77' for 'taobao:770'."""
    db = str(tmp_path / "s.duckdb")
    con = store.connect(db)
    users = ["2", "12", "taobao:77", "taobao:770"]
    batch = [event(u, f"e{n}") for n, u in enumerate(users)] + [event(u, f"bad{n}", "teleport") for n, u in
                                                                 enumerate(users)]
    batch.append({**event("2", "e0"), "item_id": "i2"})  # the same key twice in a batch: a `duplicate` row
    ingest_records(con, batch, "api:1")
    assert quarantined_users(con) == sorted(["2", "2", "12", "taobao:77", "taobao:770"])
    con.execute("CREATE TABLE triples AS SELECT * FROM (VALUES ('user:taobao:77', 'viewed', 'item:i1'), "
                "('user:taobao:770', 'viewed', 'item:i1')) t(subject, predicate, object)")

    removed = forget_user(con, db, "2")
    assert removed == {"events": 1, "quarantine": 2}
    assert quarantined_users(con) == ["12", "taobao:77", "taobao:770"]
    assert forget_user(con, db, "taobao:77") == {"events": 1, "quarantine": 1, "triples": 1}
    assert quarantined_users(con) == ["12", "taobao:770"]
    assert con.execute("SELECT subject FROM triples").fetchall() == [("user:taobao:770",)]
    assert sorted(u for (u,) in con.execute("SELECT user_id FROM events").fetchall()) == ["12", "taobao:770"]
    con.close()


def test_a_quarantine_from_before_user_id_gains_the_column_and_is_matched_on_its_raw_user_id(tmp_path):
    db = str(tmp_path / "old.duckdb")
    old = duckdb.connect(db)
    old.execute("""CREATE TABLE quarantine (source VARCHAR, line BIGINT, target VARCHAR, field VARCHAR,
        reason VARCHAR, raw VARCHAR, ingested_at TIMESTAMP DEFAULT current_timestamp)""")
    old.execute("""INSERT INTO quarantine (source, line, target, field, reason, raw) VALUES
        ('a.csv', 2, 'events', 'type', 'unknown event type', '{"user_id":" 2 ","type":"jump"}'),
        ('a.csv', 3, 'events', 'type', 'unknown event type', '{"user_id":"12","type":"jump"}'),
        ('a.csv', 4, '*', NULL, 'expected 4 fields, found 5', '2,i,view,2021-01-01,x')""")
    old.close()
    con = store.connect(db)  # migrates: the quarantine gains `user_id`, NULL in the old rows
    assert con.execute("SELECT count(*) FROM quarantine WHERE user_id IS NULL").fetchone()[0] == 3
    ingest_records(con, [event("2", "e1"), event("2", "e2", "jump")], "api:1")
    assert forget_user(con, db, "2") == {"events": 1, "quarantine": 2}
    assert sorted(line for (line,) in con.execute("SELECT line FROM quarantine").fetchall()) == [3, 4]
    con.close()


def test_quarantined_rows_carry_the_user_id_as_stored(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "secret")
    db = str(tmp_path / "s.duckdb")
    con = store.connect(db)
    path = tmp_path / "e.csv"
    path.write_text("event_id,user_id,item_id,type,ts\ne1,42,i,view,2021-01-01\ne1,42,i,fav,2021-01-01\n"
                    "e2,42,i,jump,2021-01-01\ne3,,i,view,2021-01-01\ne4,42,i,view,2021-01-01,extra\n")
    ingest_file(con, str(path), "csv", namespace="shop")
    stored = pseudonym("shop:42", b"secret")
    assert con.execute("SELECT line, user_id FROM quarantine ORDER BY line").fetchall() == [
        (3, stored), (4, stored), (5, None), (6, None)]  # duplicate key, bad type, no user, unreadable line
    assert forget_user(con, db, stored) == {"events": 1, "quarantine": 2}
    # the forgotten pseudonym is suppressed: the same raw id sent again is refused
    report = ingest_records(con, [event("42", "e9")], "api:1", namespace="shop")
    assert report.suppressed == 1 and report.added == {"events": 0} and store.count(con, "events") == 0
    con.close()


def test_a_forgotten_user_stays_out_until_let_back(tmp_path):
    db = str(tmp_path / "s.duckdb")
    con = store.connect(db)
    ingest_records(con, [event("u1", "e1"), event("u2", "e2")], "api:1")
    assert forget_user(con, db, "u1") == {"events": 1}
    # only a hash of the id is kept
    assert con.execute("SELECT id_hash FROM forgotten_users").fetchall() == [(hashlib.sha256(b"u1").hexdigest(),)]

    again = ingest_records(con, [event("u1", "e1"), event("u1", "e3", "teleport"), event("u2", "e4")], "api:2")
    assert again.suppressed == 2 and again.added == {"events": 1} and again.quarantined == 0
    assert again.users == ["u2"] and again.rejected == []
    path = tmp_path / "e.csv"
    path.write_text("user_id,item_id,type,ts\nu1,i,view,2021-01-01\nu1,i,jump,2021-01-01\nu3,i,view,2021-01-01\n")
    report = ingest_file(con, str(path), "csv")
    assert report.suppressed == 2 and report.added == {"events": 1}
    assert report.rows_read == report.added["events"] + report.duplicates["events"] + report.quarantined \
        + report.suppressed
    for table in ("events", "quarantine"):  # stored nowhere, not even the quarantine
        assert con.execute(f"SELECT count(*) FROM {table} WHERE user_id = 'u1'").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM quarantine WHERE contains(raw, 'u1')").fetchone()[0] == 0
    with pytest.raises(HuaxiangError, match="nothing of them"):
        forget_user(con, db, "u1")  # forgotten already
    con.close()

    # `huaxiang forget --allow-return` lifts the block
    proc = subprocess.run([sys.executable, "-m", "huaxiang.cli", "forget", "u1", "--allow-return", "--db", db,
                           "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["removed"] == {"suppression list": 1}
    con = store.connect(db)
    assert ingest_records(con, [event("u1", "e5")], "api:3").added == {"events": 1}
    assert forget_user(con, db, "u1", suppress=False) == {"events": 1}  # forgotten, free to return
    assert store.count(con, "forgotten_users") == 0
    assert ingest_records(con, [event("u1", "e6")], "api:4").added == {"events": 1}
    con.close()
