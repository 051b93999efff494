"""Recommendation and search: `train recommender`, `recommend`, `search`, `eval seqrec`."""
from __future__ import annotations

import json
from typing import Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ..config import load_config
from ..schema import tenant_of
from ..store import connect, has_table
from .options import CONFIG, DB, JSON, err, out, spinner

MODEL_NAMES = "popularity, itemknn, content, sasrec or hybrid."


def train_recommender(
    db: str = DB,
    model: str = typer.Option("hybrid", "--model", help=MODEL_NAMES),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="SASRec: at most this many epochs (early stopping)."),
    promote: bool = typer.Option(True, "--promote/--no-promote", help=(
        "Serve the new version at once (--no-promote: only register it; `huaxiang models promote` later).")),
    config: Optional[str] = CONFIG,
    as_json: bool = JSON,
):
    """Train a recommender on the store's behaviour (sequences of item events) as a new version in the store's
    model registry, measured on each user's last item (NDCG@10, HR@10); `huaxiang recommend` then serves the
    promoted version. Item embeddings from `huaxiang embed` are used when present."""
    from ..text.encoder import ENCODERS
    cfg = load_config(config)
    meta = train_version(db, model, ENCODERS[cfg.encoder].name, {"epochs": epochs} if epochs else None, promote)
    if as_json:
        print(json.dumps(meta, ensure_ascii=False))
        return
    found = meta["metrics"]
    out.print(f"{meta['model']} recommender version {meta['version']} trained on {meta['trained_on']:,} sequences "
              f"({meta['users']:,} users) in {meta['train_seconds']:.0f} s; validation NDCG@10 {found['ndcg@10']:.4f}, "
              f"HR@10 {found['hr@10']:.4f} ({found['valid_users']:,} users); "
              f"{'promoted' if meta['promoted'] else 'not promoted'} → {meta['path']}", markup=False, highlight=False)


def train_version(db: str, model: str, encoder_name: str, sasrec: dict | None, promote: bool) -> dict:
    """One training of `model` on the store `db` as a registry version, with a progress line."""
    from ..recommend.store_model import train_store_recommender
    con = connect(db, read_only=True)
    try:
        with spinner("train recommender: {task.description}") as bar:
            task = bar.add_task("reading sequences", total=None)
            return train_store_recommender(con, db, model, encoder_name, sasrec,
                                           lambda msg: bar.update(task, description=msg), promote=promote)
    finally:
        con.close()


def recommend(
    user_id: str = typer.Argument(..., help="The user's id (as stored, e.g. beauty:17)."),
    db: str = DB,
    k: int = typer.Option(10, "-k", "--k", min=1, max=1000, help="How many items."),
    explain: bool = typer.Option(False, "--explain", help="Say why each item is recommended."),
    as_json: bool = JSON,
):
    """Top-k items for a user, already-bought items filtered, with reasons (--explain); users with no
    history get items from their searches, their segment, or what is popular."""
    from ..recommend.store_model import load_store_recommender
    from ..recommend.top_k import recommend as top_k
    rec = load_store_recommender(db)
    result = top_k(connect(db, read_only=True), rec, user_id, k, explain)
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
        return
    if result["source"] == "no-tenant-items":
        out.print(f"No items of {user_id}'s tenant ({tenant_of(user_id) or 'ids without a namespace'}) in this "
                  "store's recommender: nothing to recommend.", markup=False)
        return
    out.print(f"Top {len(result['items'])} for {user_id} (from {result['source']}):", markup=False)
    for n, item in enumerate(result["items"], 1):
        out.print(f"{n:>3}. {(item['title'] or item['item_id'])[:70]}" + (f"\n       {item['reason']}" if explain else ""),
                  markup=False, highlight=False)


def search(
    query: str = typer.Argument(..., help="What to search for, e.g. \"nail polish\" or 洗发水."),
    user: Optional[str] = typer.Option(None, "--user", help="Re-rank the results for this user (in their tenant)."),
    tenant: Optional[str] = typer.Option(None, "--tenant", help=(
        "Search this tenant's items (NS of ids NS:…; '' for ids without one): needed without --user "
        "when the store holds several.")),
    db: str = DB,
    k: int = typer.Option(10, "-k", "--k", min=1, max=1000),
    embeddings: bool = typer.Option(True, "--embeddings/--no-embeddings", help="Also retrieve by meaning (needs `huaxiang embed`)."),
    config: Optional[str] = CONFIG,
    as_json: bool = JSON,
):
    """Search one tenant's item titles (BM25 + embeddings), personalised for --user by the store's recommender."""
    from ..recommend.search import search_store
    from ..recommend.store_model import has_model, load_store_recommender
    from ..text.encoder import load_encoder
    cfg = load_config(config)
    con = connect(db, read_only=True)
    rec = load_store_recommender(db) if user and has_model(db) else None
    encoder = load_encoder(cfg.encoder) if embeddings and has_table(con, "embeddings") else None
    result = search_store(con, query, user, k, encoder, rec, tenant=tenant)
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
        return
    how = "personalised for " + user if result["personalised"] else "not personalised" if user else "for anyone"
    where = f" in tenant {result['tenant']}" if result["tenant"] else ""
    out.print(f"{len(result['items'])} results for {query!r}{where} ({how}):", markup=False)
    for n, item in enumerate(result["items"], 1):
        out.print(f"{n:>3}. {item['title'][:80]}  [{item['item_id']}]", markup=False, highlight=False)


def eval_seqrec(
    data: str = typer.Option(..., "--data", help="Sequences, one user per line: `user_id item_1 item_2 …` (S3-Rec format, .gz ok)."),
    items: Optional[str] = typer.Option(None, "--items", help="Items TSV with item_id and title/text: enables the content model and text fusion."),
    protocol: str = typer.Option("full", "--protocol", help="full (rank all items) or sample99 (against given negatives)."),
    negatives: Optional[str] = typer.Option(None, "--negatives", help="For sample99: `user_id neg_1 … neg_99` per line."),
    model: str = typer.Option("sasrec", "--model", help=MODEL_NAMES),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="SASRec: at most this many epochs (default 200, early stopping)."),
    text: Optional[str] = typer.Option(None, "--text", help="SASRec: fuse or init item embeddings from the item text (needs --items)."),
    save: Optional[str] = typer.Option(None, "--save", help="Save the trained model to this folder."),
    config: Optional[str] = CONFIG,
    as_json: bool = JSON,
):
    """Leave-one-out evaluation of a recommender on a sequence file: the last item of each user is
    the test target, the second-to-last the validation target; HR@5/10, NDCG@5/10, MRR."""
    from ..evaluate.seqrec import check, run
    from ..models.seqrec import save_model
    from ..models.seqrec.data import read_negatives, read_sequences
    check(model, protocol, negatives is not None)
    cfg = load_config(config)
    seqs = read_sequences(data)
    negs = read_negatives(negatives, seqs) if protocol == "sample99" else None
    vectors = None
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("reading", total=None)
        tick = lambda done, total: bar.update(task, completed=done, total=total)
        if items:
            from ..evaluate.item_text import item_vectors, read_item_texts
            from ..text.encoder import load_encoder
            bar.update(task, description="embedding item texts")
            vectors = item_vectors(read_item_texts(items, seqs), load_encoder(cfg.encoder), tick)
        sasrec = {k: v for k, v in (("epochs", epochs), ("text", text)) if v is not None}
        result = run(seqs, model, vectors, protocol, negs, sasrec,
                     step=lambda what: bar.update(task, description=what, completed=0, total=None), progress=tick)
    fitted, train_seconds = result.pop("fitted"), result["train_seconds"]
    result["train_seconds"] = round(train_seconds, 1)
    if save:
        save_model(fitted, save)
    if as_json:
        print(json.dumps(result))
    else:
        out.print(f"{model} on {data} ({protocol}, {result['n_users']:,} users, {seqs.n_items:,} items, "
                  f"trained in {train_seconds:.0f} s): " + ", ".join(
                      f"{k} {result[k]:.4f}" for k in ("hr@5", "hr@10", "ndcg@5", "ndcg@10", "mrr")))
