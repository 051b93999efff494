"""Sequential recommendation, evaluated: the leave-one-out protocol on an S3-Rec sequence file, and the
whole run behind `huaxiang eval seqrec` and `benchmarks/seqrec.py` (choose the model, fit it on the
training part, tune it on the validation targets, score the test targets).

The file format, the split and the metrics live with the models (`models/seqrec/data.py`). Protocols:
`full` ranks the target against all items (those in the history excluded); `sample99` against 99
given negatives (`read_negatives`). Ties count as their expectation over a random order.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from ..errors import HuaxiangError
from ..models.seqrec import MODELS
from ..models.seqrec.data import Sequences, metrics, ranks_full, split

PROTOCOLS = ("full", "sample99")


def ranks_sampled(scores: np.ndarray, targets: np.ndarray, negatives: list[np.ndarray]) -> np.ndarray:
    t = scores[np.arange(len(targets)), targets]
    neg = np.stack([scores[row, negs] for row, negs in enumerate(negatives)])
    return np.stack([(neg > t[:, None]).sum(axis=1), (neg == t[:, None]).sum(axis=1)], axis=1)


def evaluate(score: Callable[[list[list[int]]], np.ndarray], data: Sequences, stage: str = "test",
             protocol: str = "full", negatives: list[np.ndarray] | None = None, batch: int = 512,
             progress: Callable[[int, int], None] | None = None) -> dict[str, float]:
    """Metrics of `score(histories) -> (batch, n_items + 1)` on `stage` under `protocol`."""
    histories, targets = split(data, stage)
    if protocol == "sample99" and negatives is None:
        raise HuaxiangError("the sample99 protocol needs the negatives file (--negatives)")
    ranks = []
    for start in range(0, len(histories), batch):
        h, t = histories[start:start + batch], targets[start:start + batch]
        s = score(h)
        ranks.append(ranks_full(s, h, t) if protocol == "full" else
                     ranks_sampled(s, t, negatives[start:start + batch]))
        if progress:
            progress(min(start + batch, len(histories)), len(histories))
    out = metrics(np.concatenate(ranks))
    out["n_users"] = len(histories)
    return out


def check(model: str, protocol: str = "full", has_negatives: bool = False) -> None:
    """The run's choices, checked before anything is read."""
    if model not in MODELS:
        raise HuaxiangError(f"unknown model {model!r} (one of: {', '.join(MODELS)})")
    if protocol not in PROTOCOLS:
        raise HuaxiangError(f"unknown protocol {protocol!r} (full or sample99)")
    if protocol == "sample99" and not has_negatives:
        raise HuaxiangError("--protocol sample99 needs --negatives FILE")


def fit(data: Sequences, model: str, vectors: np.ndarray | None = None, sasrec: dict | None = None,
        step: Callable[[str], None] | None = None):
    """The model named `model` fitted on the training part of `data`; SASRec and the hybrid stop early
    on the validation targets (the hybrid also tunes its weights there). `sasrec` holds SASRec's
    settings (e.g. epochs, text), for SASRec itself or the hybrid's SASRec part; `vectors` are the
    item text vectors (content model, text fusion). Returns (model, training seconds)."""
    check(model)
    sasrec = sasrec or {}
    text = sasrec.get("text")
    if (model == "content" or text) and vectors is None:
        raise HuaxiangError(f"{'--text' if text else 'the content model'} needs item texts (--items FILE)")
    m = MODELS[model](**({"sasrec": sasrec} if model == "hybrid" else sasrec if model == "sasrec" else {}))
    train = split(data, "train")[0]
    if step:
        step(f"training {model}")
    started = time.perf_counter()
    if model in ("sasrec", "hybrid"):
        m.fit(train, data.n_items, vectors, valid=split(data, "valid"),
              progress=(lambda msg: step(f"{model}: {msg}")) if step else None)
    else:
        m.fit(train, data.n_items, vectors)
    return m, time.perf_counter() - started


def run(data: Sequences, model: str, vectors: np.ndarray | None = None, protocol: str = "full",
        negatives: list[np.ndarray] | None = None, sasrec: dict | None = None,
        step: Callable[[str], None] | None = None, progress: Callable[[int, int], None] | None = None) -> dict:
    """Fit `model` (see `fit`), then score the validation targets (full ranking) and the test targets
    under `protocol`. Returns the test metrics (hr@5, hr@10, ndcg@5, ndcg@10, mrr, n_users) with model,
    protocol, train_seconds, n_items, valid_ndcg_at_10 and params, plus `fitted`: the trained model."""
    check(model, protocol, negatives is not None)
    m, seconds = fit(data, model, vectors, sasrec, step)
    if step:
        step("evaluating")
    valid = evaluate(m.score, data, "valid", "full", progress=progress)
    result = evaluate(m.score, data, "test", protocol, negatives, progress=progress)
    result.update(model=model, protocol=protocol, train_seconds=seconds, n_items=data.n_items,
                  valid_ndcg_at_10=valid["ndcg@10"], params=m.params(), fitted=m)
    return result
