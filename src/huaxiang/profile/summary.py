"""A one-paragraph summary of a profile, written from its features by templates (no language
model needed; an LLM rewrite can be layered on later)."""
from __future__ import annotations

SEGMENT_WORDS = {
    "new": "a new customer", "dormant": "a dormant customer", "at-risk": "an at-risk customer",
    "high-value": "a high-value customer", "high-potential": "a high-potential shopper (engaged, not yet buying)",
    "high-frequency": "a frequent customer", "regular": "a regular customer",
}
WEEKDAYS = ["Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays", "Sundays"]


def _n(count, word: str) -> str:
    count = round(count)
    return f"{count:,} {word}" + ("" if count == 1 else "s")


def _names(items, n=2) -> str:
    names = [x["name"] for x in (items or [])[:n]]
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 2 else " and ".join(names)


def summarize(r: dict) -> str:
    """Plain sentences about who the user is, what they do, like and spend."""
    parts = [f"{SEGMENT_WORDS.get(r.get('segment'), 'A customer').capitalize()}"]
    if r.get("tenure_days") is not None:
        parts[0] += f", first seen {_n(r['tenure_days'], 'day')} before the data's end"
        if r.get("idle_days") is not None:
            parts[0] += f" and last active {_n(r['idle_days'], 'day')} before it" if r["idle_days"] >= 1 else \
                " and active until the end"
    sentences = [parts[0] + "."]
    if r.get("n_events"):
        s = f"{_n(r['n_events'], 'interaction')} on {_n(r['active_days'], 'day')}"
        if r.get("n_view"):
            rate = r.get("buy_rate")
            s += f"; buys {rate:.1%} of what they view" if rate is not None else ""
        if r.get("cart_to_buy") is not None and r.get("n_cart", 0) >= 3:
            s += f", and {min(r['cart_to_buy'], 1):.0%} of carted items end in a purchase"
        sentences.append(s[0].upper() + s[1:] + ".")
    if r.get("frequency"):
        s = _n(r["frequency"], "order")
        if r.get("monetary") is not None:
            s += f" worth {r['monetary']:,.2f} in all (about {r['avg_order_value']:,.2f} each)"
        if r.get("n_returns"):
            s += f", {r['n_returns']} returned"
        sentences.append(s + ".")
    likes = []
    if r.get("top_categories"):
        likes.append(f"categories {_names(r['top_categories'])}")
    if r.get("top_brands"):
        likes.append(f"brands {_names(r['top_brands'])}")
    if r.get("keywords"):
        likes.append("items about " + ", ".join(r["keywords"][:3]))
    if likes:
        sentences.append("Mostly interested in " + "; ".join(likes) + ".")
    if r.get("price_band"):
        sentences.append(f"Prefers {r['price_band']}-priced items.")
    if r.get("daypart") and r.get("n_events", 0) >= 5:
        s = f"Shops mostly in the {r['daypart']}"
        if r.get("peak_weekday") is not None and r.get("n_events", 0) >= 10:
            s += f", busiest on {WEEKDAYS[r['peak_weekday']]}"
        sentences.append(s + ".")
    if r.get("n_written_reviews"):
        s = f"Wrote {_n(r['n_written_reviews'], 'review')}"
        if r.get("avg_rating") is not None:
            s += f" (average rating {r['avg_rating']:.1f})"
        if r.get("mean_sentiment") is not None:
            s += f", {r['n_positive_reviews']} positive and {r['n_negative_reviews']} negative in tone"
        sentences.append(s + ".")
        said = [f"{verb} {_names(r.get(key), 3)}" for verb, key in
                (("praises", "aspects_praised"), ("complains about", "aspects_criticised")) if r.get(key)]
        if said:
            sentences.append("In reviews " + "; ".join(said) + ".")
    return " ".join(sentences)
