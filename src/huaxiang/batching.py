"""Batches of similar length, for training on sequences of very different lengths (less padding)."""
from __future__ import annotations

import numpy as np


def length_batches(rows: np.ndarray, lengths: np.ndarray, batch_size: int, rng) -> list[np.ndarray]:
    """`rows` (already shuffled) cut into chunks of 50 batches; each chunk sorted by `lengths[row]`
    and cut into batches; the batches returned in a shuffled order."""
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]
