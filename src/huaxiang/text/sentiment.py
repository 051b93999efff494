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

POSITIVE_LABELS = {"1", "pos", "positive", "true"}


def known_sentiment(con, model: str) -> pd.DataFrame:
    """(review_id, vector, y) for embedded reviews with a known polarity."""
    return con.execute("""SELECT r.review_id, e.vector,
            CASE WHEN r.label IS NOT NULL THEN (r.label > 0)::INT WHEN r.rating >= 4 THEN 1 ELSE 0 END AS y
        FROM reviews r JOIN embeddings e ON e.kind = 'review' AND e.key = r.review_id AND e.model = ?
        WHERE r.label IS NOT NULL OR r.rating >= 4 OR r.rating <= 2""", [model]).df()


def frozen_scores(con, model: str, seed: int = 0) -> pd.DataFrame:
    from sklearn.linear_model import LogisticRegression
    train = known_sentiment(con, model)
    if train.empty or train["y"].nunique() < 2:
        raise HuaxiangError("no reviews with a known polarity (label or rating) and an embedding: "
                            "run `huaxiang embed` first, or pass --model from `huaxiang train classifier`")
    clf = LogisticRegression(max_iter=2000, C=4.0, random_state=seed)
    clf.fit(np.stack(train["vector"].to_numpy()), train["y"])
    every = con.execute("SELECT key AS review_id, vector FROM embeddings WHERE kind = 'review' AND model = ?",
                        [model]).df()
    return pd.DataFrame({"review_id": every["review_id"],
                         "positive": clf.predict_proba(np.stack(every["vector"].to_numpy()))[:, 1]})


def classifier_scores(con, model_dir: str) -> pd.DataFrame:
    from .classifier import load_classifier, predict_proba
    model, tok, meta = load_classifier(model_dir)
    positive = [i for i, l in enumerate(meta["labels"]) if str(l).lower() in POSITIVE_LABELS]
    if len(meta["labels"]) != 2 or len(positive) != 1:
        raise HuaxiangError(f"{model_dir}: a sentiment model needs two labels, one of them positive "
                            f"({'/'.join(sorted(POSITIVE_LABELS))}); it has {meta['labels']}")
    reviews = con.execute("SELECT review_id, text FROM reviews").df()
    proba = predict_proba(model, tok, reviews["text"].tolist(), meta["max_len"])
    return pd.DataFrame({"review_id": reviews["review_id"], "positive": proba[:, positive[0]]})


def score_reviews(con, encoder_name: str, model_dir: str | None = None) -> int:
    """Replaces `review_sentiment`; returns the number of reviews scored."""
    scores = classifier_scores(con, model_dir) if model_dir else frozen_scores(con, encoder_name)
    method = f"classifier:{model_dir}" if model_dir else f"frozen:{encoder_name}"
    con.register("_sent", scores)
    con.execute("BEGIN TRANSACTION")
    con.execute("CREATE OR REPLACE TABLE review_sentiment AS SELECT review_id, positive::DOUBLE AS positive, "
                "? AS method FROM _sent", [method])
    con.execute("COMMIT")
    con.unregister("_sent")
    return len(scores)
