"""Embeddings of items (title + brand + category), reviews and search queries, cached in the store,
and user embeddings aggregated from them.

Cache: table `embeddings(kind, key, model, text_hash, vector)`. A text is embedded again only when
its hash or the model changes; batches are committed as they finish, so an interrupted run
resumes where it stopped. Users: `user_embeddings(user_id, model, vector)`, the L2-normalised
weighted sum of the items they engaged with (event weight × time decay, as for affinities) and of
the reviews they wrote (each counted like a review event on a fresh item).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import duckdb
import ibis
import numpy as np
import pandas as pd
from scipy import sparse

from ..config import Config
from ..features import behaviour as bh
from ..store import transaction
from .interests import write_user_interests

BATCH = 256

# kind -> SQL giving (key, text) for everything that can be embedded
SOURCES = {
    "item": """SELECT item_id AS key, concat_ws(' · ', NULLIF(trim(title), ''), NULLIF(trim(brand), ''),
                                           NULLIF(trim(category), '')) AS text
               FROM items WHERE coalesce(title, brand, category) IS NOT NULL""",
    "review": "SELECT review_id AS key, text FROM reviews WHERE text IS NOT NULL",
    "query": "SELECT DISTINCT query AS key, query AS text FROM events WHERE type = 'search' AND query IS NOT NULL",
}
KIND_OF = {"item": "passage", "review": "passage", "query": "query"}


@dataclass
class EmbedReport:
    computed: dict[str, int] = field(default_factory=dict)
    cached: dict[str, int] = field(default_factory=dict)
    users: int = 0


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""CREATE TABLE IF NOT EXISTS embeddings (kind VARCHAR, key VARCHAR, model VARCHAR,
                   text_hash VARCHAR, vector FLOAT[])""")
    con.execute("CREATE TABLE IF NOT EXISTS user_embeddings (user_id VARCHAR, model VARCHAR, vector FLOAT[])")


def embed_kind(con, encoder, kind: str, progress: Callable[[int, int], None] | None = None) -> tuple[int, int]:
    """Embeds every `kind` text whose (model, text) is not cached yet; returns (computed, cached)."""
    todo = con.execute(f"""
        SELECT s.key, s.text, md5(s.text) AS h FROM ({SOURCES[kind]}) s
        WHERE s.text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.kind = ? AND e.key = s.key
              AND e.model = ? AND e.text_hash = md5(s.text))""", [kind, encoder.name]).df()
    total = con.execute(f"SELECT count(*) FROM ({SOURCES[kind]}) WHERE text IS NOT NULL").fetchone()[0]
    for start in range(0, len(todo), BATCH):
        part = todo.iloc[start:start + BATCH]
        vectors = encoder.encode(part["text"].tolist(), KIND_OF[kind])
        batch = pd.DataFrame({"key": part["key"].values, "h": part["h"].values, "vector": list(vectors)})
        con.register("_emb", batch)
        with transaction(con):
            con.execute("DELETE FROM embeddings WHERE kind = ? AND key IN (SELECT key FROM _emb)", [kind])
            con.execute("INSERT INTO embeddings SELECT ?, key, ?, h, vector::FLOAT[] FROM _emb", [kind, encoder.name])
        con.unregister("_emb")
        if progress:
            progress(min(start + BATCH, len(todo)), len(todo))
    return len(todo), total - len(todo)


def _vectors(con, kind: str, model: str) -> tuple[list[str], np.ndarray]:
    rows = con.execute("SELECT key, vector FROM embeddings WHERE kind = ? AND model = ? ORDER BY key",
                       [kind, model]).fetchall()
    if not rows:
        return [], np.zeros((0, 0), dtype=np.float32)
    return [r[0] for r in rows], np.asarray([r[1] for r in rows], dtype=np.float32)


def user_vectors(weights: pd.DataFrame, keys: list[str], vectors: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Pure: rows (user_id, key, w) and the key vectors -> users and their normalised weighted sums."""
    index = {k: i for i, k in enumerate(keys)}
    w = weights[weights["key"].isin(index)]
    if w.empty:
        return [], np.zeros((0, vectors.shape[1] if vectors.size else 0), dtype=np.float32)
    users = sorted(w["user_id"].unique())
    uindex = {u: i for i, u in enumerate(users)}
    m = sparse.csr_matrix((w["w"].to_numpy(dtype=np.float64),
                           (w["user_id"].map(uindex).to_numpy(), w["key"].map(index).to_numpy())),
                          shape=(len(users), len(keys)))
    out = np.asarray(m @ vectors, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return users, out / np.where(norms > 0, norms, 1.0)


def embed_users(con, cfg: Config, model: str) -> int:
    """Aggregates item and review embeddings into one vector per user (replaces the table)."""
    from ..features.table import reference_times
    ib = ibis.duckdb.from_connection(con)
    events = bh.with_reference(ib.table("events"), reference_times(ib, None))
    items = bh.user_item_weights(events, cfg.event_weights, cfg.half_life_days).execute()
    items = items.rename(columns={"item_id": "key"}).assign(key=lambda d: "item:" + d["key"])
    reviews = con.execute("SELECT user_id, 'review:' || review_id AS key, ? AS w FROM reviews WHERE user_id IS NOT NULL",
                          [float(cfg.event_weights.get("review", 1.0))]).df()
    item_keys, item_vecs = _vectors(con, "item", model)
    review_keys, review_vecs = _vectors(con, "review", model)
    keys = ["item:" + k for k in item_keys] + ["review:" + k for k in review_keys]
    parts = [v for v in (item_vecs, review_vecs) if v.size]
    if not parts:
        return 0
    users, vecs = user_vectors(pd.concat([items, reviews], ignore_index=True), keys, np.vstack(parts))
    with transaction(con):
        con.execute("DELETE FROM user_embeddings WHERE model = ?", [model])
        if users:
            con.register("_users", pd.DataFrame({"user_id": users, "vector": list(vecs)}))
            con.execute("INSERT INTO user_embeddings SELECT user_id, ?, vector::FLOAT[] FROM _users", [model])
            con.unregister("_users")
    return len(users)


def embed_all(con, cfg: Config, encoder, progress: Callable[[str, int, int], None] | None = None) -> EmbedReport:
    ensure_tables(con)
    report = EmbedReport()
    for kind in SOURCES:
        done, cached = embed_kind(con, encoder, kind, (lambda d, t, k=kind: progress(k, d, t)) if progress else None)
        report.computed[kind], report.cached[kind] = done, cached
    report.users = embed_users(con, cfg, encoder.name)
    write_user_interests(con, encoder, cfg.interests)
    return report
