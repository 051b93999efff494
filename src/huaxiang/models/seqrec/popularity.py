"""Most popular items in the training sequences."""
from __future__ import annotations

import numpy as np

from .base import Recommender


class Popularity(Recommender):
    name = "popularity"
    arrays = ("counts_",)

    def fit(self, train, n_items, item_vectors=None):
        self.counts_ = np.bincount(np.concatenate([np.asarray(s, dtype=np.int64) for s in train] or [np.zeros(0, int)]),
                                   minlength=n_items + 1).astype(np.float32)
        self.counts_[0] = 0
        return self

    def score(self, histories):
        return np.broadcast_to(self.counts_, (len(histories), len(self.counts_))).copy()
