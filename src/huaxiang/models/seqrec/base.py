"""What every recommender shares: parameters in the constructor, fitted state ending in `_`."""
from __future__ import annotations

import inspect

import numpy as np


class Recommender:
    name = "base"
    arrays: tuple[str, ...] = ()  # fitted numpy arrays that are the whole state: saved as <name without _>.npy

    def params(self) -> dict:
        """The constructor's arguments (scikit-learn style)."""
        if type(self).__init__ is object.__init__:
            return {}
        return {k: getattr(self, k) for k in inspect.signature(type(self).__init__).parameters if k != "self"}

    def fit(self, train: list[list[int]], n_items: int, item_vectors: np.ndarray | None = None):
        raise NotImplementedError

    def score(self, histories: list[list[int]]) -> np.ndarray:
        raise NotImplementedError

    def save(self, d) -> None:
        for attr in self.arrays:
            np.save(d / f"{attr.rstrip('_')}.npy", getattr(self, attr))

    @classmethod
    def load(cls, d, params: dict):
        m = cls(**params)
        for attr in cls.arrays:
            setattr(m, attr, np.load(d / f"{attr.rstrip('_')}.npy"))
        return m


def recency_weights(length: int, decay: float) -> np.ndarray:
    """decay^(steps back from the end): the last item weighs 1."""
    return decay ** np.arange(length - 1, -1, -1, dtype=np.float64)
