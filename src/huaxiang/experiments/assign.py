"""Which variant of an experiment a user sees: a deterministic hash of (the experiment's salt, the user id).

`bucket` maps a user to a number in [0, 1): the first 8 bytes of sha256(salt UTF-8 + NUL + user id UTF-8), read as
a big-endian unsigned integer x, divided by 2**64 — rounded down to 53 bits, (x >> 11) / 2**53, so the float is
exact and never reaches 1. It uses no process state (never `hash()`), so every worker, platform and Python
version gives the same answer; a user keeps their variant for the life of the experiment (sticky); and two
experiments with different salts split users independently of each other (sha256 outputs under different inputs
behave as independent uniforms). The variants cut [0, 1) in the order given, in proportion to their weights.
"""
from __future__ import annotations

import hashlib
import math
import secrets
from itertools import accumulate

import numpy as np

from ..errors import HuaxiangError

SALT_HEX = 16  # a salt is this many hex characters (64 random bits)
_SCALE = float(2**53)  # x >> 11 has 53 bits: exact in a float, and / 2**53 < 1


def new_salt() -> str:
    """A fresh random salt for a new experiment: 16 hex characters from `secrets`."""
    return secrets.token_hex(SALT_HEX // 2)


def parse_split(variants: list[str], split: list[float] | None = None) -> list[tuple[str, float]]:
    """The variants with their weights normalised to sum to 1 (equal when `split` is None), in the order given.

    Names must be unique and non-empty, at least two of them; weights positive and finite, one per variant."""
    names = [str(v).strip() for v in variants]
    if len(names) < 2:
        raise HuaxiangError(f"an experiment needs at least 2 variants, got {len(names)}: {names!r}")
    for name in names:
        if not name:
            raise HuaxiangError(f"empty variant name in {list(variants)!r}")
    seen = set()
    for name in names:
        if name in seen:
            raise HuaxiangError(f"duplicate variant name {name!r} in {names!r}")
        seen.add(name)
    if split is None:
        weights = [1.0] * len(names)
    else:
        weights = list(split)
        if len(weights) != len(names):
            raise HuaxiangError(f"split {weights!r} has {len(weights)} weights for {len(names)} variants {names!r}")
        for name, w in zip(names, weights):
            try:
                w = float(w)
            except (TypeError, ValueError):
                raise HuaxiangError(f"split weight {w!r} of variant {name!r} is not a number") from None
            if not math.isfinite(w) or w <= 0:
                raise HuaxiangError(f"split weight {w!r} of variant {name!r} must be a positive number")
        weights = [float(w) for w in weights]
    total = math.fsum(weights)
    return [(name, w / total) for name, w in zip(names, weights)]


def bucket(salt: str, user_id: str) -> float:
    """The user's point in [0, 1) for this salt: sha256(salt, NUL, user id) → first 8 bytes big-endian / 2**64
    (rounded down to 53 bits)."""
    if not isinstance(salt, str) or not isinstance(user_id, str):
        raise HuaxiangError(f"salt and user id must be strings, got {type(salt).__name__} and {type(user_id).__name__}")
    digest = hashlib.sha256(salt.encode("utf-8") + b"\0" + user_id.encode("utf-8")).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / _SCALE


def _edges(variants: list[tuple[str, float]]) -> np.ndarray:
    """The right edges of the variants' intervals in [0, 1); the last is exactly 1 whatever the rounding."""
    if not variants:
        raise HuaxiangError("an experiment without variants has nothing to assign")
    edges = np.array(list(accumulate(w for _, w in variants)), dtype=np.float64)
    edges /= edges[-1]
    edges[-1] = 1.0
    return edges


def variant_of(salt: str, user_id: str, variants: list[tuple[str, float]]) -> str:
    """The variant the user sees: the one whose slice of [0, 1) (cumulative weights, in order) holds their bucket."""
    edges = _edges(variants)
    return variants[int(np.searchsorted(edges, bucket(salt, user_id), side="right"))][0]


def variants_of(salt: str, user_ids: list[str], variants: list[tuple[str, float]]) -> list[str]:
    """`variant_of` for many users at once (the hashing is per id; the lookup is one vectorised search)."""
    edges = _edges(variants)
    prefix = salt.encode("utf-8") + b"\0" if isinstance(salt, str) else None
    if prefix is None:
        raise HuaxiangError(f"salt must be a string, got {type(salt).__name__}")
    sha = hashlib.sha256
    try:
        raw = b"".join(sha(prefix + u.encode("utf-8")).digest()[:8] for u in user_ids)
    except AttributeError:
        bad = next(u for u in user_ids if not isinstance(u, str))
        raise HuaxiangError(f"user id {bad!r} must be a string") from None
    points = (np.frombuffer(raw, dtype=">u8") >> np.uint64(11)).astype(np.float64) / _SCALE
    index = np.searchsorted(edges, points, side="right")
    names = [name for name, _ in variants]
    return [names[i] for i in index.tolist()]
