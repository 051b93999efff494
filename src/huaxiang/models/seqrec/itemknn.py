"""Item-based collaborative filtering: cosine similarity of items over the users who share them,
plus next-item transitions; a history scores items by its items' neighbours, recent items first.

    sim[i, j] = co[i, j] / sqrt(n[i] n[j])  +  transition_weight * t[i, j] / max(t[i, ·], 1)

co[i, j]: users who have both i and j (a user counts once per item; co[i, i] = 0); n[i]: users who have i;
t[i, j]: how often j directly follows i in a sequence; each row keeps its `neighbours` largest entries,
ties broken by the lower item index. Everything computed in float32, entry by entry from the integer counts.

Incremental updates: the model keeps those counts (`users_`, the user × item 0/1 matrix; `counts_` = n;
`co_`; `trans_`; `last_`, each user's last item), so `update(appended, n_items)` adds new events without a
refit and re-ranks only the rows whose similarities changed. The result equals `fit` on the sequences
continued by the appended items: user u's sequence becomes `old[u] + appended[u]`, a user who already had
an item adds no co-occurrence, and the transitions added are the consecutive pairs of
`[old last item of u] + appended[u]` (so the first new item follows the user's previous last item, and an
item appended right after itself counts as a transition i → i, as it would inside the sequence given to `fit`).
A user index at or beyond the users seen so far is a new user (rows in between are users without events);
`n_items` may grow (new items get the next indices). `appended_events(old, new)` derives `appended` from
two versions of the full sequence list."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import sparse

from ...errors import HuaxiangError
from .base import Recommender, recency_weights

SPARSE_STATS, ARRAY_STATS = ("users", "co", "trans"), ("counts", "last")  # what an update needs: saved as .npz, .npy


class ItemKNN(Recommender):
    name = "itemknn"

    def __init__(self, neighbours: int = 100, decay: float = 0.7, transition_weight: float = 1.0):
        self.neighbours = neighbours
        self.decay = decay
        self.transition_weight = transition_weight

    def fit(self, train, n_items, item_vectors=None):
        n_items = int(n_items)
        self.users_ = sparse.csr_matrix((len(train), n_items + 1), dtype=np.int32)
        self.counts_ = np.zeros(n_items + 1, dtype=np.int64)
        self.co_ = sparse.csr_matrix((n_items + 1, n_items + 1), dtype=np.int32)
        self.trans_ = sparse.csr_matrix((n_items + 1, n_items + 1), dtype=np.int32)
        self.last_ = np.zeros(len(train), dtype=np.int64)
        self._add(dict(enumerate(train)), n_items)
        self.sim_ = self._ranked(np.arange(n_items + 1))
        return self

    def update(self, appended: Mapping[int, Sequence[int]], n_items: int) -> np.ndarray:
        """Adds `appended` (user index → the items that continue their sequence, in order) with `n_items` items
        in all (at least the current count); re-ranks only the rows whose similarities changed and returns
        their item indices. Afterwards the model equals `fit` on the continued sequences (see the module)."""
        if getattr(self, "users_", None) is None:
            raise HuaxiangError("this item-KNN model was saved without the counts an update needs: refit it "
                                "(huaxiang train recommender)")
        old = self.sim_.shape[0]
        touched, from_rows = self._add(appended, int(n_items))
        n = int(n_items) + 1
        # rows whose entries change: items with a new user, their co-occurring items, items with a new transition
        changed = np.zeros(n, dtype=bool)
        changed[touched], changed[from_rows], changed[self.co_[touched].indices] = True, True, True
        changed = np.flatnonzero(changed)
        self.sim_ = _replace_rows(_grown(self.sim_, n, old), changed, self._ranked(changed))
        return changed

    def _add(self, appended: Mapping[int, Sequence[int]], n_items: int) -> tuple[np.ndarray, np.ndarray]:
        """Adds the events to the counts; returns (items that gained a user, items that gained a transition
        out of them)."""
        n = n_items + 1
        if n < self.co_.shape[0]:
            raise HuaxiangError(f"item-KNN update: n_items {n_items} is below the model's {self.co_.shape[0] - 1}")
        given = [(int(u), np.asarray(s, dtype=np.int64).ravel()) for u, s in appended.items()]
        users, seqs = [u for u, s in given if len(s)], [s for _, s in given if len(s)]
        if users and min(users) < 0:
            raise HuaxiangError(f"item-KNN: negative user index {min(users)}")
        items = np.concatenate(seqs) if seqs else np.zeros(0, dtype=np.int64)
        if len(items) and (items.min() < 1 or items.max() > n_items):
            u, s = next((u, s) for u, s in zip(users, seqs) if s.min() < 1 or s.max() > n_items)
            raise HuaxiangError(f"item-KNN: user {u} has item {int(s[(s < 1) | (s > n_items)][0])}, "
                                f"outside 1..{n_items}")
        n_users = max(self.users_.shape[0], max(users, default=-1) + 1)
        self.users_ = _grown(self.users_, n, self.users_.shape[0], n_users)
        self.counts_ = np.concatenate([self.counts_, np.zeros(n - len(self.counts_), dtype=np.int64)])
        self.co_ = _grown(self.co_, n, self.co_.shape[0])
        self.trans_ = _grown(self.trans_, n, self.trans_.shape[0])
        self.last_ = np.concatenate([self.last_, np.zeros(n_users - len(self.last_), dtype=np.int64)])
        if not users:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        lengths = np.array([len(s) for s in seqs])
        rows = np.repeat(np.arange(len(users)), lengths)
        ids = np.array(users, dtype=np.int64)
        old = self.users_[ids]  # those users' items so far (row r of `old` is users[r])
        new = sparse.csr_matrix((np.ones(len(rows), dtype=np.int32), (rows, items)), shape=(len(users), n))
        new.data[:] = 1  # a user counts once per item ...
        new = (new - new.multiply(old)).tocsr()  # ... and an item they already had adds nothing
        new.eliminate_zeros()
        co = new.T @ old
        co = (co + co.T + new.T @ new).tocoo()
        off = co.row != co.col  # an item does not co-occur with itself
        self.co_ = (self.co_ + sparse.csr_matrix((co.data[off], (co.row[off], co.col[off])), shape=(n, n))).tocsr()
        gained = np.asarray(new.sum(axis=0)).ravel()
        self.counts_ += gained
        self.users_ = (self.users_ + _scatter_rows(new, ids, n_users)).tocsr()
        # transitions: consecutive pairs of [previous last item] + appended
        follows = rows[1:] == rows[:-1]
        first = np.cumsum(lengths) - lengths  # where each user's appended items start in `items`
        prev = self.last_[ids]
        a = np.concatenate([items[:-1][follows], prev[prev > 0]])
        b = np.concatenate([items[1:][follows], items[first[prev > 0]]])
        pairs = sparse.csr_matrix((np.ones(len(a), dtype=np.int32), (a, b)), shape=(n, n))
        self.trans_ = (self.trans_ + pairs).tocsr()
        self.last_[ids] = items[first + lengths - 1]
        from_rows = np.zeros(n, dtype=bool)
        from_rows[a] = True
        return np.flatnonzero(gained), np.flatnonzero(from_rows)

    def _ranked(self, rows: np.ndarray) -> sparse.csr_matrix:
        """The top-k similarity rows `rows` (sorted item indices) from the counts: a matrix with as many rows."""
        inv = (np.float32(1) / np.maximum(np.sqrt(self.counts_.astype(np.float32)), np.float32(1e-9)))
        out_deg = np.asarray(self.trans_.sum(axis=1)).ravel()
        inv_out = np.float32(1) / np.maximum(out_deg, 1).astype(np.float32)
        co = self.co_[rows]
        co.data = co.data.astype(np.float32) * inv[np.repeat(rows, np.diff(co.indptr))] * inv[co.indices]
        tr = self.trans_[rows]
        tr.data = tr.data.astype(np.float32) * inv_out[np.repeat(rows, np.diff(tr.indptr))] \
            * np.float32(self.transition_weight)
        sim = (co + tr).tocsr()
        sim.eliminate_zeros()
        return _top_k(sim, self.neighbours)

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
        if getattr(self, "users_", None) is not None:
            for name in SPARSE_STATS:
                sparse.save_npz(d / f"{name}.npz", getattr(self, f"{name}_"))
            for name in ARRAY_STATS:
                np.save(d / f"{name}.npy", getattr(self, f"{name}_"))

    @classmethod
    def load(cls, d, params):
        m = cls(**params)
        m.sim_ = sparse.load_npz(d / "sim.npz").tocsr()
        for name in SPARSE_STATS + ARRAY_STATS:  # saved before the counts were kept: serves, `update` asks for a refit
            setattr(m, f"{name}_", None)
        if all((d / f"{name}.npz").exists() for name in SPARSE_STATS) and \
                all((d / f"{name}.npy").exists() for name in ARRAY_STATS):
            for name in SPARSE_STATS:
                setattr(m, f"{name}_", sparse.load_npz(d / f"{name}.npz").tocsr())
            for name in ARRAY_STATS:
                setattr(m, f"{name}_", np.load(d / f"{name}.npy"))
        return m


def appended_events(old: Sequence[Sequence[int]], new: Sequence[Sequence[int]]) -> dict[int, list[int]]:
    """Pure: what `ItemKNN.update` takes to go from the sequences `old` (what the model was fitted on) to `new`
    (the same users in the same rows, then any new users): each row's items beyond its old length. A row of
    `new` that does not start with the old row is an error (its past changed: that needs a refit)."""
    if len(new) < len(old):
        raise HuaxiangError(f"item-KNN update: {len(new)} sequences, fewer than the {len(old)} fitted on")
    out = {}
    for u, s in enumerate(new):
        before = list(old[u]) if u < len(old) else []
        if list(s[:len(before)]) != before:
            raise HuaxiangError(f"item-KNN update: sequence {u} does not continue the one fitted on: refit")
        if len(s) > len(before):
            out[u] = [int(i) for i in s[len(before):]]
    return out


def row_entries(m: sparse.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pure: (the position in `rows` of each stored entry of those rows, the entry's index into m.data/m.indices),
    row after row — the rows' entries without building a matrix."""
    starts, ends = m.indptr[rows], m.indptr[rows + 1]
    lengths = ends - starts
    which = np.repeat(np.arange(len(rows)), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return which, starts[which] + offsets


def _top_k(m: sparse.csr_matrix, k: int) -> sparse.csr_matrix:
    """Pure: the k largest entries of each row (equal values: the lower column first), columns sorted; the
    entries must be >= 0."""
    m = m.tocsr()
    m.sort_indices()
    lengths = np.diff(m.indptr)
    keep = np.ones(m.nnz, dtype=bool)
    if (lengths > k).any():  # only rows with more than k entries need a choice
        rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), lengths)
        at = np.flatnonzero(lengths[rows] > k)
        # by row, then value descending (the bits of a float32 >= 0 order as it does), then column: a stable sort
        # keeps each row's column order among equal values
        descending = np.uint32(0xFFFFFFFF) - np.asarray(m.data[at], dtype=np.float32).view(np.uint32)
        order = at[np.argsort((rows[at] << 32) | descending, kind="stable")]
        sizes = lengths[lengths > k]  # the long rows' lengths, in row order as `order` is
        rank = np.arange(len(order)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        keep[order[rank >= k]] = False
    indptr = np.concatenate([[0], np.cumsum(np.minimum(lengths, k))])
    out = sparse.csr_matrix((np.asarray(m.data[keep], dtype=np.float32), m.indices[keep].astype(np.int32),
                             indptr.astype(np.int32)), shape=m.shape)
    out.sort_indices()
    return out


def _grown(m: sparse.csr_matrix, n_cols: int, n_rows_before: int, n_rows: int | None = None) -> sparse.csr_matrix:
    """Pure: `m` padded with empty rows and columns to (n_rows or n_cols, n_cols)."""
    n_rows = n_cols if n_rows is None else n_rows
    if m.shape == (n_rows, n_cols):
        return m
    indptr = np.concatenate([m.indptr, np.full(n_rows - n_rows_before, m.indptr[-1], dtype=m.indptr.dtype)])
    return sparse.csr_matrix((m.data, m.indices, indptr), shape=(n_rows, n_cols))


def _scatter_rows(m: sparse.csr_matrix, ids: np.ndarray, n_rows: int) -> sparse.csr_matrix:
    """Pure: an (n_rows, ·) matrix whose row ids[r] is row r of `m` (ids distinct)."""
    coo = m.tocoo()
    return sparse.csr_matrix((coo.data, (ids[coo.row], coo.col)), shape=(n_rows, m.shape[1]))


def _replace_rows(m: sparse.csr_matrix, rows: np.ndarray, new: sparse.csr_matrix) -> sparse.csr_matrix:
    """Pure: `m` with its rows `rows` (distinct) replaced by the rows of `new` (one per entry of `rows`, in order)."""
    if not len(rows):
        return m
    replaced = np.zeros(m.shape[0], dtype=bool)
    replaced[rows] = True
    lengths = np.diff(m.indptr)
    sizes = np.where(replaced, 0, lengths)
    sizes[rows] = np.diff(new.indptr)
    indptr = np.concatenate([[0], np.cumsum(sizes)])
    # each entry's place: its row's new start plus its offset within the row
    owner = np.repeat(np.arange(m.shape[0]), lengths)
    kept = ~replaced[owner]
    old_at = indptr[owner[kept]] + np.flatnonzero(kept) - m.indptr[owner[kept]]
    new_owner = np.repeat(np.arange(len(rows)), np.diff(new.indptr))
    new_at = indptr[rows[new_owner]] + np.arange(new.nnz) - new.indptr[new_owner]
    indices, data = np.empty(indptr[-1], dtype=np.int32), np.empty(indptr[-1], dtype=np.float32)
    indices[old_at], data[old_at] = m.indices[kept], m.data[kept]
    indices[new_at], data[new_at] = new.indices, new.data
    return sparse.csr_matrix((data, indices, indptr.astype(np.int32)), shape=m.shape)
