"""Clicks, carts and purchases attributed to what was shown (the latest exposure of the item to the user within the
window), and an experiment's per-user outcome fed to its report."""
from datetime import datetime, timedelta

import pytest

from huaxiang import store
from huaxiang.errors import HuaxiangError
from huaxiang.experiments.attribution import attributed_sql, outcomes
from huaxiang.experiments.exposures import rows_of, store_rows
from huaxiang.experiments.stats import experiment_report
from huaxiang.ingest import ingest_records

T0 = datetime(2026, 11, 1, 12, 0, 0)


def shown(con, request_id, user, items, variant, at, experiment="exp", latency=5.0):
    rows = rows_of(request_id, user, "recommendations", [{"item_id": i, "score": 1.0} for i in items], "m",
                   ts=at, latency_ms=latency)
    store_rows(con, [r[:9] + (experiment, variant, r[11]) for r in rows])


def event(user, item, kind, at, price=None, quantity=None, event_id=None):
    e = {"user_id": user, "item_id": item, "type": kind, "ts": at.isoformat(), "event_id": event_id or
         f"{user}-{item}-{kind}-{at.isoformat()}"}
    return {**e, **({"price": price} if price is not None else {}), **({"quantity": quantity} if quantity else {})}


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
