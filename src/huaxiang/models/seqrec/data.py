"""The data of sequential recommendation: S3-Rec sequence files, the leave-one-out split and its metrics.

Format: one user per line, `user_id item_1 item_2 …` in chronological order (whitespace separated).
Items are mapped to indices 1..n in order of first appearance (0 is padding).

Split (as in the S3-Rec / SASRec papers and their code): per user the last item is the test target,
the second-to-last the validation target, the rest is training. A model scores every item for a
history; the items already in the history are excluded (as the published code does). The target's
rank is the number of remaining items scored strictly higher, plus a uniformly random place among
the items tied with it — the metrics are their exact expectation over that draw, so a model that
scores many items alike (popularity, item-KNN's zeros) is neither flattered nor punished by the
order ties happen to be broken in. Metrics: HR@k (target in the top k), NDCG@k (1/log2(rank+2)
when in the top k), MRR (1/(rank+1)), averaged over users. The models use them for early stopping
and tuning on the validation targets; `evaluate/seqrec.py` runs the whole protocol.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...errors import HuaxiangError
from ...ingest.readers import open_text


@dataclass
class Sequences:
    users: list[str]
    seqs: list[list[int]]  # item indices, 1-based
    items: list[str] = field(default_factory=list)  # items[i - 1] = the file's id of index i

    @property
    def n_items(self) -> int:
        return len(self.items)

    def index(self) -> dict[str, int]:
        return {item: i + 1 for i, item in enumerate(self.items)}


def read_sequences(path: str, min_length: int = 3) -> Sequences:
    """Reads an S3-Rec file. Users with fewer than `min_length` items (nothing left to train on) are
    an error naming the line, as is a repeated user id."""
    users, seqs, index = [], [], {}
    try:
        with open_text(path) as f:
            for no, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) - 1 < min_length:
                    raise HuaxiangError(f"{path}, line {no}: user {parts[0]!r} has {len(parts) - 1} items; "
                                        f"leave-one-out needs at least {min_length}")
                users.append(parts[0])
                seqs.append([index.setdefault(item, len(index) + 1) for item in parts[1:]])
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise HuaxiangError(f"cannot read {path}: {exc}") from exc
    if len(set(users)) != len(users):
        raise HuaxiangError(f"{path}: a user id appears on more than one line")
    if not users:
        raise HuaxiangError(f"{path}: no sequences")
    return Sequences(users, seqs, list(index))


def read_negatives(path: str, data: Sequences, n: int = 99) -> list[np.ndarray]:
    """`user_id neg_1 … neg_n` per line, aligned with `data.users`."""
    idx, rows = data.index(), {}
    with open_text(path) as f:
        for no, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            unknown = [p for p in parts[1:] if p not in idx]
            if len(parts) - 1 != n or unknown:
                raise HuaxiangError(f"{path}, line {no}: expected {n} known negative items "
                                    f"(got {len(parts) - 1}{', unknown ' + ', '.join(unknown[:3]) if unknown else ''})")
            rows[parts[0]] = np.array([idx[p] for p in parts[1:]], dtype=np.int64)
    missing = [u for u in data.users if u not in rows]
    if missing:
        raise HuaxiangError(f"{path}: no negatives for {len(missing)} users (e.g. {missing[0]!r})")
    return [rows[u] for u in data.users]


def split(data: Sequences, stage: str) -> tuple[list[list[int]], np.ndarray]:
    """(histories, targets) for `stage`: train (histories = all but the last two), valid, test."""
    if stage == "train":
        return [s[:-2] for s in data.seqs], np.zeros(len(data.seqs), dtype=np.int64)
    cut = -2 if stage == "valid" else -1
    return [s[:cut] for s in data.seqs], np.array([s[cut] for s in data.seqs], dtype=np.int64)


def ranks_full(scores: np.ndarray, histories: list[list[int]], targets: np.ndarray) -> np.ndarray:
    """(above, tied) per target among all items, the history's items excluded: how many items score
    strictly higher and how many the same; `scores` is (users, n_items + 1), column 0 padding."""
    s = scores.astype(np.float64, copy=True)
    s[:, 0] = -np.inf
    for row, hist in enumerate(histories):
        s[row, hist] = -np.inf
    t = s[np.arange(len(targets)), targets]
    s[np.arange(len(targets)), targets] = np.nan  # the target is neither above nor tied with itself
    return np.stack([(s > t[:, None]).sum(axis=1), (s == t[:, None]).sum(axis=1)], axis=1)


def metrics(ranks: np.ndarray, ks: tuple[int, ...] = (5, 10)) -> dict[str, float]:
    """Mean HR@k, NDCG@k and MRR; `ranks` holds plain ranks (0 = best) or (above, tied) rows, whose
    metrics are the expectation over a uniformly random place among the tied items."""
    ranks = np.asarray(ranks, dtype=np.float64)
    above, tied = (ranks[:, 0], ranks[:, 1]) if ranks.ndim == 2 else (ranks, np.zeros_like(ranks))
    places = tied + 1  # the target's possible ranks: above, above + 1, ..., above + tied
    out = {}
    for k in ks:
        offsets = np.arange(k)
        rank = above[:, None] + offsets[None, :]  # each rank below k that a place can give
        valid = (offsets[None, :] < places[:, None]) & (rank < k)
        out[f"hr@{k}"] = float((valid.sum(axis=1) / places).mean())
        out[f"ndcg@{k}"] = float((np.where(valid, 1.0 / np.log2(rank + 2), 0.0).sum(axis=1) / places).mean())
    # E[1 / (rank + 1)] = (H(above + tied + 1) - H(above)) / (tied + 1), H the harmonic numbers
    from scipy.special import digamma
    out["mrr"] = float(((digamma(above + places + 1) - digamma(above + 1)) / places).mean())
    return out
