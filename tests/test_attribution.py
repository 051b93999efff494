"""Clicks, carts and purchases attributed to what was shown (the exposure their request_id names, else the latest
exposure of the item to the user within the window), and an experiment's per-user outcome fed to its report."""
from datetime import datetime, timedelta

import duckdb
import pytest

from huaxiang import store
from huaxiang.errors import HuaxiangError
from huaxiang.experiments.attribution import attributed_sql, export_log, outcomes
from huaxiang.experiments.exposures import record, store_lines
from huaxiang.experiments.stats import experiment_report
from huaxiang.ingest import ingest_records
from huaxiang.store import has_column

T0 = datetime(2026, 11, 1, 12, 0, 0)


def shown(con, request_id, user, items, variant, at, experiment="exp", latency=5.0):
    store_lines(con, [record(request_id, user, "recommendations", [{"item_id": i, "score": 1.0} for i in items], "m",
                             experiment=experiment, variant=variant, ts=at, latency_ms=latency)])


def event(user, item, kind, at, price=None, quantity=None, event_id=None, request_id=None):
    e = {"user_id": user, "item_id": item, "type": kind, "ts": at.isoformat(), "event_id": event_id or
         f"{user}-{item}-{kind}-{at.isoformat()}-{request_id}"}
    return {**e, **({"price": price} if price is not None else {}), **({"quantity": quantity} if quantity else {}),
            **({"request_id": request_id} if request_id else {})}


def attributed(con, hours=24.0):
    """(user, item, type, request_id of the exposure) of every attributed event, sorted."""
    return con.execute(f"SELECT user_id, item_id, type, request_id FROM ({attributed_sql(hours)}) ORDER BY ALL"
                       ).fetchall()


def ingest(con, events):
    report = ingest_records(con, events, "api:1", future_tolerance_s=10 ** 9)
    assert report.quarantined == 0, report.rejected


@pytest.fixture
def con(tmp_path):
    c = store.connect(str(tmp_path / "s.duckdb"))
    yield c
    c.close()


def test_an_event_goes_to_the_latest_exposure_of_its_item_to_its_user_within_the_window(con):
    shown(con, "r1", "u1", ["a", "b"], "control", T0)
    shown(con, "r2", "u1", ["a"], "control", T0 + timedelta(hours=2))
    shown(con, "r3", "u2", ["a"], "treatment", T0)
    ingest_records(con, [
        event("u1", "a", "click", T0 + timedelta(hours=3)),  # r2: the later of two exposures of a
        event("u1", "b", "click", T0 + timedelta(hours=1)),  # r1
        event("u1", "b", "buy", T0 + timedelta(hours=30), price=9.0),  # 30 h after r1: outside the window
        event("u1", "c", "click", T0 + timedelta(hours=1)),  # never shown
        event("u2", "a", "click", T0 - timedelta(minutes=1)),  # before it was shown
        event("u2", "a", "view", T0 + timedelta(minutes=1)),  # a view is not attributed
        event("u2", "a", "buy", T0 + timedelta(hours=23), price=4.0, quantity=2),  # r3
    ], "api:1", future_tolerance_s=10 ** 9)
    got = con.execute(f"SELECT user_id, item_id, type, request_id FROM ({attributed_sql()}) ORDER BY ALL").fetchall()
    assert got == [("u1", "a", "click", "r2"), ("u1", "b", "click", "r1"), ("u2", "a", "buy", "r3")]
    wide = con.execute(f"SELECT request_id FROM ({attributed_sql(48)}) WHERE type = 'buy' ORDER BY 1").fetchall()
    assert wide == [("r1",), ("r3",)]
    with pytest.raises(HuaxiangError, match="window"):
        attributed_sql(0)


def test_outcomes_per_exposed_user_feed_the_report(con):
    shown(con, "c1", "u1", ["a", "b", "c"], "control", T0, latency=4.0)
    shown(con, "c2", "u2", ["a", "b", "c"], "control", T0, latency=6.0)
    shown(con, "t1", "u3", ["a", "b", "c"], "treatment", T0, latency=9.0)
    shown(con, "o1", "u4", ["a"], "treatment", T0, experiment="other")  # another experiment: not counted
    ingest_records(con, [
        event("u1", "a", "click", T0 + timedelta(minutes=1)),
        event("u1", "b", "click", T0 + timedelta(minutes=2)),
        event("u3", "c", "click", T0 + timedelta(minutes=1)),
        event("u3", "c", "buy", T0 + timedelta(minutes=5), price=10.0, quantity=3),
        event("u4", "a", "buy", T0 + timedelta(minutes=5), price=99.0),
    ], "api:1", future_tolerance_s=10 ** 9)
    out = outcomes(con, "exp")
    assert set(out) == {"control", "treatment"}
    assert out["control"]["impressions"].tolist() == [3, 3] and out["control"]["clicks"].tolist() == [2, 0]
    assert out["control"]["buyer"].tolist() == [0, 0] and sorted(out["control"]["latency_ms"].tolist()) == [4.0, 6.0]
    assert out["treatment"]["clicks"].tolist() == [1] and out["treatment"]["buyer"].tolist() == [1]
    assert out["treatment"]["revenue"].tolist() == [30.0]
    report = experiment_report(out, {"control": 0.5, "treatment": 0.5}, "control")
    assert report["variants"]["control"]["exposed_users"] == 2 and report["variants"]["treatment"]["buyers"] == 1
    assert report["variants"]["control"]["ctr"]["value"] == pytest.approx(2 / 6)


def test_a_request_id_attributes_an_event_to_the_answer_it_names_even_when_the_item_was_shown_again(con):
    shown(con, "r1", "u1", ["a", "b"], "control", T0)
    shown(con, "r2", "u1", ["a"], "control", T0 + timedelta(hours=2))
    ingest(con, [
        event("u1", "a", "click", T0 + timedelta(hours=3), request_id="r1"),  # named: r1, not the later r2
        event("u1", "a", "cart", T0 + timedelta(hours=3)),  # no request_id: the latest exposure, r2
        event("u1", "b", "buy", T0 + timedelta(hours=4), price=3.0, request_id="r1"),
    ])
    assert attributed(con) == [("u1", "a", "cart", "r2"), ("u1", "a", "click", "r1"), ("u1", "b", "buy", "r1")]


def test_a_request_id_that_names_no_exposure_of_that_user_and_item_falls_back_to_the_window_rule(con):
    shown(con, "r1", "u1", ["a"], "control", T0)
    shown(con, "r2", "u2", ["b"], "control", T0)
    ingest(con, [
        event("u1", "a", "click", T0 + timedelta(hours=1), request_id="no-such-answer"),  # -> r1 by the window
        event("u1", "a", "cart", T0 + timedelta(hours=1), request_id="r2"),  # r2 showed b to u2: -> r1
        event("u2", "a", "click", T0 + timedelta(hours=1), request_id="r1"),  # r1 showed a to u1, not to u2: nothing
        event("u1", "c", "click", T0 + timedelta(hours=1), request_id="r1"),  # r1 did not show c: nothing
    ])
    assert attributed(con) == [("u1", "a", "cart", "r1"), ("u1", "a", "click", "r1")]


def test_the_window_is_measured_from_the_named_exposure_and_its_edge_is_inside(con):
    shown(con, "r1", "u1", ["a"], "control", T0)
    shown(con, "r2", "u1", ["a"], "control", T0 + timedelta(hours=20))
    ingest(con, [
        event("u1", "a", "click", T0 + timedelta(hours=24), request_id="r1"),  # exactly 24 h after r1: in
        event("u1", "a", "cart", T0 + timedelta(hours=24, seconds=1), request_id="r1"),  # 1 s past: nothing,
        # although r2 (4 h old) would take it by the window rule: the event says where it came from
        event("u1", "a", "buy", T0 - timedelta(seconds=1), price=1.0, request_id="r1"),  # before r1 was shown
        event("u1", "a", "click", T0 + timedelta(hours=44), event_id="late"),  # 24 h after r2, no request_id: r2
        event("u1", "a", "click", T0 + timedelta(hours=44, seconds=1), event_id="too-late"),  # nothing
    ])
    assert attributed(con) == [("u1", "a", "click", "r1"), ("u1", "a", "click", "r2")]
    assert [r for (r,) in con.execute(f"SELECT event_id FROM ({attributed_sql()}) WHERE request_id = 'r2'")
            .fetchall()] == ["late"]
    assert ("u1", "a", "cart", "r1") in attributed(con, hours=25)  # a wider window takes the named one in


def test_one_event_counts_once_and_tenants_never_mix(con):
    shown(con, "r1", "shop:u1", ["shop:a"], "control", T0)
    shown(con, "r1", "shop:u1", ["shop:a"], "control", T0)  # the same answer written twice (a retried write)
    shown(con, "r9", "mall:u1", ["mall:a"], "control", T0)
    ingest(con, [
        event("shop:u1", "shop:a", "click", T0 + timedelta(minutes=5), request_id="r1"),
        event("shop:u1", "shop:a", "cart", T0 + timedelta(minutes=6)),
        # another tenant's user and item naming shop's answer: not attributed to it, nor to anything of shop's
        event("mall:u1", "mall:a", "click", T0 + timedelta(minutes=5), request_id="r1"),  # -> r9 (window rule)
        event("mall:u2", "mall:a", "click", T0 + timedelta(minutes=5), request_id="r1"),  # mall:u2 saw nothing
    ])
    assert attributed(con) == [("mall:u1", "mall:a", "click", "r9"), ("shop:u1", "shop:a", "cart", "r1"),
                               ("shop:u1", "shop:a", "click", "r1")]


def test_exposures_of_every_experiment_compete_and_each_is_credited_with_its_own(con):
    shown(con, "x1", "u1", ["a"], "control", T0)  # experiment exp
    shown(con, "o1", "u1", ["a"], "treatment", T0 + timedelta(hours=1), experiment="other")
    ingest(con, [
        event("u1", "a", "click", T0 + timedelta(hours=2)),  # the latest exposure is other's: exp gets nothing
        event("u1", "a", "buy", T0 + timedelta(hours=2), price=5.0, request_id="x1"),  # named: exp's
    ])
    mine, theirs = outcomes(con, "exp")["control"], outcomes(con, "other")["treatment"]
    assert (mine["clicks"].tolist(), mine["buyer"].tolist(), mine["revenue"].tolist()) == ([0], [1], [5.0])
    assert (theirs["clicks"].tolist(), theirs["buyer"].tolist()) == ([1], [0])


def test_a_store_made_before_request_ids_is_read_by_the_window_rule(tmp_path):
    """A store whose events table predates `request_id`, opened read-only (so not given the column)."""
    db = str(tmp_path / "old.duckdb")
    c = store.connect(db)
    shown(c, "r1", "u1", ["a"], "control", T0)
    c.close()
    raw = duckdb.connect(db)
    raw.execute("ALTER TABLE events DROP COLUMN request_id")
    raw.execute("ALTER TABLE exposures DROP COLUMN propensity")
    raw.execute("INSERT INTO events (event_id, user_id, item_id, type, ts) VALUES ('e1', 'u1', 'a', 'click', ?)",
                [T0 + timedelta(minutes=1)])
    raw.close()
    old = store.connect(db, read_only=True)
    assert not has_column(old, "events", "request_id")
    assert outcomes(old, "exp")["control"]["clicks"].tolist() == [1]
    assert export_log(old, str(tmp_path / "log.csv")) == {"rows": 0, "clicks": 0}  # (nothing explored then)
    old.close()
    writable = store.connect(db)  # a writable connection gives it the columns
    assert has_column(writable, "events", "request_id") and has_column(writable, "exposures", "propensity")
    writable.close()
