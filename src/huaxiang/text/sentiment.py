"""Review sentiment for every review in the store, kept in `review_sentiment(review_id, positive,
method)` (`positive` = probability that the review is positive).

Two routes: a classifier folder from `huaxiang train classifier` (fine-tuned, full or LoRA), or,
by default, the frozen route — logistic regression on the cached review embeddings, trained on the
store's own reviews whose sentiment is known (a `label`, else a rating: ≥ 4 positive, ≤ 2 negative).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import HuaxiangError
from ..store import transaction

POSITIVE_LABELS = {"1", "pos", "positive", "true"}


def known_polarity(reviews):
    """(review_id, y) for the reviews whose polarity is known: a `label` (> 0 positive), else a rating (≥ 4
    positive, ≤ 2 negative). An Ibis expression."""
    import ibis
    r = reviews.filter(reviews.label.notnull() | (reviews.rating >= 4) | (reviews.rating <= 2))
    return r.select("review_id", y=ibis.ifelse(r.label.notnull(), (r.label > 0).cast("int64"),
                                               ibis.ifelse(r.rating >= 4, 1, 0).cast("int64")))


def fit_frozen(train: pd.DataFrame, seed: int = 0):
    """Logistic regression on review embeddings; train: (review_id, vector, y), in any order."""
    from sklearn.linear_model import LogisticRegression
    if train.empty or train["y"].nunique() < 2:
        raise HuaxiangError("no reviews with a known polarity (label or rating) and an embedding: "
                            "run `huaxiang embed` first, or pass --model from `huaxiang train classifier`")
    train = train.sort_values("review_id", ignore_index=True)
    return LogisticRegression(max_iter=2000, C=4.0, random_state=seed).fit(np.stack(train["vector"].to_numpy()),
                                                                            train["y"])


def frozen_scores(con, model: str, seed: int = 0) -> pd.DataFrame:
    import ibis
    ib = ibis.duckdb.from_connection(con)
    emb = ib.table("embeddings")
    emb = emb.filter((emb.kind == "review") & (emb.model == model)).select(review_id=emb.key, vector=emb.vector)
    clf = fit_frozen(known_polarity(ib.table("reviews")).join(emb, "review_id").to_pandas(), seed)
    every = emb.to_pandas()
    return pd.DataFrame({"review_id": every["review_id"],
                         "positive": clf.predict_proba(np.stack(every["vector"].to_numpy()))[:, 1]})


def sentiment_model(model_dir: str):
    """(model, tokenizer, max_len, column of the positive label, variant) of a fine-tuned two-label classifier, in
    its fastest variant (int8 when `huaxiang compress` made one)."""
    from .classifier import load_classifier
    model, tok, meta = load_classifier(model_dir)
    positive = [i for i, l in enumerate(meta["labels"]) if str(l).lower() in POSITIVE_LABELS]
    if len(meta["labels"]) != 2 or len(positive) != 1:
        raise HuaxiangError(f"{model_dir}: a sentiment model needs two labels, one of them positive "
                            f"({'/'.join(sorted(POSITIVE_LABELS))}); it has {meta['labels']}")
    return model, tok, meta["max_len"], positive[0], meta["variant"]


def positive_proba(loaded, texts: list[str]) -> np.ndarray:
    from .classifier import predict_proba
    model, tok, max_len, positive, _ = loaded
    return predict_proba(model, tok, texts, max_len)[:, positive]


def classifier_scores(con, loaded) -> pd.DataFrame:
    reviews = con.execute("SELECT review_id, text FROM reviews").df()
    return pd.DataFrame({"review_id": reviews["review_id"], "positive": positive_proba(loaded, reviews["text"].tolist())})


def score_reviews(con, encoder_name: str, model_dir: str | None = None) -> int:
    """Replaces `review_sentiment`; returns the number of reviews scored."""
    if model_dir:
        loaded = sentiment_model(model_dir)
        scores, method = classifier_scores(con, loaded), f"classifier:{model_dir}" + (
            " (int8)" if loaded[4] == "int8" else "")
    else:
        scores, method = frozen_scores(con, encoder_name), f"frozen:{encoder_name}"
    con.register("_sent", scores)
    with transaction(con):
        con.execute("CREATE OR REPLACE TABLE review_sentiment AS SELECT review_id, positive::DOUBLE AS positive, "
                    "? AS method FROM _sent", [method])
    con.unregister("_sent")
    return len(scores)
