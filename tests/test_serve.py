"""The HTTP service for real: a uvicorn server in its own process on a free loopback port."""
import json

from conftest import DEMO, TAOBAO, call
from test_cli import run


def test_keys_are_required_and_scoped(server):
    base, keys = server
    assert call(base, "GET", "/healthz")[0] == 200
    assert call(base, "GET", "/v1/users/taobao:1/profile")[0] == 401
    assert call(base, "GET", "/v1/users/taobao:1/profile", key="hx_wrong")[0] == 401
    assert call(base, "GET", "/v1/users/taobao:1/profile", key=keys["read"])[0] == 200
    status, body = call(base, "POST", "/v1/events", key=keys["read"], body={"events": []})
    assert status == 403 and "needs 'write'" in body["detail"]
    status, body = call(base, "GET", "/v1/segments", headers={"Authorization": f"Bearer {keys['admin']}"})
    assert status == 200 and body["tenants"][0]["tenant"] == "taobao" and body["tenants"][0]["segments"]


def test_profile_recommendations_search_metrics(server):
    base, keys = server
    status, profile = call(base, "GET", "/v1/users/taobao:1000251/profile", key=keys["read"])
    assert status == 200 and profile["user_id"] == "taobao:1000251" and profile["segment"]
    status, body = call(base, "GET", "/v1/users/taobao:nobody/profile", key=keys["read"])
    assert status == 404 and "unknown user" in body["detail"]
    status, recs = call(base, "GET", "/v1/users/taobao:1000251/recommendations?k=5&explain=true", key=keys["read"])
    assert status == 200 and len(recs["items"]) == 5 and all(i["reason"] for i in recs["items"])
    assert call(base, "GET", "/v1/users/taobao:1000251/recommendations?k=0", key=keys["read"])[0] == 422
    status, text = call(base, "GET", "/metrics", key=keys["read"])
    assert status == 200 and 'huaxiang_requests_total{route="/v1/users/{user_id}/profile",status="200"}' in text
    status, spec = call(base, "GET", "/openapi.json")
    assert status == 200 and "/v1/events" in spec["paths"]


def test_segments_can_be_differentially_private(server):
    base, keys = server
    exact = call(base, "GET", "/v1/segments", key=keys["read"])[1]["tenants"]
    status, noisy = call(base, "GET", "/v1/segments?epsilon=0.5", key=keys["read"])
    assert status == 200 and noisy["privacy"]["epsilon"] == 0.5
    assert [p["tenant"] for p in noisy["tenants"]] == [p["tenant"] for p in exact] == ["taobao"]
    noisy = noisy["tenants"][0]
    assert "clusters" not in noisy and "drift" not in noisy and "features" not in noisy
    assert [s["segment"] for s in noisy["segments"]] == [s["segment"] for s in exact[0]["segments"]]
    assert all("definition" not in s for s in noisy["segments"])
    assert call(base, "GET", "/v1/segments?epsilon=0.001", key=keys["read"])[0] == 422


def test_events_batch_keeps_the_valid_and_names_the_bad(server):
    base, keys = server
    batch = {"events": [
        {"event_id": "api-1", "user_id": "taobao:new-user", "item_id": "taobao:2268318", "type": "view",
         "ts": "2017-12-03T10:00:00"},
        {"event_id": "api-2", "user_id": "taobao:new-user", "item_id": "taobao:2268318", "type": "teleport",
         "ts": "2017-12-03T10:01:00"},
        {"event_id": "api-3", "user_id": "taobao:new-user", "type": "buy", "ts": "not a time"},
        "not an object",
        {"event_id": "api-4", "user_id": "taobao:new-user", "item_id": "taobao:x'; DROP TABLE events; --", "type": "cart",
         "ts": "2017-12-03T10:02:00"},
    ]}
    status, body = call(base, "POST", "/v1/events", key=keys["write"], body=batch)
    assert status == 200 and body["received"] == 5 and body["added"] == 2 and body["quarantined"] == 3
    assert body["profiles_refreshed"] == 1
    fresh = call(base, "GET", "/v1/users/taobao:new-user/profile", key=keys["read"])[1]  # live, no rebuild
    assert fresh["n_view"] == 1 and fresh["n_cart"] == 1
    assert {r["index"] for r in body["rejected"]} == {1, 2, 3}
    assert any(r["field"] == "type" for r in body["rejected"]) and any(r["field"] == "ts" for r in body["rejected"])
    again = call(base, "POST", "/v1/events", key=keys["write"], body=batch)[1]  # redelivery: counted once
    assert again["added"] == 0 and again["duplicates"] == 2


def test_bad_bodies_get_4xx_with_a_message(server):
    base, keys = server
    status, body = call(base, "POST", "/v1/events", key=keys["write"], body=b"x" * 300_000)
    assert status == 413 and "over the limit" in body["detail"]
    assert call(base, "POST", "/v1/events", key=keys["write"], body=b"{not json")[0] == 400
    assert call(base, "POST", "/v1/events", key=keys["write"], body={"event": []})[0] == 422
    deep = b'{"events": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert call(base, "POST", "/v1/events", key=keys["write"], body=deep)[0] in (400, 422)


def store_mentions(db: str, user_id: str) -> dict[str, int]:
    """Every place in the store (any column of any table, cast to text) and the models' folder (every version)
    that names the user."""
    from pathlib import Path

    import duckdb
    con = duckdb.connect(db, read_only=True)
    found = {}
    for table, column in con.execute("""SELECT table_name, column_name FROM information_schema.columns
            WHERE table_schema = 'main'""").fetchall():
        n = con.execute(f'SELECT count(*) FROM "{table}" WHERE contains(CAST("{column}" AS VARCHAR), ?)',
                        [user_id]).fetchone()[0]
        if n:
            found[f"{table}.{column}"] = n
    con.close()
    for f in Path(db + ".models").rglob("*.json"):
        if user_id in f.read_text():
            found[str(f)] = 1
    return found


def test_forget_leaves_nothing(tmp_path):
    db = str(tmp_path / "f.duckdb")
    reviews = DEMO / "All_Beauty_5_head1500.json.gz"
    run("ingest", str(TAOBAO), "--format", "taobao", "--namespace", "taobao", "--db", db)
    run("ingest", str(reviews), "--format", "amazon-reviews", "--namespace", "amazon", "--db", db)
    run("build", "--db", db)
    run("graph", "--build", "--db", db)
    run("train", "recommender", "--model", "itemknn", "--db", db)
    run("train", "recommender", "--model", "popularity", "--no-promote", "--db", db)  # (a second version)
    import duckdb
    con = duckdb.connect(db, read_only=True)
    ids = [u for (u,) in con.execute("SELECT user_id FROM profiles").fetchall()]
    reviewer = con.execute("""SELECT user_id FROM reviews GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1""").fetchone()[0]
    con.close()
    shopper = "taobao:1000251"
    for uid in (reviewer, shopper):
        assert not any(uid in other for other in ids if other != uid)  # a distinctive id, so a scan means it
        assert store_mentions(db, uid)  # present before
        out = json.loads(run("forget", uid, "--db", db, "--json").stdout)
        assert out["removed"]
        assert store_mentions(db, uid) == {}
    gone = run("forget", shopper, "--db", db, check=False)
    assert gone.returncode == 1 and "nothing of them" in gone.stderr


def test_delete_user_over_http_needs_admin(server):
    base, keys = server
    assert call(base, "DELETE", "/v1/users/taobao:1000004", key=keys["write"])[0] == 403
    status, body = call(base, "DELETE", "/v1/users/taobao:1000004", key=keys["admin"])
    assert status == 200 and body["removed"]["events"] > 0
    assert call(base, "GET", "/v1/users/taobao:1000004/profile", key=keys["read"])[0] == 404
    assert call(base, "DELETE", "/v1/users/taobao:1000004", key=keys["admin"])[0] == 404
