"""A blend of the sequential model, item-KNN and (when item text exists) content similarity: each
model's scores are standardised per user (z-scores over all items), then summed with weights
chosen on the validation targets (a small grid, SASRec's weight fixed at 1)."""
from __future__ import annotations

import itertools
import json

import numpy as np

from .base import Recommender
from .content import Content
from .itemknn import ItemKNN
from .sasrec import SASRec

GRID = {"itemknn": (0.0, 0.1, 0.2, 0.35, 0.5), "content": (0.0, 0.05, 0.1, 0.2)}


def _standardise(s: np.ndarray) -> np.ndarray:
    body = s[:, 1:]
    return (s - body.mean(axis=1, keepdims=True)) / np.maximum(body.std(axis=1, keepdims=True), 1e-9)


class Hybrid(Recommender):
    name = "hybrid"

    def __init__(self, weights: dict | None = None, sasrec: dict | None = None, tune_users: int = 4000, seed: int = 0):
        self.weights = weights
        self.sasrec = sasrec or {}
        self.tune_users = tune_users
        self.seed = seed

    def fit(self, train, n_items, item_vectors=None, valid=None, progress=None):
        self.parts_ = {"sasrec": SASRec(**self.sasrec).fit(train, n_items, item_vectors, valid, progress),
                       "itemknn": ItemKNN().fit(train, n_items)}
        if item_vectors is not None:
            self.parts_["content"] = Content().fit(train, n_items, item_vectors)
        self.weights_ = dict(self.weights) if self.weights else self._tune(valid) if valid else \
            {"sasrec": 1.0, "itemknn": 0.2, "content": 0.05}
        self.weights_ = {k: v for k, v in self.weights_.items() if k in self.parts_}
        return self

    def _tune(self, valid) -> dict:
        from .data import metrics, ranks_full
        histories, targets = valid
        rng = np.random.default_rng(self.seed)
        pick = np.sort(rng.choice(len(histories), min(self.tune_users, len(histories)), replace=False))
        h, t = [histories[i] for i in pick], targets[pick]
        z = {name: _standardise(m.score(h)) for name, m in self.parts_.items()}
        best, best_w = -1.0, None
        names = [n for n in GRID if n in z]
        for combo in itertools.product(*(GRID[n] for n in names)):
            w = {"sasrec": 1.0, **dict(zip(names, combo))}
            blended = sum(w[n] * z[n] for n in w)
            ndcg = metrics(ranks_full(blended, h, t))["ndcg@10"]
            if ndcg > best:
                best, best_w = ndcg, w
        return best_w

    def score(self, histories):
        return sum(w * _standardise(self.parts_[n].score(histories)) for n, w in self.weights_.items())

    def params(self):
        return {**super().params(), "weights": getattr(self, "weights_", self.weights)}

    def save(self, d):
        for name, m in self.parts_.items():
            (d / name).mkdir(exist_ok=True)
            m.save(d / name)
            (d / name / "params.json").write_text(json.dumps(m.params()))

    @classmethod
    def load(cls, d, params):
        m = cls(**params)
        m.weights_ = params["weights"]
        m.parts_ = {}
        for name, kind in (("sasrec", SASRec), ("itemknn", ItemKNN), ("content", Content)):
            if (d / name).exists():
                m.parts_[name] = kind.load(d / name, json.loads((d / name / "params.json").read_text()))
        return m
