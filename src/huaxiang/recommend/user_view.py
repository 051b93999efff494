"""What the recommender and search know of one user: item history, items reviewed well, latest searches, segment
and favourite category — from the recommender's snapshot (no store query), or from the store for a user who
arrived after training."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..store import has_table
from .store_model import ITEM_EVENTS, StoreRecommender


@dataclass
class UserView:
    history: list[tuple[int, str]] = field(default_factory=list)  # (item index, event type), oldest first
    liked: list[int] = field(default_factory=list)  # items reviewed well
    queries: list[str] = field(default_factory=list)  # latest searches first
    segment: str | None = None
    top_category: str | None = None


def user_view(con, rec: StoreRecommender, user_id: str) -> UserView:
    snap = rec.snapshot
    if user_id in snap["histories"] or user_id in snap["profiles"]:
        segment, category = snap["profiles"].get(user_id, (None, None))
        return UserView([tuple(h) for h in snap["histories"].get(user_id, [])], snap["liked"].get(user_id, []),
                        snap["queries"].get(user_id, []), segment, category)
    rows = con.execute(f"""SELECT item_id, type FROM events WHERE user_id = ? AND item_id IS NOT NULL
        AND type IN ({', '.join(repr(t) for t in ITEM_EVENTS)}) ORDER BY ts, event_id""", [user_id]).fetchall()
    history = [(rec.index[i], t) for k, (i, t) in enumerate(rows) if (k == 0 or rows[k - 1][0] != i) and i in rec.index]
    liked = [rec.index[i] for (i,) in con.execute("""SELECT item_id FROM reviews WHERE user_id = ?
        AND (rating >= 4 OR label = 1)""", [user_id]).fetchall() if i in rec.index]
    queries = [q for (q,) in con.execute("""SELECT query FROM events WHERE user_id = ? AND type = 'search'
        AND query IS NOT NULL ORDER BY ts DESC LIMIT 3""", [user_id]).fetchall()]
    profile = con.execute("SELECT segment, top_category FROM profiles WHERE user_id = ?", [user_id]).fetchone() \
        if has_table(con, "profiles") else None
    return UserView(history, liked, queries, *(profile or (None, None)))
