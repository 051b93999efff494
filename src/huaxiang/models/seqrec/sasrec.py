"""A self-attentive sequential recommender (SASRec, Kang & McAuley 2018) trained with a full-softmax
cross-entropy loss over all items, optionally fused with pretrained-LM item text embeddings.

Architecture: item embedding (+ a learned projection of the item's frozen text vector when
`text="fuse"`, or the id embeddings initialised from the text vectors when `text="init"`) plus a
learned position embedding, `layers` causal transformer blocks (pre-norm, GELU feed-forward), and
the output scored against the same item table (tied weights). Every position of a training
sequence predicts the next item (causal attention), and the loss is computed only at real
positions; batches are grouped by length so that short sequences are not padded to `max_len`.
Training keeps the epoch with the best validation NDCG@10 (full ranking) and stops after `patience`
epochs without improvement. Small batches (32 sequences, ~220 positions) at lr 2e-3 matter: the
loss has a plateau where the model has learnt only popularity, and the number of optimiser steps,
not the number of examples seen, decides how soon it leaves it (batch 128 at lr 1e-3 needed 4× the
epochs on Beauty).

Warm start (`fit(..., init=previous, init_index=match_items(previous_items, items))`): the network
starts from a previously trained SASRec instead of random weights — the position embeddings, the
transformer blocks, the final norm (and the text projection) are copied, and each item's embedding row
is copied from the previous model's row of the same item id; items the previous model never saw keep
their fresh initialisation. A training on a grown store numbers items by first appearance, so an old
item's index can change between trainings: `match_items` maps them by id. Training then runs as usual
(early stopping on the validation targets) on the new data; the optimiser state starts afresh.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Callable

import numpy as np

from ...batching import length_batches
from ...errors import HuaxiangError
from .base import Recommender


def match_items(old_items: list[str], new_items: list[str]) -> np.ndarray:
    """For each index 0..len(new_items) of a new training (items numbered from 1, 0 padding → 0), the index
    of the same item id among `old_items` (the previous training's, also numbered from 1), or -1 for an
    item the previous training did not have."""
    old = {item: i for i, item in enumerate(old_items, 1)}
    return np.array([0] + [old.get(item, -1) for item in new_items], dtype=np.int64)


def _torch():
    import torch
    return torch


class _Net:
    """Built lazily so that importing the package does not import torch."""

    def __new__(cls, n_items, dim, max_len, layers, heads, dropout, text_vectors, text_mode):
        torch = _torch()
        nn = torch.nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.item = nn.Embedding(n_items + 1, dim, padding_idx=0)
                nn.init.normal_(self.item.weight, std=dim ** -0.5)
                if text_vectors is not None:
                    t = torch.as_tensor(text_vectors, dtype=torch.float32)
                    if text_mode == "fuse":
                        self.register_buffer("text", t)
                        self.text_proj = nn.Linear(t.shape[1], dim, bias=False)
                        nn.init.normal_(self.text_proj.weight, std=t.shape[1] ** -0.5)
                    else:  # init: the id table starts as a random projection of the text vectors
                        g = torch.Generator().manual_seed(0)
                        proj = torch.randn(t.shape[1], dim, generator=g) / math.sqrt(t.shape[1])
                        with torch.no_grad():
                            e = t @ proj
                            self.item.weight.copy_(e / e[1:].std() * dim ** -0.5)
                            self.item.weight[0].zero_()
                self.fuse = text_vectors is not None and text_mode == "fuse"
                self.pos = nn.Embedding(max_len, dim)
                self.drop = nn.Dropout(dropout)
                block = nn.TransformerEncoderLayer(dim, heads, dim * 4, dropout, activation="gelu",
                                                   batch_first=True, norm_first=True)
                self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
                self.norm = nn.LayerNorm(dim)

            def table(self):
                w = self.item.weight
                return w + self.text_proj(self.text) if self.fuse else w

            def forward(self, seq):  # seq: (batch, length), left-padded with 0
                table = self.table()
                length = seq.shape[1]
                x = table[seq] * math.sqrt(table.shape[1]) + self.pos.weight[-length:]
                x = self.drop(x) * (seq > 0).unsqueeze(-1)
                # a position sees itself and the real items before it (never a fully masked row)
                blocked = torch.triu(torch.ones(length, length, dtype=torch.bool, device=seq.device), 1)
                blocked = blocked | (seq == 0).unsqueeze(1)
                blocked = blocked & ~torch.eye(length, dtype=torch.bool, device=seq.device)
                mask = torch.zeros(blocked.shape, device=seq.device).masked_fill(blocked, float("-inf"))
                h = self.blocks(x, mask=mask.repeat_interleave(heads, dim=0))
                return self.norm(h), table

        return Net()


class SASRec(Recommender):
    name = "sasrec"

    def __init__(self, dim: int = 64, max_len: int = 50, layers: int = 2, heads: int = 2, dropout: float = 0.3,
                 lr: float = 2e-3, batch_size: int = 32, epochs: int = 200, patience: int = 10,
                 weight_decay: float = 0.0, text: str | None = None, seed: int = 0, threads: int = 0,
                 max_train_seconds: float = 0.0):
        self.dim = dim
        self.max_len = max_len
        self.layers = layers
        self.heads = heads
        self.dropout = dropout
        self.lr = lr
        self.batch_size = batch_size
        self.epochs = epochs
        self.patience = patience
        self.weight_decay = weight_decay
        self.text = text  # None, "fuse" or "init"
        self.seed = seed
        self.threads = threads
        self.max_train_seconds = max_train_seconds

    # ------------------------------------------------------------------ training
    def fit(self, train, n_items, item_vectors=None, valid: tuple[list[list[int]], np.ndarray] | None = None,
            progress: Callable[[str], None] | None = None, init: "SASRec | None" = None,
            init_index: np.ndarray | None = None):
        """Trains on `train` (item index sequences); `valid` = (histories, targets) decides the epoch kept
        and when to stop. `init`: a trained SASRec to warm-start from (see the module's docstring), with
        `init_index` from `match_items` (None: an item keeps its index, and indices beyond `init`'s
        items are new)."""
        torch = _torch()
        if self.threads:
            torch.set_num_threads(self.threads)
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        vectors = None
        if self.text:
            if item_vectors is None:
                raise ValueError("text fusion needs item text vectors")
            vectors = np.asarray(item_vectors, dtype=np.float32)
        self.n_items_ = n_items
        self.net_ = _Net(n_items, self.dim, self.max_len, self.layers, self.heads, self.dropout, vectors, self.text)
        self.warm_ = self._warm_start(init, init_index) if init is not None else None
        opt = torch.optim.AdamW(self.net_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        seqs = [s[-(self.max_len + 1):] for s in train if len(s) >= 2]
        lengths = np.array([len(s) - 1 for s in seqs])
        best, best_state, stale, self.history_ = -1.0, None, 0, []
        started = time.perf_counter()
        for epoch in range(1, self.epochs + 1):
            self.net_.train()
            total, count = 0.0, 0
            for rows in length_batches(rng.permutation(len(lengths)), lengths, self.batch_size, rng):
                width = int(lengths[rows].max())
                x = np.zeros((len(rows), width), dtype=np.int64)
                y = np.zeros((len(rows), width), dtype=np.int64)
                for r, i in enumerate(rows):
                    s = seqs[i]
                    x[r, width - len(s) + 1:] = s[:-1]
                    y[r, width - len(s) + 1:] = s[1:]
                x, y = torch.as_tensor(x), torch.as_tensor(y)
                h, table = self.net_(x)
                real = y > 0
                logits = h[real] @ table.T
                logits[:, 0] = -1e9
                loss = torch.nn.functional.cross_entropy(logits, y[real])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, count = total + loss.item() * int(real.sum()), count + int(real.sum())
            record = {"epoch": epoch, "loss": total / max(count, 1), "seconds": time.perf_counter() - started}
            if valid is not None:
                from .data import metrics, ranks_full
                ranks = np.concatenate([ranks_full(self.score(valid[0][i:i + 1024]), valid[0][i:i + 1024],
                                                   valid[1][i:i + 1024]) for i in range(0, len(valid[0]), 1024)])
                record.update(metrics(ranks))
            self.history_.append(record)
            if progress:
                progress(f"epoch {epoch}: loss {record['loss']:.3f}"
                         + (f", valid NDCG@10 {record['ndcg@10']:.4f}" if "ndcg@10" in record else ""))
            target = record.get("ndcg@10", -record["loss"])
            if target > best:
                best, stale, best_state = target, 0, copy.deepcopy(self.net_.state_dict())
            else:
                stale += 1
                if stale >= self.patience:
                    break
            if self.max_train_seconds and record["seconds"] > self.max_train_seconds:
                break
        if best_state is not None:  # (none when epochs is 0: the initial weights stay)
            self.net_.load_state_dict(best_state)
        self.train_seconds_ = time.perf_counter() - started
        return self

    def _warm_start(self, init: "SASRec", index: np.ndarray | None) -> dict:
        """Copies `init`'s weights into the new network (item rows by `index`); returns the counts of
        items carried over and new."""
        torch = _torch()
        if not hasattr(init, "net_"):
            raise HuaxiangError("SASRec warm start: the previous model is not trained")
        other = [k for k in ("dim", "max_len", "layers", "heads") if getattr(init, k) != getattr(self, k)]
        if (init.text == "fuse") != (self.text == "fuse"):
            other.append("text")
        if other:
            raise HuaxiangError(f"SASRec warm start: the previous model differs in {', '.join(other)} "
                                f"({', '.join(f'{k}={getattr(init, k)!r}' for k in other)})")
        n_new, n_old = self.n_items_, init.n_items_
        if index is None:
            index = np.arange(n_new + 1, dtype=np.int64)
            index[index > n_old] = -1
        index = np.asarray(index, dtype=np.int64)
        if index.shape != (n_new + 1,) or index.max(initial=0) > n_old:
            raise HuaxiangError(f"SASRec warm start: the item index has {len(index)} entries (expected "
                                f"{n_new + 1}) or names an item beyond the previous model's {n_old}")
        known = np.flatnonzero(index > 0)
        old, new = init.net_.state_dict(), self.net_.state_dict()
        with torch.no_grad():
            for key, value in old.items():
                if key == "item.weight":
                    rows = torch.as_tensor(known)
                    new[key][rows] = value[torch.as_tensor(index[known])]
                elif key != "text":  # (the text vectors are this training's own)
                    new[key].copy_(value)
        self.net_.load_state_dict(new)
        return {"items_carried": int(len(known)), "items_new": int(n_new - len(known))}

    # ------------------------------------------------------------------ scoring
    def encode(self, histories) -> np.ndarray:
        """The user's state after their history: (batch, dim)."""
        torch = _torch()
        self.net_.eval()
        width = max(1, min(self.max_len, max((len(h) for h in histories), default=1)))
        x = np.zeros((len(histories), width), dtype=np.int64)
        for r, h in enumerate(histories):
            h = h[-width:]
            if h:
                x[r, width - len(h):] = h
        with torch.no_grad():
            h, _ = self.net_(torch.as_tensor(x))
        out = h[:, -1].numpy().copy()
        out[[not h for h in histories]] = 0.0
        return out

    def item_table(self) -> np.ndarray:
        torch = _torch()
        with torch.no_grad():
            return self.net_.table().numpy().copy()

    def score(self, histories):
        return self.encode(histories) @ self.item_table().T

    def save(self, d):
        torch = _torch()
        torch.save({"state": self.net_.state_dict(), "n_items": self.n_items_, "history": self.history_,
                    "warm": getattr(self, "warm_", None),
                    "text_dim": getattr(self.net_, "text", None).shape[1] if getattr(self.net_, "fuse", False) else 0},
                   d / "sasrec.pt")

    @classmethod
    def load(cls, d, params):
        torch = _torch()
        blob = torch.load(d / "sasrec.pt", map_location="cpu")
        m = cls(**params)
        n = blob["n_items"]
        vectors = np.zeros((n + 1, blob["text_dim"]), dtype=np.float32) if blob["text_dim"] else None
        m.net_ = _Net(n, m.dim, m.max_len, m.layers, m.heads, m.dropout, vectors, m.text if vectors is not None else None)
        m.net_.load_state_dict(blob["state"])
        m.n_items_, m.history_, m.warm_ = n, blob["history"], blob.get("warm")
        return m
