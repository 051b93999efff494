"""`huaxiang recommend`: a user's top-k items from the store's recommender, with reasons a person
can read, and a cold start for users with no history.

Filtering: items the user already bought (or reviewed) are never recommended, viewed ones may be.
Tenants: only items of the user's own tenant (`schema.tenant_of`: the text before the first ':' of the
id, '' for an id without a namespace) are ever offered, on every path below — an un-namespaced user gets
only un-namespaced items, and a user of a tenant with no items gets none (source "no-tenant-items").
Reasons, the first that holds for an item:
  1. "similar to <item> you reviewed well" — the item's text vector is close (cosine ≥ 0.85) to an
     item the user rated ≥ 4 (or wrote a positive review of);
  2. "because you <viewed|bought|…> <item>" — the history item with the strongest item-KNN link;
  3. "popular in your favourite category <c>" — the item is in the user's top category;
  4. "picked from your recent activity" (the sequence model's own choice).
Cold start (no item history, or none the model knows): the best title matches (BM25) of the user's
latest searches ("matches your search …"), else the most popular items of the user's segment
("popular with shoppers like you"), else of everyone ("popular right now").
What is known of a user comes from the recommender's snapshot (no store query), or from the store
for a user who arrived after training; either way only their latest `rec.history_length` item events
(see store_model), so that a heavy user costs no more than another.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..models.seqrec.itemknn import row_entries
from ..schema import tenant_of
from .search import search_store
from .store_model import StoreRecommender
from .user_view import UserView, user_view

VERBS = {"view": "viewed", "click": "clicked", "fav": "saved", "cart": "added to your cart", "buy": "bought",
         "review": "reviewed"}
COLD_REASONS = {"segment": "popular with shoppers like you", "popularity": "popular right now"}


def top_indices(scores: np.ndarray, k: int, exclude: set[int]) -> list[int]:
    """Pure: the k best indices (best first), skipping index 0 and `exclude`."""
    s = scores.astype(np.float64, copy=True)
    s[0] = -np.inf
    if exclude:
        s[list(exclude)] = -np.inf
    k = min(k, int(np.isfinite(s).sum()))
    if k <= 0:
        return []
    part = np.argpartition(-s, k - 1)[:k]
    return [int(i) for i in part[np.lexsort((part, -s[part]))]]


def recommend(con, rec: StoreRecommender, user_id: str, k: int = 10, explain: bool = True) -> dict:
    """The user's top-k items of their own tenant: {"user_id", "source", "k", "items": [{"item_id", "score",
    "title", "reason"}]}; source is history, searches, segment, popularity or no-tenant-items."""
    return recommend_view(rec, user_view(con, rec, user_id), user_id, k, explain,
                          lambda q, tenant: search_store(con, q, None, k, tenant=tenant)["items"])


def recommend_view(rec: StoreRecommender, user: UserView, user_id: str, k: int, explain: bool,
                   search: Callable[[str, str], list[dict]]) -> dict:
    """`recommend` for a user known by their `UserView` (only items of their tenant); `search(query, tenant)` gives
    a query's best title matches in the tenant (the cold start from searches)."""
    tenant = tenant_of(user_id)
    mask = rec.tenant_mask(tenant)  # None: every item is the tenant's
    bought = {i for i, t in user.history if t in ("buy", "review")}  # a review means the user has it
    scores, source = None, "history"
    if user.history:
        scores = rec.model.score([[i for i, _ in user.history]])[0].astype(np.float64)
        if np.ptp(scores[1:] if mask is None else scores[mask]) == 0:  # the model knows nothing about these items
            scores = None
    if scores is None:
        found = _from_searches(search, user.queries, k, tenant, {rec.items[i - 1] for i in bought})
        if found:
            return {"user_id": user_id, "source": "searches", "k": k, "items": found}
        if not len(rec.tenant_items(tenant)):
            return {"user_id": user_id, "source": "no-tenant-items", "k": k, "items": []}
        scores, source = _cold_start(rec, user, tenant)
    # popularity breaks ties; only the tenant's items are candidates
    scores = scores + 1e-6 * rec.popularity / max(float(rec.popularity.max()), 1.0)
    chosen = top_indices(scores if mask is None else np.where(mask, scores, -np.inf), k, bought)
    titles = rec.snapshot["titles"]
    reasons = (_reasons(rec, user, chosen) if source == "history" else [COLD_REASONS[source]] * len(chosen)) \
        if explain else [""] * len(chosen)
    return {"user_id": user_id, "source": source, "k": k,
            "items": [{"item_id": rec.items[i - 1], "score": round(float(scores[i]), 6), "title": titles[i],
                       "reason": why} for i, why in zip(chosen, reasons)]}


def _from_searches(search, queries: list[str], k: int, tenant: str, exclude: set[str]) -> list[dict]:
    """Cold start from the user's latest searches: the best title matches (BM25) of each, in the tenant."""
    out = []
    for q in queries:
        for item in search(q, tenant):
            if item["item_id"] not in exclude and all(x["item_id"] != item["item_id"] for x in out):
                out.append({"item_id": item["item_id"], "score": item["score"], "title": item["title"],
                            "reason": f"matches your search “{q[:60]}”"})
    return out[:k]


def _cold_start(rec: StoreRecommender, user: UserView, tenant: str) -> tuple[np.ndarray, str]:
    """The most popular items of the tenant in the user's segment, else in the tenant (masked by the caller)."""
    top = rec.segment_top(user.segment or "", tenant)
    if top:
        scores = np.zeros(len(rec.items) + 1, dtype=np.float64)
        scores[top] = np.arange(len(top), 0, -1)
        return scores, "segment"
    return rec.popularity.astype(np.float64), "popularity"


def _label(rec: StoreRecommender, i: int) -> str:
    text = rec.snapshot["titles"][i] or rec.items[i - 1]
    return f"“{text[:60]}{'…' if len(text) > 60 else ''}”"


def _links(sim, rows: np.ndarray, cols: list[int]) -> np.ndarray:
    """Pure: the dense block sim[rows][:, cols] of a CSR matrix, read from the rows' entries (scipy's fancy
    indexing builds two matrices on the way, ~10× slower for a few dozen rows)."""
    out = np.zeros((len(rows), len(cols)), dtype=np.float64)
    if not len(rows) or not len(cols):
        return out
    which, entries = row_entries(sim, rows)
    hit = np.isin(sim.indices[entries], cols)
    position = {c: j for j, c in enumerate(cols)}  # (cols are distinct: the items chosen)
    for r, e in zip(which[hit], entries[hit]):
        out[r, position[int(sim.indices[e])]] = sim.data[e]
    return out


def _reasons(rec: StoreRecommender, user: UserView, chosen: list[int]) -> list[str]:
    hist_idx = np.array([i for i, _ in user.history])
    last_type = dict(user.history)
    sims = _links(rec.knn.sim_, hist_idx, chosen)
    categories = rec.snapshot["categories"]
    out = []
    for col, item in enumerate(chosen):
        reason = None
        if user.liked and rec.vectors is not None:
            cos = rec.vectors[user.liked] @ rec.vectors[item]
            best = int(np.argmax(cos))
            if cos[best] >= 0.85 and user.liked[best] != item:
                reason = f"similar to {_label(rec, user.liked[best])} you reviewed well"
        if reason is None and sims[:, col].max(initial=0) > 0:
            src = int(hist_idx[int(np.argmax(sims[:, col]))])
            reason = f"because you {VERBS.get(last_type[src], 'viewed')} {_label(rec, src)}"
        if reason is None and user.top_category and categories[item] == user.top_category:
            reason = f"popular in your favourite category {user.top_category}"
        out.append(reason or "picked from your recent activity")
    return out
