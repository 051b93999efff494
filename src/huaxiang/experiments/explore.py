"""Exploration: serving that sometimes shows other items than the top-k, with the probability of what it showed
(its propensity) recorded beside each exposure, so that logged traffic can evaluate other policies off-line
(`huaxiang ope --format exposures`, evaluate/ope.py).

The policy (ε-greedy over a pool, per answer): the recommender ranks a pool of its best `pool` candidates (at least
k). With probability 1 − ε the answer is the pool's first k, in order; with probability ε it is k items drawn
uniformly at random from the pool without replacement, in the order drawn. The probability that position j shows
item a is then

    π_b(a | user, j) = (1 − ε)·[a is the pool's j-th item] + ε / |pool|      (0 for an item outside the pool)

(a uniformly random ordered draw puts each pool item at each position with probability 1 / |pool|). Each shown
item's propensity is that probability. What it costs: an ε share of answers is random within the pool, so expect
the click-through rate to fall by about ε times the gap between the top-k's and the pool's average; a small ε
(0.05-0.1) and a pool of a few times k keep it small while every pool item keeps a propensity of at least ε/|pool|.
Off-line evaluation can only judge a target policy on the items the pool could show (overlap).
"""
from __future__ import annotations

import random


def explore(pool: list[dict], k: int, epsilon: float, rng: random.Random | None = None) -> list[dict]:
    """k items of `pool` (a ranked answer's items, best first), each with its `propensity`: the pool's first k with
    probability 1 − `epsilon`, else a uniform random draw of k from the pool."""
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be within [0, 1], got {epsilon}")
    rng = rng or random
    shown = rng.sample(pool, min(k, len(pool))) if rng.random() < epsilon else pool[:k]
    rank = {id(item): j for j, item in enumerate(pool)}
    return [{**item, "propensity": (1.0 - epsilon) * (rank[id(item)] == j) + epsilon / len(pool)}
            for j, item in enumerate(shown)]
