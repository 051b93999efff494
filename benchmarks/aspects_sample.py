"""Draws the reviews of the aspect evaluation set (benchmarks/data/aspects_eval.jsonl), seeded.

    .venv/bin/python benchmarks/aspects_sample.py > /tmp/aspects_unlabelled.jsonl

zh: online_shopping_10_cats, 16 reviews per category (8 positive, 8 negative) of 8–200 characters.
en: Amazon 2018 All_Beauty 5-core, 160 distinct reviews (summary + text, 8–400 characters):
    60 with ≤ 2 stars, 20 with 3, 80 with ≥ 4 (negatives are rare, so they are over-drawn).
Each row keeps where it came from (file and 1-based data row) so that it can be checked.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def zh() -> list[dict]:
    df = pd.read_csv(SHARED / "chinese_online_shopping_10_cats" / "online_shopping_10_cats.csv.gz")
    df["row"] = np.arange(1, len(df) + 1)
    df = df.dropna(subset=["review"]).drop_duplicates("review")
    df = df[df["review"].str.len().between(8, 200)]
    rng = np.random.default_rng(7)
    out = []
    for (cat, label), g in sorted(df.groupby(["cat", "label"])):
        for _, r in g.iloc[rng.choice(len(g), 8, replace=False)].iterrows():
            out.append({"id": f"zh-{r['row']}", "lang": "zh", "source": "online_shopping_10_cats.csv.gz",
                        "row": int(r["row"]), "category": cat, "label": int(label), "text": r["review"].strip()})
    return out


def en() -> list[dict]:
    rows = []
    with gzip.open(SHARED / "amazon2018_all_beauty_5core_reviews" / "All_Beauty_5.json.gz", "rt") as f:
        for i, line in enumerate(f, 1):
            r = json.loads(line)
            text = ". ".join(x.strip() for x in (r.get("summary"), r.get("reviewText")) if x and x.strip())
            rows.append({"row": i, "rating": r["overall"], "text": text})
    df = pd.DataFrame(rows).drop_duplicates("text")
    df = df[df["text"].str.len().between(8, 400)]
    rng = np.random.default_rng(7)
    out = []
    for name, mask, n in (("neg", df["rating"] <= 2, 60), ("mid", df["rating"] == 3, 20), ("pos", df["rating"] >= 4, 80)):
        g = df[mask]
        for _, r in g.iloc[rng.choice(len(g), min(n, len(g)), replace=False)].iterrows():
            out.append({"id": f"en-{r['row']}", "lang": "en", "source": "All_Beauty_5.json.gz", "row": int(r["row"]),
                        "rating": float(r["rating"]), "text": r["text"]})
    return out


if __name__ == "__main__":
    for r in zh() + en():
        print(json.dumps(r, ensure_ascii=False))
