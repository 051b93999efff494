"""The template summary reads a profile record as plain sentences."""
from huaxiang.profile.summary import summarize


def test_summary_of_a_buyer():
    r = {"segment": "high-value", "tenure_days": 9.2, "idle_days": 0.1, "n_events": 456, "active_days": 10,
         "n_view": 396, "n_cart": 46, "buy_rate": 0.0278, "cart_to_buy": 0.239, "frequency": 11,
         "monetary": 120.5, "avg_order_value": 10.955, "n_returns": 1,
         "top_categories": [{"name": "shoes", "share": 0.3}, {"name": "bags", "share": 0.2}, {"name": "x", "share": 0.1}],
         "keywords": ["leather", "boot", "black", "zip"], "price_band": "high", "daypart": "evening",
         "peak_weekday": 2, "n_written_reviews": 1, "avg_rating": 4.0}
    assert summarize(r) == (
        "A high-value customer, first seen 9 days before the data's end and active until the end. "
        "456 interactions on 10 days; buys 2.8% of what they view, and 24% of carted items end in a purchase. "
        "11 orders worth 120.50 in all (about 10.96 each), 1 returned. "
        "Mostly interested in categories shoes and bags; items about leather, boot, black. "
        "Prefers high-priced items. Shops mostly in the evening, busiest on Wednesdays. "
        "Wrote 1 review (average rating 4.0).")


def test_summary_of_an_orders_only_customer():
    r = {"segment": "dormant", "tenure_days": 400, "idle_days": 380, "n_events": 0, "frequency": 1,
         "monetary": 12.0, "avg_order_value": 12.0, "n_returns": 0}
    assert summarize(r) == ("A dormant customer, first seen 400 days before the data's end and last active "
                            "380 days before it. 1 order worth 12.00 in all (about 12.00 each).")
