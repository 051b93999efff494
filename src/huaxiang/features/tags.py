"""Interest tags: TF-IDF keywords from the titles of items a user engaged with, and rule tags
read off the behaviour features."""
from __future__ import annotations

import ibis
import pandas as pd
from ibis import _

from ..schema import tenant_expr
from .behaviour import ranked, user_item_weights
from .text import tokens


def item_tokens(items: pd.DataFrame) -> pd.DataFrame:
    """(item_id, token) for every keyword of every item title."""
    rows = [(i, t) for i, title in zip(items["item_id"], items["title"]) for t in tokens(title)]
    return pd.DataFrame(rows, columns=["item_id", "token"]).astype("string")


def user_keywords(events, item_tok, weights: dict, half_life_days: float, k: int):
    """Top-k keywords per user by TF-IDF: tf = the user's time-decayed, event-weighted share of a
    keyword; idf = ln((1 + users) / (1 + users with the keyword)), counted among the users of the
    user's own tenant, + 1."""
    ui = user_item_weights(events, weights, half_life_days)
    ut = ui.join(item_tok, "item_id").group_by(["user_id", "token"]).aggregate(w=_.w.sum())
    ut = ut.mutate(_tenant=tenant_expr(ut.user_id))
    totals = ut.group_by(["user_id", "_tenant"]).aggregate(total=_.w.sum())
    n_users = totals.group_by("_tenant").aggregate(n_users=_.count())
    df = ut.group_by(["_tenant", "token"]).aggregate(df=_.count())  # ut has one row per (user, token)
    ut = ut.join(df, ["_tenant", "token"]).join(totals.drop("_tenant"), "user_id").join(n_users, "_tenant")
    ut = ut.mutate(score=ut.w / ut.total * (((ut.n_users + 1).cast("float64") / (ut.df + 1)).ln() + 1))
    ut = ut.mutate(rank=ibis.row_number().over(group_by=ut.user_id, order_by=[ibis.desc(ut.score), ut.token]))
    top = ut.filter(ut.rank < k)  # ibis row_number() counts from 0
    return top.group_by("user_id").aggregate(keywords=ranked(top.token, top.rank))


# Rule tags: (tag, condition on the features table). Thresholds are documented in the README.
def rule_tags(f):
    return [
        ("night owl", f.night_share >= 0.3),
        ("weekend shopper", f.weekend_share >= 0.5),
        ("window shopper", (f.n_view >= 20) & (f.n_buy == 0)),
        ("decisive buyer", f.buy_rate >= 0.1),
        ("cart abandoner", (f.n_cart >= 3) & (f.cart_to_buy < 0.2)),
        ("repeat buyer", f.repeat_purchase_rate >= 0.3),
        ("bargain hunter", f.price_band == "low"),
        ("premium taste", f.price_band == "high"),
        ("frequent returner", f.n_returns >= 2),
        ("reviewer", f.n_written_reviews >= 3),
    ]


def interest_tags(f):
    """One list per user: top categories and brands, keywords, then rule tags."""
    rules = ibis.array([ibis.ifelse(cond.fill_null(False), ibis.literal(tag), ibis.null("string"))
                        for tag, cond in rule_tags(f)])
    cats = f.top_categories.map(lambda s: "category:" + s["name"]).fill_null(ibis.literal([], type="array<string>"))
    brands = f.top_brands.map(lambda s: "brand:" + s["name"]).fill_null(ibis.literal([], type="array<string>"))
    words = f.keywords.fill_null(ibis.literal([], type="array<string>"))
    return cats[:3].concat(brands[:3], words[:5], rules.filter(lambda x: x.notnull()))
