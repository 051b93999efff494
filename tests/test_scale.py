"""The Parquet pipeline on DuckDB and on Spark (`local[2]`, real PySpark and Java): the same profiles from the same
input — counts exactly, floats within 1e-9 — on the bundled real-data slices and on a synthetic log; incremental
builds; the CLI's export and errors."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from huaxiang import scale
from huaxiang.config import load_config
from huaxiang.demo import DEMO_SOURCES, demo_path
from huaxiang.ingest import ingest_file
from huaxiang.store import connect

from conftest import SHARED

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


def assert_parity(inp: Path, tmp: Path, **kw) -> pd.DataFrame:
    cfg = load_config()
    for engine in scale.ENGINES:
        scale.build(engine, str(inp), str(tmp / engine), cfg, **kw)
    for table in ("features", "profiles"):
        duck, spark = (scale.read_profiles(str(tmp / e), table) for e in scale.ENGINES)
        assert len(duck) > 0
        assert differences(duck, spark) == {}, table
    return duck


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
    inp = export_store(demo_store, tmp_path / "in")
    assert (inp / "events" / "date=2017-12-03").is_dir()  # partitioned by day
    duck = assert_parity(inp, tmp_path)
    assert {u.split(":")[0] for u in duck.user_id} >= {"taobao", "retail", "beauty", "amazon", "cdnow", "digi"}
    # the text-derived parts ran on both (mapInPandas on Spark): keywords from titles, aspects from reviews
    assert duck.keywords.notna().sum() > 100 and duck.aspects_praised.notna().sum() > 100


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
    duck = assert_parity(export_store(store, tmp_path / "in"), tmp_path, embed=True)
    assert duck.price_band.notna().all() and duck.top_brand.notna().any()
    vectors = np.stack(duck.embedding.dropna().to_list())
    assert len(vectors) > 0.9 * len(duck) and vectors.shape[1] == 384
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)


def test_an_incremental_build_rewrites_only_the_users_of_new_partitions(demo_store, tmp_path):
    inp = export_store(demo_store, tmp_path / "in")
    last_day = inp / "events" / "date=2017-12-03"
    shutil.move(last_day, tmp_path / "held")
    cfg, out = load_config(), tmp_path / "out"
    first = scale.build("duckdb", str(inp), str(out), cfg)
    before = scale.read_profiles(str(out), "features")
    shutil.move(tmp_path / "held", last_day)
    entry = scale.build("duckdb", str(inp), str(out), cfg, incremental=True)
    assert entry["new_partitions"] == {"events": ["date=2017-12-03"]}
    touched = set(pd.read_parquet(last_day).user_id)
    assert entry["users"] == len(touched) < first["users"]
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


def test_an_incremental_build_on_spark(tmp_path):
    """The same on Spark, over the Taobao slice: the last day added later touches only its users."""
    store = str(tmp_path / "t.duckdb")
    con = connect(store)
    ingest_file(con, str(SHARED / "taobao_userbehavior_head" / "UserBehavior_head.csv.gz"), "taobao",
                namespace="taobao")
    con.close()
    inp = export_store(store, tmp_path / "in")
    last_day = inp / "events" / "date=2017-12-03"
    shutil.move(last_day, tmp_path / "held")
    cfg, out = load_config(), tmp_path / "out"
    first = scale.build("spark", str(inp), str(out), cfg)
    shutil.move(tmp_path / "held", last_day)
    entry = scale.build("spark", str(inp), str(out), cfg, incremental=True)
    touched = set(pd.read_parquet(last_day).user_id)
    assert entry["users"] == len(touched) < first["users"]
    after = scale.read_profiles(str(out))
    assert len(after) == first["users"] and after.user_id.is_unique
