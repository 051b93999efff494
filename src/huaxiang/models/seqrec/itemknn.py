"""Item-based collaborative filtering: cosine similarity of items over the users who share them,
plus next-item transitions; a history scores items by its items' neighbours, recent items first."""
from __future__ import annotations

import numpy as np
from scipy import sparse

from .base import Recommender, recency_weights


class ItemKNN(Recommender):
    name = "itemknn"

    def __init__(self, neighbours: int = 100, decay: float = 0.7, transition_weight: float = 1.0):
        self.neighbours = neighbours
        self.decay = decay
        self.transition_weight = transition_weight

    def fit(self, train, n_items, item_vectors=None):
        rows = np.concatenate([np.full(len(s), u) for u, s in enumerate(train)] or [np.zeros(0, int)])
        cols = np.concatenate([np.asarray(s, dtype=np.int64) for s in train] or [np.zeros(0, int)])
        x = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(train), n_items + 1))
        x.data[:] = 1.0  # a user counts once per item
        co = (x.T @ x).tocsr().astype(np.float32)
        co.setdiag(0)
        co.eliminate_zeros()
        norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
        co = sparse.diags(1 / np.maximum(norms, 1e-9)) @ co @ sparse.diags(1 / np.maximum(norms, 1e-9))
        # next-item transitions (a → b when b directly follows a), row-normalised
        a = np.concatenate([np.asarray(s[:-1], dtype=np.int64) for s in train if len(s) > 1] or [np.zeros(0, int)])
        b = np.concatenate([np.asarray(s[1:], dtype=np.int64) for s in train if len(s) > 1] or [np.zeros(0, int)])
        tr = sparse.csr_matrix((np.ones(len(a), dtype=np.float32), (a, b)), shape=(n_items + 1, n_items + 1))
        tr = sparse.diags(1 / np.maximum(np.asarray(tr.sum(axis=1)).ravel(), 1)) @ tr
        sim = (co + self.transition_weight * tr).tocsr()
        self.sim_ = _top_k_rows(sim, self.neighbours)
        return self

    def score(self, histories):
        if len(histories) == 1:  # one user (serving): summed straight from the CSR rows, without building matrices
            return self._score_one(np.asarray(histories[0], dtype=np.int64))[None, :]
        rows, cols, vals = [], [], []
        for r, h in enumerate(histories):
            w = recency_weights(len(h), self.decay)
            rows += [r] * len(h)
            cols += list(h)
            vals += list(w)
        q = sparse.csr_matrix((vals, (rows, cols)), shape=(len(histories), self.sim_.shape[0]), dtype=np.float32)
        return np.asarray((q @ self.sim_).todense(), dtype=np.float32)

    def _score_one(self, h: np.ndarray) -> np.ndarray:
        n = self.sim_.shape[0]
        if not len(h):
            return np.zeros(n, dtype=np.float32)
        which, entries = row_entries(self.sim_, h)
        weights = self.sim_.data[entries] * np.asarray(recency_weights(len(h), self.decay))[which]
        return np.bincount(self.sim_.indices[entries], weights=weights, minlength=n).astype(np.float32)

    def save(self, d):
        sparse.save_npz(d / "sim.npz", self.sim_)

    @classmethod
    def load(cls, d, params):
        m = cls(**params)
        m.sim_ = sparse.load_npz(d / "sim.npz").tocsr()
        return m


def row_entries(m: sparse.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pure: (the position in `rows` of each stored entry of those rows, the entry's index into m.data/m.indices),
    row after row — the rows' entries without building a matrix."""
    starts, ends = m.indptr[rows], m.indptr[rows + 1]
    lengths = ends - starts
    which = np.repeat(np.arange(len(rows)), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return which, starts[which] + offsets


def _top_k_rows(m: sparse.csr_matrix, k: int) -> sparse.csr_matrix:
    """Keeps the k largest entries of each row."""
    m = m.tocsr()
    rows, cols, vals = [], [], []
    for i in range(m.shape[0]):
        start, end = m.indptr[i], m.indptr[i + 1]
        if end == start:
            continue
        data, idx = m.data[start:end], m.indices[start:end]
        keep = np.argsort(-data, kind="stable")[:k]
        rows.append(np.full(len(keep), i))
        cols.append(idx[keep])
        vals.append(data[keep])
    if not rows:
        return sparse.csr_matrix(m.shape, dtype=np.float32)
    return sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=m.shape,
                             dtype=np.float32)
