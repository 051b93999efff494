"""Content similarity on pretrained-LM item text embeddings: the cosine between each item and the
recency-weighted mean of the history's items, turned into a score in (0, 1) by a sigmoid."""
from __future__ import annotations

import numpy as np

from ...errors import HuaxiangError
from .base import Recommender, recency_weights


class Content(Recommender):
    name = "content"
    arrays = ("vectors_",)

    def __init__(self, decay: float = 0.7, temperature: float = 0.05, centre: float = 0.85):
        self.decay = decay
        self.temperature = temperature
        self.centre = centre

    def fit(self, train, n_items, item_vectors=None):
        if item_vectors is None or len(item_vectors) != n_items + 1:
            raise HuaxiangError("the content model needs an item text embedding for every item (--items FILE)")
        v = np.asarray(item_vectors, dtype=np.float32)
        self.vectors_ = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)
        return self

    def user_vectors(self, histories) -> np.ndarray:
        out = np.zeros((len(histories), self.vectors_.shape[1]), dtype=np.float32)
        for r, h in enumerate(histories):
            if h:
                out[r] = recency_weights(len(h), self.decay) @ self.vectors_[h]
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    def score(self, histories):
        cos = self.user_vectors(histories) @ self.vectors_.T
        return 1 / (1 + np.exp(-(cos - self.centre) / self.temperature))
