"""Fine-tuning the converted encoder: full and LoRA, saved, reloaded and evaluated from the CLI."""
import json
import os
import subprocess
import sys

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


@pytest.fixture(scope="module")
def lora(reviews):
    out = reviews / "lora"
    cli("train", "classifier", "--data", str(reviews / "train.csv"), "--text-col", "review", "--label-col", "label",
        "--out", str(out), "--lora", "--epochs", "3", "--max-len", "48", "--batch-size", "16",
        "--db", str(reviews / "s.duckdb"))
    return out


@pytest.mark.slow
def test_lora_learns_sentiment(reviews, lora):
    out = lora
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
def test_the_int8_variant_scores_like_the_original_and_serves_sentiment(reviews, lora, tmp_path):
    said = json.loads(cli("compress", "--model", str(lora), "--data", str(reviews / "test.csv"), "--text-col",
                          "review", "--label-col", "label", "--json"))
    assert said["paths"] == [str(lora / "int8.pt")] and (lora / "int8.pt").exists() and "student" not in said
    fp32, int8 = said["fp32"], said["int8"]
    assert (fp32["variant"], fp32["n"], int8["variant"], int8["n"]) == ("fp32", 200, "int8", 200)
    # (a LoRA trained on 200 reviews has many near-even predictions: a few flip; broken weights would flip half)
    assert abs(int8["accuracy"] - fp32["accuracy"]) <= 0.05 and int8["auc"] > 0.8
    # the default is now the int8 variant; its scores stay those of the original, within a few reviews
    result = json.loads(cli("eval", "classifier", "--model", str(lora), "--data", str(reviews / "test.csv"),
                            "--text-col", "review", "--label-col", "label", "--json"))
    assert result["variant"] == "int8" and result["accuracy"] == int8["accuracy"]
    assert result["reviews_per_second"] > 0
    # `huaxiang sentiment --model` scores the store's reviews with it
    db = str(tmp_path / "s.duckdb")
    (tmp_path / "r.csv").write_text("review_id,user_id,item_id,text\nr1,u1,i1,东西很好，物流很快\n"
                                    "r2,u1,i2,质量太差了，用了一天就坏了\n")
    cli("ingest", str(tmp_path / "r.csv"), "--format", "csv", "--table", "reviews", "--db", db)
    assert "scored 2 reviews" in cli("sentiment", "--db", db, "--model", str(lora))
    import duckdb
    with duckdb.connect(db, read_only=True) as con:
        got = dict(con.execute("SELECT review_id, positive FROM review_sentiment").fetchall())
        assert con.execute("SELECT DISTINCT method FROM review_sentiment").fetchall() == [
            (f"classifier:{lora} (int8)",)]
    assert got["r1"] > got["r2"]


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


@pytest.mark.slow
def test_an_interrupted_run_resumed_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    import torch

    from huaxiang.errors import HuaxiangError
    from huaxiang.text.classifier import CHECKPOINT, TrainConfig, train_classifier
    df = pd.read_csv(demo_path("online_shopping_10_cats_2000.csv.gz")).sample(n=48, random_state=5)
    df = df.rename(columns={"review": "text"})[["text", "label"]].astype({"label": str})
    cfg = lambda: TrainConfig(lora=True, epochs=2, max_len=16, batch_size=8, checkpoint_every=2, patience=5)
    whole = train_classifier(df, str(tmp_path / "whole"), cfg())

    class Stop(Exception):
        pass

    def stop_in_epoch_2(desc: str, done: int, total: int) -> None:
        if desc.startswith("epoch 2/") and done == 3:
            raise Stop
    with pytest.raises(Stop):
        train_classifier(df, str(tmp_path / "cut"), cfg(), stop_in_epoch_2)
    state = torch.load(tmp_path / "cut" / CHECKPOINT / "state.pt", weights_only=False)
    assert (state["epoch"], state["step"], len(state["history"])) == (2, 2, 1)
    with pytest.raises(HuaxiangError, match="other data or settings"):
        train_classifier(df.iloc[1:], str(tmp_path / "cut"), cfg(), resume=True)
    resumed = train_classifier(df, str(tmp_path / "cut"), cfg(), resume=True)
    assert resumed["resumed"] and not (tmp_path / "cut" / CHECKPOINT).exists()
    assert [h["macro_f1"] for h in resumed["history"]] == [h["macro_f1"] for h in whole["history"]]
    for name, weights in torch.load(tmp_path / "whole" / "head.pt").items():
        assert torch.equal(weights, torch.load(tmp_path / "cut" / "head.pt")[name])
    from safetensors.torch import load_file
    adapters = [load_file(tmp_path / run / "adapter" / "adapter_model.safetensors") for run in ("whole", "cut")]
    assert adapters[0].keys() == adapters[1].keys() and all(torch.equal(adapters[0][k], adapters[1][k])
                                                            for k in adapters[0])
    with pytest.raises(HuaxiangError, match="no checkpoint"):
        train_classifier(df, str(tmp_path / "fresh"), cfg(), resume=True)


@pytest.mark.slow
def test_a_distilled_student_follows_its_teacher_and_becomes_the_default(reviews, lora, tmp_path):
    said = json.loads(cli("compress", "--model", str(lora), "--distil", str(reviews / "train.csv"), "--text-col",
                          "review", "--epochs", "3", "--data", str(reviews / "test.csv"), "--label-col", "label",
                          "--json"))
    print({v: said[v] for v in ("fp32", "int8", "student", "student-int8")})
    student = said["distilled"]
    assert (student["teacher_layers"], student["layers_kept"], student["train_texts"]) == (12, [0, 2, 4, 7, 9, 11], 200)
    assert said["paths"] == [str(lora / "int8.pt"), str(lora / "student" / "int8.pt")]
    assert [said[v]["variant"] for v in ("fp32", "int8", "student", "student-int8")] == [
        "fp32", "int8", "student", "student-int8"]
    # half the layers: faster, and it learnt its teacher's task from unlabelled texts (random weights score ~0.5)
    assert said["student"]["reviews_per_second"] > said["fp32"]["reviews_per_second"]
    assert said["student"]["auc"] > 0.75 and said["student-int8"]["auc"] > 0.75
    result = json.loads(cli("eval", "classifier", "--model", str(lora), "--data", str(reviews / "test.csv"),
                            "--text-col", "review", "--label-col", "label", "--json"))
    assert result["variant"] == "student-int8" and result["accuracy"] == said["student-int8"]["accuracy"]
    bad = subprocess.run([sys.executable, "-m", "huaxiang.cli", "compress", "--model", str(lora), "--distil",
                          str(reviews / "train.csv"), "--text-col", "review", "--layers", "12"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "a student has 1 to 11 layers" in bad.stderr and "Traceback" not in bad.stderr
