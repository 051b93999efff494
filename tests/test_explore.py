"""Exploration: serving with --explore records each shown item's propensity; `huaxiang exposures export` writes the
explored traffic with its attributed clicks; `huaxiang ope --format exposures` evaluates another policy on it."""
import hashlib
import json
import random
from collections import Counter

import duckdb
import numpy as np
import pandas as pd
import pytest

from conftest import call, cli, start_server, taobao_store

from huaxiang.experiments.explore import explore


def test_each_shown_items_propensity_is_the_chance_it_had_there():
    pool = [{"item_id": c, "score": 1.0 - n / 10} for n, c in enumerate("abcdef")]
    rng = random.Random(7)
    draws, seen = 40_000, Counter()
    logged = {}
    for _ in range(draws):
        for j, item in enumerate(explore(pool, 3, 0.4, rng)):
            seen[item["item_id"], j] += 1
            assert logged.setdefault((item["item_id"], j), item["propensity"]) == item["propensity"]
    for item in pool:  # every pool item may appear anywhere; the j-th one at j more often
        for j in range(3):
            expected = 0.6 * (pool.index(item) == j) + 0.4 / 6
            assert logged[item["item_id"], j] == pytest.approx(expected)
            assert seen[item["item_id"], j] / draws == pytest.approx(expected, abs=0.01)
    assert explore(pool, 3, 0.0) == [{**i, "propensity": 1.0} for i in pool[:3]]  # (no exploration: the top-k)
    assert {i["propensity"] for i in explore(pool, 3, 1.0)} == {1 / 6}
    assert len(explore(pool[:2], 3, 0.5)) == 2  # (a pool smaller than k: all of it)
    with pytest.raises(ValueError):
        explore(pool, 3, 1.5)


def click_chance(item_id: str) -> float:
    """The scripted clients' click probability: a fixed property of the item (half the items are liked)."""
    return 0.45 if hashlib.sha256(item_id.encode()).digest()[0] % 2 else 0.05


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    db = taobao_store(tmp_path_factory.mktemp("explore"))
    key = cli("keys", "create", "--scope", "admin", "--db", db).strip().splitlines()[-1]
    return db, key


def serve_and_click(db, key, epsilon, users, rng, *, export=None) -> tuple[list[dict], dict]:
    """Each of `users` (new, so every one gets the same cold-start pool) asks once for 5 recommendations from a
    server exploring with `epsilon` over a pool of 10, and clicks each item shown with its `click_chance`; the
    clicks are sent back with the answer's request_id. `export`: also export the log through the running server."""
    answers, clicks = [], []
    with start_server(db, "--explore", str(epsilon), "--explore-pool", "10") as base:
        for user in users:
            status, got = call(base, "GET", f"/v1/users/{user}/recommendations?k=5&explain=false", key=key)
            assert status == 200 and len(got["items"]) == 5, got
            answers.append(got)
            clicks += [{"event_id": f"{got['request_id']}-{i['item_id']}", "user_id": user, "item_id": i["item_id"],
                        "type": "click", "ts": pd.Timestamp.now("UTC").isoformat(), "request_id": got["request_id"]}
                       for i in got["items"] if rng.random() < click_chance(i["item_id"])]
        status, stored = call(base, "POST", "/v1/events", key, {"events": clicks})
        assert status == 200, stored
        remote = cli("exposures", "export", export, "--server", base, "--key", key) if export else None
    return answers, {"clicks": clicks, "remote": remote}


def test_explored_traffic_is_exported_and_evaluated_off_policy(store, tmp_path):
    db, key = store
    rng = np.random.default_rng(3)
    uniform, first = serve_and_click(db, key, 1.0, [f"taobao:cold-u-{n}" for n in range(400)], rng,
                                 export=str(tmp_path / "remote.parquet"))
    greedy, sent = serve_and_click(db, key, 0.2, [f"taobao:cold-g-{n}" for n in range(400)], rng)
    pool = {i["item_id"] for a in uniform for i in a["items"]}
    assert len(pool) == 10  # (one pool of 10 for all these new users)
    # the pool's first 5: an answer of the greedy branch (every item's propensity above ε/|pool|)
    top = next([i["item_id"] for i in a["items"]] for a in greedy if all(i["propensity"] > 0.02 for i in a["items"]))
    # every item of the exports carries its propensity; the clicks sent back are attributed to their answers
    out = cli("exposures", "export", str(tmp_path / "all.csv"), "--db", db)
    assert "exposures with propensities" in out
    log = pd.read_csv(tmp_path / "all.csv")
    assert len(log) == 5 * 800 and log["click"].sum() == len(first["clicks"]) + len(sent["clicks"])
    assert set(log.loc[log.user_id.str.startswith("taobao:cold-u-"), "propensity"].round(9)) == {0.1}
    mine = log[log.request_id == greedy[0]["request_id"]]
    assert list(mine["propensity"]) == [i["propensity"] for i in greedy[0]["items"]]
    remote = pd.read_parquet(tmp_path / "remote.parquet")
    assert len(remote) == 5 * 400 and remote["click"].sum() == len(first["clicks"]) and "wrote" in first["remote"]
    # the uniform log evaluates the greedy policy: its estimate is near the greedy log's own CTR and the truth
    with duckdb.connect() as con:
        for name, prefix in (("uniform", "taobao:cold-u-"), ("greedy", "taobao:cold-g-")):
            con.execute(f"COPY (SELECT * FROM read_csv('{tmp_path / 'all.csv'}') WHERE starts_with(user_id, "
                        f"'{prefix}')) TO '{tmp_path / name}.csv' (HEADER)")
    mean_pool = np.mean([click_chance(i) for i in pool])
    truth = np.mean([0.8 * click_chance(top[j]) + 0.2 * mean_pool for j in range(5)])
    got = json.loads(cli("ope", "--log", str(tmp_path / "uniform.csv"), "--format", "exposures", "--target-log",
                         str(tmp_path / "greedy.csv"), "--json"))
    assert got["n"] == 5 * 400
    for name in ("ips", "snips", "dr"):
        e = got["estimates"][name]
        se = e["se"]
        assert abs(e["value"] - got["on_policy"]) < 4 * se + 0.02, (name, e, got["on_policy"])
        assert abs(e["value"] - truth) < 4 * se + 0.01, (name, e, truth)


def test_the_export_holds_the_explored_rows_of_the_tenants_asked_with_their_clicks(tmp_path):
    from datetime import datetime, timedelta, timezone

    from huaxiang import store
    from huaxiang.experiments.attribution import export_log
    from huaxiang.experiments.exposures import record, store_lines
    from huaxiang.ingest import ingest_records
    con = store.connect(str(tmp_path / "s.duckdb"))
    t0 = datetime(2026, 11, 1, 12)
    shown = lambda t, p: [{"item_id": f"{t}:{n}", "score": 1.0, "propensity": p} for n in (1, 2)]  # noqa: E731
    store_lines(con, [record("r1", "a:u1", "recommendations", shown("a", 0.5), ts=t0),
                      record("r2", "b:u2", "page:recommendations", shown("b", 0.25), ts=t0 + timedelta(hours=1)),
                      record("r3", "a:u1", "search", [{"item_id": "a:1", "score": 2.0}], ts=t0),  # (no propensity)
                      record("r4", "a:u3", "recommendations", shown("a", 0.5), ts=t0 + timedelta(hours=3))])
    ingest_records(con, [{"event_id": "c1", "user_id": "a:u1", "item_id": "a:2", "type": "click",
                          "ts": (t0 + timedelta(minutes=5)).isoformat(), "request_id": "r1"},
                         {"event_id": "c2", "user_id": "b:u2", "item_id": "b:1", "type": "click",  # (by time)
                          "ts": (t0 + timedelta(hours=2)).isoformat()}], "api:1", future_tolerance_s=10 ** 9)
    assert export_log(con, str(tmp_path / "all.parquet")) == {"rows": 6, "clicks": 2}
    log = pd.read_parquet(tmp_path / "all.parquet")
    assert list(zip(log.request_id, log.item_id, log.position, log.propensity, log.click)) == [
        ("r1", "a:1", 1, 0.5, 0), ("r1", "a:2", 2, 0.5, 1), ("r2", "b:1", 1, 0.25, 1), ("r2", "b:2", 2, 0.25, 0),
        ("r4", "a:1", 1, 0.5, 0), ("r4", "a:2", 2, 0.5, 0)]
    assert export_log(con, str(tmp_path / "a.csv"), tenants=frozenset({"a"}), until=t0 + timedelta(hours=2)) == {
        "rows": 2, "clicks": 1}
    assert list(pd.read_csv(tmp_path / "a.csv").request_id) == ["r1", "r1"]
    beijing = timezone(timedelta(hours=8))  # (a time with a zone: the same instant)
    assert export_log(con, str(tmp_path / "a.csv"), tenants=frozenset({"a"}),
                      until=(t0 + timedelta(hours=2)).replace(tzinfo=timezone.utc).astimezone(beijing))["rows"] == 2
    assert export_log(con, str(tmp_path / "none.csv"), tenants=frozenset({"c"})) == {"rows": 0, "clicks": 0}
