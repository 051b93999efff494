"""The model registry: `models list|promote|rollback`, and `retrain` (once, or every DURATION)."""
from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from typing import Optional

import duckdb
import typer

from ..config import load_config
from ..errors import HuaxiangError
from .options import CONFIG, DB, err, json_option, out, spinner
from .recommend import MODEL_NAMES

KIND = typer.Option("recommender", "--kind", help="The kind of model: recommender or classifier.")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as 30m, 6h, 1d or 1h30m (units s, m, h, d)."""
    compact = re.sub(r"\s", "", text.lower())
    if not re.fullmatch(r"(\d+(\.\d+)?[smhd])+", compact):
        raise HuaxiangError(f"--every {text!r}: a duration such as 30m, 6h, 1d or 1h30m")
    seconds = sum(float(n) * UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([smhd])", compact))
    if seconds <= 0:
        raise HuaxiangError(f"--every {text!r}: must be longer than nothing")
    return seconds


def _metrics(found: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in found.items())


def list_versions(
    db: str = DB,
    kind: Optional[str] = typer.Option(None, "--kind", help=(
        "Only this kind (recommender, classifier, churn, propensity, clv, risk).")),
    as_json: bool = json_option("Print the versions as a JSON list."),
):
    """List the store's model versions: kind, version, name, when trained, the data's time range, the validation
    metrics, and which one of each kind is promoted (served)."""
    from ..models.registry import versions
    found = versions(db, kind)
    if as_json:
        print(json.dumps(found, ensure_ascii=False))
        return
    if not found:
        out.print(f"No {kind or 'model'} versions for {db} yet (`huaxiang train recommender` makes one).",
                  markup=False, highlight=False)
        return
    for v in found:
        span = f"  data {(v['data_from'] or '?')[:10]} … {(v['data_to'] or '?')[:10]}" \
            if v["data_from"] or v["data_to"] else ""
        out.print(f"{'*' if v['promoted'] else ' '} {v['kind']} {v['version']:<3} {v['name']:<10}  "
                  f"trained {v['created_at'].replace('T', ' ')[:16]}{span}  {_metrics(v['metrics'])}",
                  markup=False, highlight=False)
    out.print("(* promoted: what is served)", markup=False, highlight=False)


def promote_version(
    version: str = typer.Argument(..., help="The version: 3, @3, itemknn@3, or a name (its newest version)."),
    db: str = DB,
    kind: str = KIND,
):
    """Serve this version from now on (a running `huaxiang serve` keeps the one it loaded until restarted)."""
    from ..models import registry
    entry = registry.promote(db, kind, registry.resolve(db, kind, version)["version"])
    out.print(f"promoted {kind} version {entry['version']} ({entry['name']}; {_metrics(entry['metrics'])})",
              markup=False, highlight=False)


def rollback_version(db: str = DB, kind: str = KIND):
    """Serve again the version that was promoted before the current one."""
    from ..models import registry
    entry = registry.rollback(db, kind)
    out.print(f"rolled back: {kind} version {entry['version']} ({entry['name']}) is promoted again",
              markup=False, highlight=False)


def retrain(
    db: str = DB,
    model: Optional[str] = typer.Option(None, "--model", help=(
        "The model to train: " + MODEL_NAMES[:-1] + " (default: the promoted version's, with its settings; hybrid "
        "when none is).")),
    margin: float = typer.Option(0.01, "--margin", min=0.0, max=1.0, help=(
        "Promote when the new validation NDCG@10 is at least the promoted one's minus this (absolute).")),
    every: Optional[str] = typer.Option(None, "--every", help=(
        "Retrain again after this long (e.g. 30m, 6h, 1d), forever; without it: once.")),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="SASRec: at most this many epochs."),
    warm: bool = typer.Option(True, "--warm/--cold", help="SASRec after a promoted SASRec: start from its weights "
                              "(items matched by id; --cold: from scratch)."),
    config: Optional[str] = CONFIG,
    as_json: bool = json_option("Print each decision as one JSON object (one line per training)."),
):
    """Train a new recommender version on the current store and promote it only if its validation NDCG@10 is not
    worse than the promoted version's by more than --margin; a version not promoted stays listed."""
    from ..recommend.store_model import retrain_store_recommender
    from ..store import connect
    from ..text.encoder import ENCODERS
    pause = parse_duration(every) if every else None
    encoder = ENCODERS[load_config(config).encoder].name
    while True:
        try:
            con = connect(db, read_only=True)
            try:
                with spinner("retrain: {task.description}") as bar:
                    task = bar.add_task("reading sequences", total=None)
                    decision = retrain_store_recommender(con, db, encoder, model, margin,
                                                         {"epochs": epochs} if epochs else None,
                                                         lambda msg: bar.update(task, description=msg), warm)
            finally:
                con.close()
        except (HuaxiangError, duckdb.Error, OSError) as exc:
            if pause is None:
                raise
            decision = None  # a loop keeps going: the next round may find the store free again
            err.print(f"error: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}",
                      markup=False, highlight=False)
        if decision is not None:
            if as_json:
                print(json.dumps({**decision, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}),
                      flush=True)
            else:
                out.print(f"{decision['name']} version {decision['version']}: "
                          f"{'promoted' if decision['promoted'] else 'not promoted'} ({decision['reason']})",
                          markup=False, highlight=False)
        if pause is None:
            return
        time.sleep(pause)
