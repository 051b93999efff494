"""Semantic interest tags: the interests (from a bilingual list, `Config.interests`) nearest to a
user's embedding.

Each interest is a short description in English and Chinese, embedded as an E5 query; a user's
score for it is the cosine with their embedding (items and reviews they engaged with), minus that
interest's mean cosine over the users of the same tenant (some descriptions sit near everything — "hubs" —
and would otherwise win for everyone; skipped below `MIN_POPULATION` users). Scores of one user are then
compared with each other (z-score over the interest list), so a tag means "clearly nearer to this
than to the other interests", not an absolute threshold that shifts with the encoder.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..schema import tenant_of
from ..store import transaction

MIN_POPULATION = 10


def nearest_interests(user_vecs: np.ndarray, interest_vecs: np.ndarray, names: list[str], k: int = 3,
                      min_z: float = 2.0) -> list[tuple[list[str], list[float]]]:
    """Pure: per user, up to k interest names whose (population-centred) cosine is ≥ `min_z`
    standard deviations above that user's mean over all interests, best first, with their cosines."""
    sims = user_vecs @ interest_vecs.T
    centred = sims - sims.mean(axis=0, keepdims=True) if len(sims) >= MIN_POPULATION else sims
    z = (centred - centred.mean(axis=1, keepdims=True)) / np.maximum(centred.std(axis=1, keepdims=True), 1e-9)
    out = []
    for row_sims, row_z in zip(sims, z):
        best = [j for j in np.argsort(-row_z, kind="stable")[:k] if row_z[j] >= min_z]
        out.append(([names[j] for j in best], [float(row_sims[j]) for j in best]))
    return out


def write_user_interests(con, encoder, interests: dict[str, str], k: int = 3) -> int:
    """Replaces `user_interests(user_id, model, interests, scores)` for the encoder's user embeddings."""
    names = list(interests)
    interest_vecs = encoder.encode([interests[n] for n in names], "query")
    rows = con.execute("SELECT user_id, vector FROM user_embeddings WHERE model = ? ORDER BY user_id",
                       [encoder.name]).fetchall()
    con.execute("""CREATE TABLE IF NOT EXISTS user_interests (user_id VARCHAR, model VARCHAR,
                   interests VARCHAR[], scores DOUBLE[])""")
    with transaction(con):
        con.execute("DELETE FROM user_interests WHERE model = ?", [encoder.name])
        if rows:
            tags: list = [None] * len(rows)
            by_tenant: dict[str, list[int]] = {}
            for i, (user, _) in enumerate(rows):
                by_tenant.setdefault(tenant_of(user), []).append(i)
            for members in by_tenant.values():  # each tenant centred on its own population
                found = nearest_interests(np.asarray([rows[i][1] for i in members], dtype=np.float32),
                                          interest_vecs, names, k)
                for i, tag in zip(members, found):
                    tags[i] = tag
            con.register("_interests", pd.DataFrame({"user_id": [r[0] for r in rows], "interests": [t[0] for t in tags],
                                                     "scores": [t[1] for t in tags]}))
            con.execute("INSERT INTO user_interests SELECT user_id, ?, interests, scores FROM _interests",
                        [encoder.name])
            con.unregister("_interests")
    return len(rows)
