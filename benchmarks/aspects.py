"""Benchmark: aspect and entity extraction from reviews against a hand-labelled set.

    .venv/bin/python benchmarks/aspects.py [--data benchmarks/data/aspects_eval.jsonl] [--json]

The set (benchmarks/data/aspects_eval.jsonl, described in benchmarks/data/ASPECTS_EVAL.md) holds 289
real reviews — 160 Chinese (online_shopping_10_cats) and 129 English (Amazon All_Beauty) — each
labelled with the aspects it judges (and the polarity), the brands, colours and product types it names.

Reported, per aspect and in total (micro), per language:
  detection  an aspect counts as found when the review is labelled with it (polarity ignored);
  polarity   (aspect, polarity) pairs must match; a clause without an opinion word takes the review's
             own polarity — here the source's label (zh) or rating (en: >= 4 positive, <= 2 negative),
             in a store the sentiment model's score first;
  entities   brands, colours, product types: case-folded exact strings.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from huaxiang.text.aspects import ASPECT_NAMES, extract

DATA = Path(__file__).resolve().parent / "data" / "aspects_eval.jsonl"


def own_polarity(row: dict) -> int | None:
    if row.get("label") is not None:
        return 1 if row["label"] else -1
    rating = row.get("rating")
    return None if rating is None or rating == 3 else (1 if rating >= 4 else -1)


def predict(row: dict) -> dict:
    e = extract(row["text"], category=row.get("category"))
    fallback = own_polarity(row)
    aspects = {(m.aspect, "pos" if (m.polarity or fallback or 0) > 0 else "neg")
               for m in e.aspects if (m.polarity or fallback) is not None}
    return {"aspects": aspects, "detected": {m.aspect for m in e.aspects},
            "brands": {b.lower() for b in e.brands}, "colours": {c.lower() for c in e.colours},
            "products": {p.lower() for p in e.products}}


def prf(tp: int, fp: int, fn: int) -> dict:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "support": tp + fn}


def evaluate(rows: list[dict]) -> dict:
    c = Counter()
    for row in rows:
        gold = {(a["aspect"], a["polarity"]) for a in row["aspects"]}
        pred = predict(row)
        for name, g, p in (("polarity", gold, pred["aspects"]), ("detection", {a for a, _ in gold}, pred["detected"])):
            for aspect in ASPECT_NAMES:
                gs = {x for x in g if (x[0] if isinstance(x, tuple) else x) == aspect}
                ps = {x for x in p if (x[0] if isinstance(x, tuple) else x) == aspect}
                c[name, aspect, "tp"] += len(gs & ps)
                c[name, aspect, "fp"] += len(ps - gs)
                c[name, aspect, "fn"] += len(gs - ps)
        for kind in ("brands", "colours", "products"):
            g = {x.lower() for x in row[kind]}
            c[kind, "tp"] += len(g & pred[kind])
            c[kind, "fp"] += len(pred[kind] - g)
            c[kind, "fn"] += len(g - pred[kind])
    out = {"n": len(rows)}
    for name in ("detection", "polarity"):
        per = {a: prf(c[name, a, "tp"], c[name, a, "fp"], c[name, a, "fn"]) for a in ASPECT_NAMES}
        out[name] = {"per_aspect": {a: v for a, v in per.items() if v["support"] or c[name, a, "fp"]},
                     "micro": prf(*(sum(c[name, a, k] for a in ASPECT_NAMES) for k in ("tp", "fp", "fn")))}
    out["entities"] = {k: prf(c[k, "tp"], c[k, "fp"], c[k, "fn"]) for k in ("brands", "colours", "products")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(args.data, encoding="utf-8")]
    t = time.perf_counter()
    results = {lang: evaluate([r for r in rows if r["lang"] == lang]) for lang in ("zh", "en")}
    results["all"] = evaluate(rows)
    seconds = time.perf_counter() - t
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{len(rows)} labelled reviews; {platform.processor() or platform.machine()}, Python "
          f"{platform.python_version()}; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; "
          f"extraction {3 * len(rows) / seconds:,.0f} reviews/s")
    print("\n| aspect | zh P | zh R | zh n | en P | en R | en n | all P (polarity) | all R (polarity) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for a in [*ASPECT_NAMES, "micro"]:
        cells = []
        for lang in ("zh", "en"):
            d = results[lang]["detection"]
            v = d["micro"] if a == "micro" else d["per_aspect"].get(a)
            cells += ["–", "–", "0"] if v is None else [f"{v['precision']:.2f}", f"{v['recall']:.2f}", str(v["support"])]
        p = results["all"]["polarity"]
        v = p["micro"] if a == "micro" else p["per_aspect"].get(a)
        cells += ["–", "–"] if v is None else [f"{v['precision']:.2f}", f"{v['recall']:.2f}"]
        print(f"| {'**all aspects (micro)**' if a == 'micro' else a} | " + " | ".join(cells) + " |")
    print("\n| entity | zh P | zh R | zh n | en P | en R | en n |\n|---|---:|---:|---:|---:|---:|---:|")
    for k in ("brands", "colours", "products"):
        cells = [f"{results[l]['entities'][k][m]:.2f}" if m != "support" else str(results[l]['entities'][k][m])
                 for l in ("zh", "en") for m in ("precision", "recall", "support")]
        print(f"| {k} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
