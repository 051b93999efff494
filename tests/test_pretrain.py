"""Continued pretraining (`huaxiang pretrain`): masked-language-model steps on the platform's texts, checkpoints a
run can resume from exactly, and a classifier fine-tuned from the result (`train classifier --init`)."""
import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from huaxiang.demo import demo_path

from conftest import cli


def cli_fails(*args) -> str:
    """The one-line error of a command that must fail."""
    proc = subprocess.run([sys.executable, "-m", "huaxiang.cli", *args], capture_output=True, text=True)
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return proc.stderr


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    d = tmp_path_factory.mktemp("pretrain")
    df = pd.read_csv(demo_path("online_shopping_10_cats_2000.csv.gz")).drop_duplicates("review").sample(
        frac=1.0, random_state=0)
    (d / "texts.txt").write_text("\n".join(df["review"].astype(str).str.replace("\n", " ").iloc[:200]) + "\n")
    df.iloc[200:260].to_csv(d / "labelled.csv", index=False)
    return d


def run(out, texts, steps, *extra):
    return cli("pretrain", "--texts", str(texts / "texts.txt"), "--out", str(out), "--steps", str(steps),
               "--batch-size", "4", "--max-len", "32", "--checkpoint-every", "2", *extra)


def test_a_run_resumed_from_its_checkpoint_trains_what_one_run_would(texts, tmp_path):
    said = run(tmp_path / "whole", texts, 4)
    meta = json.loads((tmp_path / "whole" / "pretrain.json").read_text())
    assert "held-out perplexity" in said and meta["train_texts"] == 190 and meta["held_out_texts"] == 10
    assert [h["step"] for h in meta["history"]] == [2, 4] and meta["resumed_from_step"] is None
    assert 1.0 < meta["held_out_perplexity_after"] < meta["held_out_perplexity_before"]  # (the new head learns)
    run(tmp_path / "part", texts, 2)
    run(tmp_path / "part", texts, 4, "--resume", str(tmp_path / "part"))
    resumed = json.loads((tmp_path / "part" / "pretrain.json").read_text())
    assert resumed["resumed_from_step"] == 2 and [h["step"] for h in resumed["history"]] == [2, 4]
    assert resumed["held_out_perplexity_after"] == pytest.approx(meta["held_out_perplexity_after"], rel=1e-4)
    from safetensors.torch import load_file
    a = load_file(str(tmp_path / "whole" / "encoder" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "encoder" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    # the store's texts embedded with the pretrained encoder (cached under its own name)
    (tmp_path / "items.csv").write_text("item_id,title\ni1,Red Lipstick\ni2,口红 哑光\n")
    (tmp_path / "events.csv").write_text("user_id,item_id,type,ts,query\nu1,i1,view,2024-01-01,\n"
                                         "u1,,search,2024-01-02,口红\n")
    db = str(tmp_path / "s.duckdb")
    cli("ingest", str(tmp_path / "items.csv"), "--format", "csv", "--table", "items", "--db", db)
    cli("ingest", str(tmp_path / "events.csv"), "--format", "csv", "--db", db)
    assert "users: 1 embeddings" in cli("embed", "--db", db, "--encoder", str(tmp_path / "whole"))
    import duckdb
    with duckdb.connect(db, read_only=True) as con:
        assert con.execute("SELECT DISTINCT model, len(vector) FROM embeddings").fetchall() == [
            (f"folder:{(tmp_path / 'whole' / 'encoder').resolve()}", 384)]
    # other settings than the checkpoint's are refused (only --steps may change)
    assert "other settings" in cli_fails("pretrain", "--texts", str(texts / "texts.txt"), "--out",
                                         str(tmp_path / "x"), "--steps", "6", "--resume", str(tmp_path / "part"))
    # a classifier fine-tuned from the pretrained encoder
    out = cli("train", "classifier", "--data", str(texts / "labelled.csv"), "--text-col", "review", "--label-col",
              "label", "--out", str(tmp_path / "clf"), "--epochs", "1", "--max-len", "32", "--init",
              str(tmp_path / "whole"))
    assert "full fine-tuning" in out
    clf = json.loads((tmp_path / "clf" / "classifier.json").read_text())
    assert clf["base"] == str(tmp_path / "whole" / "encoder") and clf["config"]["init"] == str(tmp_path / "whole")


def test_pretrain_says_what_is_wrong_in_one_line(texts, tmp_path):
    assert "exactly one of --db" in cli_fails("pretrain", "--out", str(tmp_path / "o"))
    assert "no checkpoint there" in cli_fails("pretrain", "--texts", str(texts / "texts.txt"), "--out",
                                              str(tmp_path / "o"), "--resume", str(tmp_path / "nothing"))
    assert "file not found" in cli_fails("pretrain", "--texts", str(tmp_path / "missing.txt"), "--out",
                                               str(tmp_path / "o"))
    (tmp_path / "few.txt").write_text("一\n二\n")
    assert "at least 20 texts" in cli_fails("pretrain", "--texts", str(tmp_path / "few.txt"), "--out",
                                            str(tmp_path / "o"))
    assert "no encoder there" in cli_fails("train", "classifier", "--data", str(texts / "labelled.csv"),
                                           "--text-col", "review", "--label-col", "label", "--out",
                                           str(tmp_path / "c"), "--init", str(tmp_path / "nothing"))
