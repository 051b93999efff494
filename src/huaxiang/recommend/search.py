"""Item search over titles — BM25 plus pretrained-LM embeddings (faiss) — re-ranked by the user.

Text relevance of an item to a query = BM25 / (the best BM25 of the query) + `embedding_weight` ×
cosine(query, item) (E5 query vs passage vectors), over the union of the top candidates of each.
Personalisation adds `user_weight` × the user's own preference for the candidate — the store
recommender's score for the user's history, min-max scaled over the candidates to [0, 1] (bounded:
a z-score let one sparse item-KNN score swamp the text match; on Beauty min-max at 0.2 beat the
best z-score weight, see benchmarks/search_personalisation.py).
BM25: k1 = 1.2, b = 0.75, idf = ln(1 + (N − df + 0.5) / (df + 0.5)); titles are tokenised like the
profile keywords (jieba for Chinese, a word tokenizer for English).
Tenants: a search runs over one tenant's titles only (`schema.tenant_of`; '' for ids without a
namespace), with a BM25 index of that tenant's own (its idf and lengths know nothing of the others):
the tenant of `user_id` when one is given, else `tenant`, else the one tenant of a single-tenant
store; in a store of several tenants a search for nobody in particular must name one.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import sparse

from ..errors import HuaxiangError
from ..features.text import tokens
from ..schema import TENANT_SEPARATOR, is_tenant_name, tenant_is_sql, tenant_of, tenant_sql
from ..store import has_table


class TitleIndex:
    """BM25 over item titles (row i = item i, row 0 unused)."""

    def __init__(self, k1: float = 1.2, b: float = 0.75):
        self.k1 = k1
        self.b = b

    def fit(self, titles: list[str]):
        rows, cols, vocab = [], [], {}
        lengths = np.zeros(len(titles), dtype=np.float64)
        for i, title in enumerate(titles):
            toks = tokens(title) if title else []
            lengths[i] = len(toks)
            for t in toks:
                rows.append(i)
                cols.append(vocab.setdefault(t, len(vocab)))
        tf = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(titles), max(len(vocab), 1)))
        df = np.bincount(cols, minlength=tf.shape[1]).astype(np.float64)
        n = max(int((lengths > 0).sum()), 1)
        idf = np.log(1 + (n - df + 0.5) / (df + 0.5))
        mean = lengths[lengths > 0].mean() if (lengths > 0).any() else 1.0
        norm = self.k1 * (1 - self.b + self.b * lengths / max(mean, 1e-9))
        tf = tf.tocoo()
        weights = idf[tf.col] * (self.k1 + 1) / (1 + norm[tf.row])
        self.matrix_ = sparse.csr_matrix((weights, (tf.row, tf.col)), shape=tf.shape).tocsc()
        self.vocab_ = vocab
        return self

    def scores(self, query: str) -> np.ndarray:
        cols = [self.vocab_[t] for t in tokens(query) if t in self.vocab_]
        if not cols:
            return np.zeros(self.matrix_.shape[0])
        return np.asarray(self.matrix_[:, cols].sum(axis=1)).ravel()


@dataclass
class SearchSettings:
    candidates: int = 200
    embedding_weight: float = 0.5
    user_weight: float = 0.2


def text_relevance(index: TitleIndex, query: str, query_vector: np.ndarray | None, item_vectors, faiss_index,
                   settings: SearchSettings) -> tuple[np.ndarray, np.ndarray]:
    """(candidate item indices, text relevance) for `query`."""
    bm = index.scores(query)
    top = np.argsort(-bm)[:settings.candidates]
    cand = set(top[bm[top] > 0].tolist())
    cos = {}
    if query_vector is not None and faiss_index is not None:
        sims, ids = faiss_index.search(np.asarray(query_vector, dtype=np.float32).reshape(1, -1), settings.candidates)
        cos = {int(i): float(s) for i, s in zip(ids[0], sims[0]) if i > 0}
        cand |= set(cos)
    cand.discard(0)
    items = np.array(sorted(cand), dtype=np.int64)
    if not len(items):
        return items, np.zeros(0)
    rel = bm[items] / max(float(bm.max()), 1e-9)
    if query_vector is not None and item_vectors is not None:
        rel = rel + settings.embedding_weight * (item_vectors[items] @ np.asarray(query_vector, dtype=np.float32))
    return items, rel


def personalise(relevance: np.ndarray, user_scores: np.ndarray | None, weight: float) -> np.ndarray:
    """Pure: relevance + weight × the user's scores min-max scaled over the candidates."""
    if user_scores is None or len(user_scores) < 2 or np.ptp(user_scores) == 0:
        return relevance
    return relevance + weight * (user_scores - user_scores.min()) / np.ptp(user_scores)


def build_faiss(item_vectors: np.ndarray | None):
    """An exact inner-product index over normalised item vectors (row i = item i)."""
    if item_vectors is None:
        return None
    import faiss
    index = faiss.IndexFlatIP(item_vectors.shape[1])
    index.add(np.ascontiguousarray(item_vectors, dtype=np.float32))
    return index


CATALOGUES_KEPT = 16  # title indexes kept in memory (one per tenant and version of its titles), least recent out
_CATALOGUES: OrderedDict[tuple, tuple] = OrderedDict()  # (tenant, fingerprint of its titles) -> (ids, titles, index)
_TENANT_LISTS: dict[tuple, list[str]] = {}  # fingerprint of every title -> the tenants that have titled items
_LOCK = threading.Lock()


def title_catalogue(con, tenant: str) -> tuple[list, dict[str, str], TitleIndex]:
    """The tenant's titled items' ids (position 0 empty), their titles and a BM25 index over them. Building the
    index costs ~0.3 s per 10k titles, so it is kept and rebuilt only when the tenant's titles change: the key is
    a fingerprint (count and summed hash of every (id, title) of the tenant) that one aggregate query reads."""
    where = f"title IS NOT NULL AND {tenant_is_sql('item_id', tenant)}"
    key = (tenant, *con.execute(f"SELECT count(*), sum(hash(item_id, title)) FROM items WHERE {where}").fetchone())
    with _LOCK:
        found = _CATALOGUES.get(key)
        if found is not None:
            _CATALOGUES.move_to_end(key)
            return found
    rows = con.execute(f"SELECT item_id, title FROM items WHERE {where} ORDER BY item_id").fetchall()
    built = ([None] + [r[0] for r in rows], dict(rows), TitleIndex().fit([""] + [r[1] for r in rows]))
    with _LOCK:
        _CATALOGUES[key] = built
        while len(_CATALOGUES) > CATALOGUES_KEPT:
            _CATALOGUES.popitem(last=False)
    return built


def pack_catalogue(catalogue: tuple) -> dict[str, bytes]:
    """A title catalogue (`title_catalogue`) as named byte strings — JSON and NumPy arrays, nothing that executes
    when read back (the online store keeps it for the API workers)."""
    import io
    import json
    ids, titles, index = catalogue
    m, buf = index.matrix_, io.BytesIO()
    np.savez(buf, data=m.data, indices=m.indices, indptr=m.indptr, shape=np.array(m.shape))
    return {"ids.json": json.dumps(ids, ensure_ascii=False).encode(),
            "titles.json": json.dumps(titles, ensure_ascii=False).encode(),
            "vocab.json": json.dumps(index.vocab_, ensure_ascii=False).encode(),
            "bm25.json": json.dumps({"k1": index.k1, "b": index.b}).encode(), "index.npz": buf.getvalue()}


def unpack_catalogue(files: dict[str, bytes]) -> tuple:
    """The catalogue `pack_catalogue` packed."""
    import io
    import json
    arrays = np.load(io.BytesIO(files["index.npz"]), allow_pickle=False)
    index = TitleIndex(**json.loads(files["bm25.json"]))
    index.matrix_ = sparse.csc_matrix((arrays["data"], arrays["indices"], arrays["indptr"]),
                                      shape=tuple(int(x) for x in arrays["shape"]))
    index.vocab_ = json.loads(files["vocab.json"])
    return json.loads(files["ids.json"]), json.loads(files["titles.json"]), index


def catalogue_tenants(con) -> list[str]:
    """The tenants that have titled items, sorted ('' first when un-namespaced items have titles)."""
    key = con.execute("SELECT count(*), sum(hash(item_id, title)) FROM items WHERE title IS NOT NULL").fetchone()
    found = _TENANT_LISTS.get(key)
    if found is None:
        found = sorted(t for (t,) in con.execute(f"""SELECT DISTINCT {tenant_sql('item_id')} FROM items
            WHERE title IS NOT NULL""").fetchall())
        with _LOCK:
            _TENANT_LISTS.clear()  # (one store's list at a time is enough)
            _TENANT_LISTS[key] = found
    return found


def search_tenant(user_id: str | None, tenant: str | None, known: Callable[[], list[str]]) -> str:
    """The one tenant a search runs in: the user's (`tenant`, when also given, must be the same), else `tenant`,
    else the only tenant with titled items (`known()`, sorted); HuaxiangError when that leaves a choice."""
    if tenant is not None and not is_tenant_name(tenant):
        raise HuaxiangError(f"a tenant name holds no {TENANT_SEPARATOR!r} nor NUL and has at most 100 characters: "
                            f"{tenant[:100]!r}")
    if user_id:
        own = tenant_of(user_id)
        if tenant is not None and tenant != own:
            raise HuaxiangError(f"user {user_id!r} is not of tenant {tenant!r} (their tenant: {own!r})")
        return own
    if tenant is not None:
        return tenant
    found = known()
    if len(found) <= 1:
        return found[0] if found else ""
    names = ", ".join(repr(t) for t in found[:6]) + (f" and {len(found) - 6} more" if len(found) > 6 else "")
    raise HuaxiangError(f"this store holds several tenants ({names}): name one (--tenant NAME, or tenant=NAME in "
                        "the API; '' for ids without a namespace) or a user")


def search_store(con, query: str, user_id: str | None, k: int, encoder=None, rec=None,
                 settings: SearchSettings | None = None, tenant: str | None = None) -> dict:
    """Search the titled items of one tenant (see `search_tenant`); with `user_id` (and a trained recommender
    `rec`) re-ranked by the user's preferences. `encoder` adds embedding retrieval over `huaxiang embed`'s item
    vectors."""
    from .user_view import user_view
    settings = settings or SearchSettings()
    tenant = search_tenant(user_id, tenant, lambda: catalogue_tenants(con))
    ids = title_catalogue(con, tenant)[0]
    vectors = qv = None
    if encoder is not None and len(ids) > 1:
        found = dict(con.execute(f"""SELECT key, vector FROM embeddings WHERE kind = 'item' AND model = ?
            AND {tenant_is_sql('key', tenant)}""", [encoder.name]).fetchall()) if has_table(con, "embeddings") else {}
        if found:
            vectors = np.zeros((len(ids), encoder.dim), dtype=np.float32)
            for i, item in enumerate(ids[1:], 1):
                if item in found:
                    vectors[i] = found[item]
            qv = encoder.encode([query], "query")[0]
    history = [i for i, _ in user_view(con, rec, user_id).history] if user_id and rec is not None else []
    return search_in(title_catalogue(con, tenant), tenant, query, user_id, k, rec, history, settings, qv, vectors)


def search_in(catalogue: tuple, tenant: str, query: str, user_id: str | None, k: int, rec=None,
              history: list[int] = (), settings: SearchSettings | None = None, query_vector=None,
              item_vectors=None) -> dict:
    """Search one tenant's title catalogue (`title_catalogue`), re-ranked by the recommender's scores for
    `history` (the user's latest item indices) when there is one — what `search_store` and the online API workers
    share."""
    settings = settings or SearchSettings()
    ids, titles, index = catalogue
    items, rel = text_relevance(index, query, query_vector, item_vectors, build_faiss(item_vectors), settings)
    personal = None
    if history and rec is not None and len(items):
        scores = rec.model.score([list(history)])[0]
        cand = np.array([scores[rec.index[ids[i]]] if ids[i] in rec.index else np.nan for i in items])
        personal = np.where(np.isnan(cand), np.nanmean(cand) if np.isfinite(cand).any() else 0.0, cand)
    final = personalise(rel, personal, settings.user_weight)
    order = np.argsort(-final, kind="stable")[:k]
    return {"query": query, "user_id": user_id, "tenant": tenant, "personalised": personal is not None,
            "items": [{"item_id": ids[items[j]], "title": titles[ids[items[j]]], "score": round(float(final[j]), 6),
                       "relevance": round(float(rel[j]), 6)} for j in order]}
