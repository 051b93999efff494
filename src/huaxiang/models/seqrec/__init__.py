"""Sequential / collaborative recommenders over item indices 1..n (0 = padding).

Every model: `fit(train_seqs, n_items, item_vectors=None)`, `score(histories) -> (batch, n_items + 1)`
(higher is better; column 0 unused), `save(dir)`, `load(dir)`. `MODELS` names them for the CLI.
"""
from __future__ import annotations

import json
from pathlib import Path

from ...errors import HuaxiangError
from .content import Content
from .hybrid import Hybrid
from .itemknn import ItemKNN
from .popularity import Popularity
from .sasrec import SASRec

MODELS = {"popularity": Popularity, "itemknn": ItemKNN, "content": Content, "sasrec": SASRec, "hybrid": Hybrid}


def save_model(model, path: str) -> None:
    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    model.save(d)
    (d / "model.json").write_text(json.dumps({"model": model.name, "params": model.params()}, indent=2))


def load_model(path: str):
    d = Path(path)
    if not (d / "model.json").exists():
        raise HuaxiangError(f"{path}: not a saved recommender (no model.json)")
    meta = json.loads((d / "model.json").read_text())
    if meta["model"] not in MODELS:
        raise HuaxiangError(f"{path}: unknown model {meta['model']!r}")
    return MODELS[meta["model"]].load(d, meta["params"])
