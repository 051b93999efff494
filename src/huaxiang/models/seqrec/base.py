"""What every recommender shares: parameters in the constructor, fitted state ending in `_`."""
from __future__ import annotations

import inspect

import numpy as np


class Recommender:
    name = "base"

    def params(self) -> dict:
        """The constructor's arguments (scikit-learn style)."""
        if type(self).__init__ is object.__init__:
            return {}
        return {k: getattr(self, k) for k in inspect.signature(type(self).__init__).parameters if k != "self"}

    def fit(self, train: list[list[int]], n_items: int, item_vectors: np.ndarray | None = None):
        raise NotImplementedError

    def score(self, histories: list[list[int]]) -> np.ndarray:
        raise NotImplementedError


def recency_weights(length: int, decay: float) -> np.ndarray:
    """decay^(steps back from the end): the last item weighs 1."""
    return decay ** np.arange(length - 1, -1, -1, dtype=np.float64)
