"""The model registry: version numbers, promotion and rollback, registry specs, concurrent registrations, training
that measures and registers, `retrain` promoting or refusing by its margin, and a forgotten user leaving every
version's snapshot."""
import json
import multiprocessing
import random
import threading

import numpy as np
import pytest

from huaxiang.cli.models import parse_duration
from huaxiang.errors import HuaxiangError
from huaxiang.ingest import ingest_file
from huaxiang.models import registry
from huaxiang.models.seqrec.data import Sequences
from huaxiang.recommend.store_model import (drop_user, has_model, load_store_recommender, model_dir,
                                            retrain_store_recommender, train_store_recommender, validation_metrics)
from huaxiang.store import connect

from conftest import cli


def add(db, name, promote=True, ndcg=0.1):
    version, _ = registry.new_version(db, "recommender")
    return registry.register(db, "recommender", name, version, {"model": name}, {"ndcg@10": ndcg}, None, None,
                             promote)


def test_versions_are_numbered_promoted_and_rolled_back(tmp_path):
    db = str(tmp_path / "s.duckdb")
    assert registry.versions(db) == [] and registry.promoted(db, "recommender") is None
    assert [add(db, n)["version"] for n in ("itemknn", "popularity", "itemknn")] == [1, 2, 3]
    assert (tmp_path / "s.duckdb.models" / "recommender" / "v3").is_dir()
    assert registry.promoted(db, "recommender")["version"] == 3
    assert add(db, "sasrec", promote=False)["promoted"] is False  # listed, not served
    assert registry.promoted(db, "recommender")["version"] == 3
    registry.promote(db, "recommender", 1)
    assert registry.promoted(db, "recommender")["version"] == 1
    assert registry.rollback(db, "recommender")["version"] == 3  # back to the one before
    assert registry.rollback(db, "recommender")["version"] == 2
    assert registry.rollback(db, "recommender")["version"] == 1
    with pytest.raises(HuaxiangError, match="no earlier promoted recommender version"):
        registry.rollback(db, "recommender")
    with pytest.raises(HuaxiangError, match="no recommender version 9 .*versions: 1 itemknn \\(promoted\\), 2 pop"):
        registry.promote(db, "recommender", 9)
    # kinds are numbered apart; a reserved number that was never registered is skipped, not reused
    assert registry.new_version(db, "classifier")[0] == 1
    assert registry.new_version(db, "recommender")[0] == 5 and add(db, "itemknn")["version"] == 6
    listed = registry.versions(db, "recommender")
    assert [v["version"] for v in listed] == [1, 2, 3, 4, 6] and sum(v["promoted"] for v in listed) == 1
    assert listed[0]["path"] == "recommender/v1" and listed[0]["created_at"].endswith("+00:00")


def test_specs_resolve_to_versions(tmp_path):
    db = str(tmp_path / "s.duckdb")
    add(db, "itemknn")
    add(db, "popularity")
    add(db, "itemknn", promote=False)
    resolve = lambda spec: registry.resolve(db, "recommender", spec)["version"]  # noqa: E731
    assert resolve(None) == 2 and resolve("3") == 3 and resolve("@1") == 1 and resolve("itemknn@1") == 1
    assert resolve("itemknn") == 3  # the promoted one is no itemknn: the newest itemknn
    assert resolve("popularity") == 2
    registry.promote(db, "recommender", 1)
    assert resolve("itemknn") == 1  # the promoted itemknn, though a newer one exists
    for spec, message in (("popularity@3", "'popularity@3'"), ("nope", "'nope'"), ("7", "'7'"), ("x@y", "a number")):
        with pytest.raises(HuaxiangError, match=message) as caught:
            registry.resolve(db, "recommender", spec)
        assert "\n" not in str(caught.value)
    with pytest.raises(HuaxiangError, match="no promoted classifier .*no classifier versions yet"):
        registry.resolve(db, "classifier", None)


def _register_many(db, n):
    for _ in range(n):
        add(db, "itemknn", promote=False)


def test_concurrent_registrations_lose_no_version(tmp_path):
    db = str(tmp_path / "s.duckdb")
    procs = [multiprocessing.get_context("fork").Process(target=_register_many, args=(db, 15)) for _ in range(3)]
    threads = [threading.Thread(target=_register_many, args=(db, 15)) for _ in range(3)]
    for w in procs + threads:
        w.start()
    for w in procs + threads:
        w.join()
    assert all(p.exitcode == 0 for p in procs)
    assert sorted(v["version"] for v in registry.versions(db)) == list(range(1, 91))
    assert len(list((tmp_path / "s.duckdb.models" / "recommender").iterdir())) == 90


def test_duration_parsing():
    assert parse_duration("30m") == 1800 and parse_duration("6h") == 21600 and parse_duration("1d") == 86400
    assert parse_duration("1h30m") == 5400 and parse_duration("45s") == 45
    for bad in ("", "6", "h", "6x", "0m", "-1h", "6h extra"):
        with pytest.raises(HuaxiangError, match="--every"):
            parse_duration(bad)


class Fixed:
    """A 'model' that scores every item the same for everyone: item i scores i."""

    def __init__(self, n):
        self.n = n

    def score(self, histories):
        return np.tile(np.arange(self.n + 1, dtype=np.float64), (len(histories), 1))


def test_validation_ranks_within_the_tenant():
    # items 1-3 of tenant a, 4-6 of tenant b; every user's last item is 3, the best of tenant a but 4th of all
    data = Sequences([f"a:u{i}" for i in range(5)], [[1, 2, 3]] * 5, ["a:1", "a:2", "a:3", "b:4", "b:5", "b:6"])
    found = validation_metrics(Fixed(6), data)
    assert found == {"ndcg@10": 1.0, "hr@10": 1.0, "valid_users": 5}
    one_tenant = Sequences(data.users, data.seqs, ["1", "2", "3", "4", "5", "6"])
    assert validation_metrics(Fixed(6), one_tenant)["ndcg@10"] == pytest.approx(1 / np.log2(5), abs=1e-6)
    assert validation_metrics(Fixed(6), data, max_users=2)["valid_users"] == 2


@pytest.fixture()
def store(tmp_path):
    """Users walk along one of three item chains (a window of 4-7 steps, seeded): the next item follows the last."""
    rng = random.Random(7)
    rows = ["user_id,item_id,type,ts"]
    for u in range(150):
        chain, start = rng.randrange(3), rng.randrange(6)
        for n in range(rng.randrange(4, 8)):
            rows.append(f"u{u},c{chain}i{start + n},view,2024-01-{1 + n:02d}T{u % 24:02d}:00:00")
    (tmp_path / "events.csv").write_text("\n".join(rows) + "\n")
    db = str(tmp_path / "s.duckdb")
    con = connect(db)
    ingest_file(con, str(tmp_path / "events.csv"), "csv")
    con.close()
    return db


def test_training_registers_measured_versions_and_serves_the_promoted(store):
    db = store
    con = connect(db, read_only=True)
    knn = train_store_recommender(con, db, "itemknn", "none")
    pop = train_store_recommender(con, db, "popularity", "none", promote=False)
    con.close()
    assert (knn["version"], knn["promoted"], pop["version"], pop["promoted"]) == (1, True, 2, False)
    assert knn["data_from"].startswith("2024-01-01") and knn["data_to"].startswith("2024-01-07")
    assert knn["metrics"]["valid_users"] == 150  # every user has 4 or more items
    # the chains make the next item predictable from the last: item-KNN must beat popularity clearly
    assert knn["metrics"]["ndcg@10"] > 0.5 > pop["metrics"]["ndcg@10"] + 0.2
    assert model_dir(db).name == "v1" and has_model(db)
    rec = load_store_recommender(db)
    assert (rec.meta["name"], rec.meta["version"]) == ("itemknn", "1")
    other = load_store_recommender(db, model="popularity")
    assert (other.meta["name"], other.meta["version"], type(other.model).__name__) == ("popularity", "2", "Popularity")
    with pytest.raises(HuaxiangError, match="'sasrec'"):
        load_store_recommender(db, model="sasrec")
    listed = json.loads(cli("models", "list", "--db", db, "--json"))
    assert [(v["version"], v["name"], v["promoted"]) for v in listed] == [(1, "itemknn", True),
                                                                          (2, "popularity", False)]
    assert listed[0]["params"] == {"model": "itemknn", "encoder": "none"}
    table = cli("models", "list", "--db", db)
    assert "itemknn" in table and "popularity" in table and "2024-01-01" in table
    cli("models", "promote", "2", "--db", db)
    assert load_store_recommender(db).meta["version"] == "2" and model_dir(db).name == "v2"
    assert "version 1 (itemknn) is promoted again" in cli("models", "rollback", "--db", db)
    assert load_store_recommender(db).meta["version"] == "1"


def test_retrain_promotes_only_within_the_margin(store):
    db = store
    con = connect(db, read_only=True)
    train_store_recommender(con, db, "itemknn", "none")
    refused = retrain_store_recommender(con, db, "none", model="popularity", margin=0.0)
    assert refused["promoted"] is False and refused["promoted_version"] == 1 and "<" in refused["reason"]
    assert registry.promoted(db, "recommender")["version"] == 1 and len(registry.versions(db)) == 2
    same = retrain_store_recommender(con, db, "none", margin=0.0)  # the promoted one's model: itemknn again
    assert same["name"] == "itemknn" and same["ndcg@10"] == refused["promoted_ndcg@10"] and same["promoted"]
    con.close()
    # through the command, with a margin wide enough for popularity
    decision = json.loads(cli("retrain", "--db", db, "--model", "popularity", "--margin", "0.9", "--json"))
    assert decision["promoted"] is True and decision["version"] == 4 and decision["promoted_version"] == 3
    assert registry.promoted(db, "recommender")["name"] == "popularity"
    said = cli("retrain", "--db", db, "--model", "itemknn", "--margin", "0")  # better than popularity: promoted
    assert "itemknn version 5: promoted (validation NDCG@10" in said
    assert [v["version"] for v in registry.versions(db)] == [1, 2, 3, 4, 5]


def test_a_forgotten_user_leaves_every_version(store):
    db = store
    con = connect(db, read_only=True)
    train_store_recommender(con, db, "itemknn", "none")
    train_store_recommender(con, db, "popularity", "none", promote=False)
    con.close()
    snaps = sorted((registry.root(db) / "recommender").glob("v*/snapshot.json"))
    assert len(snaps) == 2 and all('"u5"' in s.read_text() for s in snaps)
    assert drop_user(db, "u5") == 2  # their history, in each of the two versions
    assert all('"u5"' not in s.read_text() for s in snaps)
    assert drop_user(db, "u5") == 0
    assert "u5" not in load_store_recommender(db, model="2").snapshot["histories"]


def test_a_recommender_saved_before_versions_is_ignored(store):
    db = store
    old = registry.root(db) / "recommender"
    old.mkdir(parents=True)
    (old / "recommender.json").write_text("{}")
    assert not has_model(db) and model_dir(db) is None
    with pytest.raises(HuaxiangError, match="no recommender for .* run `huaxiang train recommender"):
        load_store_recommender(db)


def test_a_model_saved_elsewhere_is_registered_by_its_folder(tmp_path):
    db = str(tmp_path / "s.duckdb")
    (tmp_path / "clf").mkdir()
    add(db, "itemknn")
    entry = registry.register_folder(db, "classifier", "lora", str(tmp_path / "clf"), {"epochs": 3},
                                     {"macro_f1": 0.81})
    assert (entry["kind"], entry["version"], entry["promoted"]) == ("classifier", 1, True)
    assert entry["path"] == str(tmp_path / "clf") and registry.folder(db, entry) == tmp_path / "clf"
    assert registry.promoted(db, "recommender")["version"] == 1  # kinds are apart
    with pytest.raises(HuaxiangError, match="no such model folder"):
        registry.register_folder(db, "classifier", "lora", str(tmp_path / "absent"), {}, {})
    assert "classifier 1" in cli("models", "list", "--db", db, "--kind", "classifier")


def test_a_sequential_model_is_measured_as_served_and_retrained_with_its_settings(store):
    from huaxiang.recommend.store_model import store_sequences
    db = store
    con = connect(db, read_only=True)
    meta = train_store_recommender(con, db, "hybrid", "none", {"epochs": 2})
    assert 0.0 <= meta["metrics"]["ndcg@10"] <= 1.0 and meta["metrics"]["valid_users"] == 150
    # SASRec's (and the hybrid's) measured fit is the one served: no second fit, the same figures when re-measured
    served = load_store_recommender(db)
    assert validation_metrics(served.model, store_sequences(con)) == meta["metrics"]
    decision = retrain_store_recommender(con, db, "none", margin=1.0)
    con.close()
    assert decision["name"] == "hybrid" and decision["promoted"] and decision["version"] == 2
    assert registry.versions(db)[-1]["params"] == {"model": "hybrid", "encoder": "none", "sasrec": {"epochs": 2}}


def test_a_sasrec_retrain_starts_from_the_promoted_sasrec(store, tmp_path):
    """Retraining a promoted SASRec starts from its weights (every item carried over, matched by id), and says so in
    the decision and the version's parameters; --cold (warm=False) starts from scratch."""
    db = store
    con = connect(db, read_only=True)
    first = train_store_recommender(con, db, "sasrec", "none", {"epochs": 3})
    warm = retrain_store_recommender(con, db, "none", margin=1.0, sasrec={"epochs": 3})
    cold = retrain_store_recommender(con, db, "none", margin=1.0, sasrec={"epochs": 3}, warm=False)
    con.close()
    assert (warm["warm_from"], cold["warm_from"]) == (first["version"], None)
    entries = {v["version"]: v for v in registry.versions(db)}
    assert entries[warm["version"]]["params"]["warm_from"] == first["version"]
    assert "warm_from" not in entries[cold["version"]]["params"]
    model = load_store_recommender(db, model=str(warm["version"])).model
    assert model.warm_["items_new"] == 0 and model.warm_["items_carried"] > 0
    assert load_store_recommender(db, model=str(cold["version"])).model.warm_ is None
