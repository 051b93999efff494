"""Fine-tuning the converted encoder: full and LoRA, saved, reloaded and evaluated from the CLI."""
import json
import os

import numpy as np
import pandas as pd
import pytest

from huaxiang.demo import demo_path
from huaxiang.errors import HuaxiangError
from huaxiang.text.classifier import read_labelled, stratified_split

from conftest import cli


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    """Two disjoint seeded samples of the bundled Chinese shopping reviews (label 1 positive, 0 negative)."""
    d = tmp_path_factory.mktemp("clf")
    df = pd.read_csv(demo_path("online_shopping_10_cats_2000.csv.gz")).drop_duplicates("review")
    df = df.sample(frac=1.0, random_state=0)
    df.iloc[:200].to_csv(d / "train.csv", index=False)
    df.iloc[200:400].to_csv(d / "test.csv", index=False)
    return d


def test_stratified_split_is_seeded_and_per_label():
    labels = pd.Series(["a"] * 50 + ["b"] * 10)
    train, held = stratified_split(labels, 0.1, seed=0)
    assert sorted(np.concatenate([train, held]).tolist()) == list(range(60))
    assert (labels[held] == "a").sum() == 5 and (labels[held] == "b").sum() == 1
    assert np.array_equal(held, stratified_split(labels, 0.1, seed=0)[1])
    assert not np.array_equal(held, stratified_split(labels, 0.1, seed=1)[1])


def test_length_buckets_cover_every_row_once():
    from huaxiang.batching import length_batches
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, size=5000)
    batches = length_batches(rng.permutation(5000), lengths, 32, rng)
    assert sorted(np.concatenate(batches).tolist()) == list(range(5000))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 0.1 * np.ptp(lengths)  # a batch holds texts of similar length: little padding


def test_bad_columns_are_named(tmp_path):
    (tmp_path / "x.csv").write_text("text,y\nhello,1\n")
    with pytest.raises(HuaxiangError, match="no column 'label'"):
        read_labelled(str(tmp_path / "x.csv"), "text", "label")


@pytest.mark.slow
def test_lora_learns_sentiment(reviews):
    out = reviews / "lora"
    cli("train", "classifier", "--data", str(reviews / "train.csv"), "--text-col", "review", "--label-col", "label",
        "--out", str(out), "--lora", "--epochs", "3", "--max-len", "48", "--batch-size", "16",
        "--db", str(reviews / "s.duckdb"))
    meta = json.loads((out / "classifier.json").read_text())
    assert meta["method"] == "lora" and 600_000 < meta["trainable_parameters"] < 700_000  # r=8 on q/k/v/dense + head
    listed = json.loads(cli("models", "list", "--kind", "classifier", "--db", str(reviews / "s.duckdb"), "--json"))
    assert [(v["version"], v["name"], v["path"]) for v in listed] == [(1, "lora", str(out.resolve()))]  # registered too
    assert listed[0]["metrics"]["macro_f1"] == meta["best_validation"]["macro_f1"]
    result = json.loads(cli("eval", "classifier", "--model", str(out), "--data", str(reviews / "test.csv"),
                            "--text-col", "review", "--label-col", "label", "--json"))
    assert result["n"] == 200 and {"accuracy", "macro_f1", "auc"} <= set(result)
    assert result["auc"] > 0.8 and result["accuracy"] > 0.7  # 200 examples, 3 epochs, on held-out reviews


@pytest.mark.slow
def test_full_fine_tuning_saves_and_reloads(reviews):
    out = reviews / "full"
    cli("train", "classifier", "--data", str(reviews / "train.csv"), "--text-col", "review", "--label-col", "label",
        "--out", str(out), "--epochs", "1", "--max-rows", "64", "--max-len", "32", "--batch-size", "16", "--balanced")
    meta = json.loads((out / "classifier.json").read_text())
    assert meta["method"] == "full" and meta["trainable_parameters"] > 100_000_000 and meta["config"]["balanced"]
    assert meta["train_rows"] + meta["validation_rows"] == 64
    assert os.path.exists(out / "encoder" / "model.safetensors")
    result = json.loads(cli("eval", "classifier", "--model", str(out), "--data", str(reviews / "test.csv"),
                            "--text-col", "review", "--label-col", "label", "--json"))
    assert result["n"] == 200 and 0.0 <= result["accuracy"] <= 1.0 and result["method"] == "full"


@pytest.mark.slow
def test_training_ignores_the_callers_index(tmp_path):
    from huaxiang.text.classifier import TrainConfig, train_classifier
    df = pd.read_csv(demo_path("online_shopping_10_cats_2000.csv.gz")).sample(n=32, random_state=3)
    df = df.rename(columns={"review": "text"})[["text", "label"]].astype({"label": str})  # index: original rows
    meta = train_classifier(df, str(tmp_path / "m"), TrainConfig(lora=True, epochs=1, max_len=16, batch_size=16))
    assert meta["train_rows"] + meta["validation_rows"] == 32
