"""What the recommender and search know of one user: item history, items reviewed well, latest searches, segment
and favourite category — from the recommender's snapshot (no store query), or from the store for a user who
arrived after training.

Bounded: the history is the user's latest `rec.history_length` item events (a repeat of the item just seen
dropped), the items reviewed well the latest as many, whatever the user's whole history holds; and only items of
the user's own tenant (`schema.tenant_of`) are kept, so that no reason names another tenant's item."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..schema import tenant_of
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
    snap, n, tenant = rec.snapshot, rec.history_length, tenant_of(user_id)
    own = lambda i: rec.item_tenant(i) == tenant  # noqa: E731
    if user_id in snap["histories"] or user_id in snap["profiles"]:
        segment, category = snap["profiles"].get(user_id, (None, None))
        return UserView([(i, t) for i, t in snap["histories"].get(user_id, [])[-n:] if own(i)],
                        [i for i in snap["liked"].get(user_id, [])[-n:] if own(i)],
                        snap["queries"].get(user_id, []), segment, category)
    view, epoch = rec.cached_view(user_id)
    if view is None:
        view = _from_store(con, rec, user_id, n, own)
        if view.history or view.liked or view.queries or view.segment:  # (not made-up ids: they would fill it)
            rec.keep_view(user_id, view, epoch)
    return view


def _from_store(con, rec: StoreRecommender, user_id: str, n: int, own) -> UserView:
    # the latest n item events, a repeat of the item just before dropped (in SQL: a heavy user's whole history
    # is never read into Python)
    rows = con.execute(f"""SELECT item_id, type FROM (
            SELECT item_id, type, ts, event_id, lag(item_id) OVER (ORDER BY ts, event_id) AS before FROM events
            WHERE user_id = ? AND item_id IS NOT NULL AND type IN ({', '.join(repr(t) for t in ITEM_EVENTS)}))
        WHERE before IS DISTINCT FROM item_id ORDER BY ts DESC, event_id DESC LIMIT ?""", [user_id, n]).fetchall()
    history = [(rec.index[i], t) for i, t in reversed(rows) if i in rec.index and own(rec.index[i])]
    liked = [rec.index[i] for (i,) in reversed(con.execute("""SELECT item_id FROM reviews WHERE user_id = ?
        AND (rating >= 4 OR label = 1) ORDER BY ts DESC LIMIT ?""", [user_id, n]).fetchall())
        if i in rec.index and own(rec.index[i])]
    queries = [q for (q,) in con.execute("""SELECT query FROM events WHERE user_id = ? AND type = 'search'
        AND query IS NOT NULL ORDER BY ts DESC LIMIT 3""", [user_id]).fetchall()]
    profile = con.execute("SELECT segment, top_category FROM profiles WHERE user_id = ?", [user_id]).fetchone() \
        if has_table(con, "profiles") else None
    return UserView(history, liked, queries, *(profile or (None, None)))
