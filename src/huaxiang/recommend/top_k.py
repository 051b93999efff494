"""`huaxiang recommend`: a user's top-k items from the store's recommender, with reasons a person
can read, and a cold start for users with no history.

Filtering: items the user already bought (or reviewed) are never recommended, viewed ones may be;
in a store shared by tenants (namespaced ids `ns:…`) only the user's own tenant's items are offered. Reasons, the
first that holds for an item:
  1. "similar to <item> you reviewed well" — the item's text vector is close (cosine ≥ 0.85) to an
     item the user rated ≥ 4 (or wrote a positive review of);
  2. "because you <viewed|bought|…> <item>" — the history item with the strongest item-KNN link;
  3. "popular in your favourite category <c>" — the item is in the user's top category;
  4. "popular with shoppers like you" / "popular right now" (cold start), or "picked from your
     recent activity" (the sequence model's own choice).
Cold start (no item history, or none the model knows): the best title matches (BM25) of the user's
latest searches, else the most popular items of the user's segment, else of everyone.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..store import has_table
from .store_model import ITEM_EVENTS, StoreRecommender

VERBS = {"view": "viewed", "fav": "saved", "cart": "added to your cart", "buy": "bought", "review": "reviewed"}


@dataclass
class Recommendation:
    item_id: str
    score: float
    title: str | None
    reason: str

    def as_dict(self) -> dict:
        return {"item_id": self.item_id, "score": round(float(self.score), 6), "title": self.title,
                "reason": self.reason}


def user_history(con, user_id: str) -> list[tuple[str, str]]:
    """(item_id, type) of the user's item events, oldest first, immediate repeats dropped."""
    rows = con.execute(f"""SELECT item_id, type FROM events WHERE user_id = ? AND item_id IS NOT NULL
        AND type IN ({', '.join(repr(t) for t in ITEM_EVENTS)}) ORDER BY ts, event_id""", [user_id]).fetchall()
    return [r for k, r in enumerate(rows) if k == 0 or rows[k - 1][0] != r[0]]


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
    history = [(rec.index[i], t) for i, t in user_history(con, user_id) if i in rec.index]
    bought = {i for i, t in history if t in ("buy", "review")}  # a review means the user has it
    scores, source = None, "history"
    if history:
        scores = rec.model.score([[i for i, _ in history]])[0].astype(np.float64)
        if np.ptp(scores[1:]) == 0:  # the model knows nothing about these items
            scores = None
    if scores is None:
        found = _from_searches(con, user_id, k, {rec.items[i - 1] for i in bought})
        if found:
            return {"user_id": user_id, "source": "searches", "k": k, "items": found}
        scores, source = _cold_start(con, rec, user_id)
    # popularity breaks ties; items of another tenant (namespace) are never offered
    scores = scores + 1e-6 * rec.popularity / max(float(rec.popularity.max()), 1.0)
    chosen = top_indices(scores, k, bought | _other_tenants(rec, user_id)) or top_indices(scores, k, bought)
    titles = _titles(con, [rec.items[i - 1] for i in chosen])
    reasons = _reasons(con, rec, user_id, history, chosen, source) if explain else [""] * len(chosen)
    return {"user_id": user_id, "source": source, "k": k,
            "items": [Recommendation(rec.items[i - 1], scores[i], titles.get(rec.items[i - 1]), why).as_dict()
                      for i, why in zip(chosen, reasons)]}


def _from_searches(con, user_id: str, k: int, exclude: set[str]) -> list[dict]:
    """Cold start from the user's latest searches: the best title matches (BM25) of each."""
    from .search import search_store
    queries = [q for (q,) in con.execute("""SELECT query FROM events WHERE user_id = ? AND type = 'search'
        AND query IS NOT NULL ORDER BY ts DESC LIMIT 3""", [user_id]).fetchall()]
    out = []
    for q in queries:
        for item in search_store(con, q, None, k)["items"]:
            if item["item_id"] not in exclude and all(x["item_id"] != item["item_id"] for x in out):
                out.append({"item_id": item["item_id"], "score": item["score"], "title": item["title"],
                            "reason": f"matches your search “{q[:60]}”"})
    return out[:k]


def _other_tenants(rec: StoreRecommender, user_id: str) -> set[int]:
    if ":" not in user_id:
        return set()
    prefix = user_id.split(":", 1)[0] + ":"
    return {i for i, item in enumerate(rec.items, 1) if not item.startswith(prefix)}


def _cold_start(con, rec: StoreRecommender, user_id: str) -> tuple[np.ndarray, str]:
    """The most popular items of the user's segment, else of everyone."""
    segment = _profile_value(con, user_id, "segment")
    if segment:
        rows = con.execute("""SELECT e.item_id, count(*) FROM events e JOIN profiles p USING (user_id)
            WHERE p.segment = ? AND e.item_id IS NOT NULL GROUP BY 1""", [segment]).fetchall()
        scores = np.zeros(len(rec.items) + 1, dtype=np.float64)
        for item, n in rows:
            if item in rec.index:
                scores[rec.index[item]] = n
        if scores.any():
            return scores, "segment"
    return rec.popularity.astype(np.float64), "popularity"


def _profile_value(con, user_id: str, column: str):
    """One value of the user's profile, or None (no profile, or no profiles built yet)."""
    if not has_table(con, "profiles"):
        return None
    row = con.execute(f"SELECT {column} FROM profiles WHERE user_id = ?", [user_id]).fetchone()
    return row[0] if row else None


def _titles(con, items: list[str]) -> dict[str, str]:
    if not items:
        return {}
    return dict(con.execute("SELECT item_id, title FROM items WHERE item_id IN (SELECT unnest(?)) AND title IS NOT NULL",
                            [items]).fetchall())


def _label(title: str | None, item: str) -> str:
    text = title or item
    return f"“{text[:60]}{'…' if len(text) > 60 else ''}”"


def _reasons(con, rec: StoreRecommender, user_id: str, history: list[tuple[int, str]], chosen: list[int],
             source: str) -> list[str]:
    if source != "history":
        return [{"segment": "popular with shoppers like you"}.get(source, "popular right now")] * len(chosen)
    liked = _liked(con, rec, user_id)
    top_category = _profile_value(con, user_id, "top_category")
    categories = _categories(con, [rec.items[i - 1] for i in chosen]) if top_category else {}
    names = _titles(con, [rec.items[i - 1] for i, _ in history] + [rec.items[i - 1] for i in liked])
    hist_idx = np.array([i for i, _ in history])
    last_type = {i: t for i, t in history}
    sims = rec.knn.sim_[hist_idx][:, chosen].toarray() if len(chosen) else np.zeros((len(hist_idx), 0))
    out = []
    for col, item in enumerate(chosen):
        reason = None
        if liked and rec.vectors is not None:
            cos = rec.vectors[liked] @ rec.vectors[item]
            best = int(np.argmax(cos))
            if cos[best] >= 0.85 and liked[best] != item:
                reason = f"similar to {_label(names.get(rec.items[liked[best] - 1]), rec.items[liked[best] - 1])} you reviewed well"
        if reason is None and sims[:, col].max(initial=0) > 0:
            row = int(np.argmax(sims[:, col]))
            src = int(hist_idx[row])
            reason = f"because you {VERBS.get(last_type[src], 'viewed')} {_label(names.get(rec.items[src - 1]), rec.items[src - 1])}"
        if reason is None and top_category and categories.get(rec.items[item - 1]) == top_category:
            reason = f"popular in your favourite category {top_category}"
        out.append(reason or "picked from your recent activity")
    return out


def _liked(con, rec: StoreRecommender, user_id: str) -> list[int]:
    rows = con.execute("""SELECT r.item_id FROM reviews r WHERE r.user_id = ? AND r.item_id IS NOT NULL
        AND (r.rating >= 4 OR r.label = 1)""", [user_id]).fetchall()
    return [rec.index[i] for (i,) in rows if i in rec.index]


def _categories(con, items: list[str]) -> dict[str, str]:
    return dict(con.execute("""SELECT x.item_id, coalesce(i.category, (SELECT any_value(e.category_id)
        FROM events e WHERE e.item_id = x.item_id)) FROM (SELECT unnest(?) AS item_id) x LEFT JOIN items i
        USING (item_id)""", [items]).fetchall())
