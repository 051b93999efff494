"""Benchmark: incremental item-KNN — the time `ItemKNN.update` takes to add 10k new events, against a full refit on
the same data in the same run, and a check that the updated model equals the refit one.

    nice -n 10 .venv/bin/python benchmarks/itemknn_incremental.py [--datasets Beauty,Sports_and_Outdoors]
        [--chunk 10000] [--repeats 3]

Data: the S3-Rec Amazon 2014 sets (../shared/data/amazon2014_seqrec_s3rec, read as benchmarks/seqrec.py does).
Two ways the new events arrive (each a fit on the rest, then updates of `--chunk` events):
  new_users — the last 10% of users (file order) arrive later, user after user (a user may straddle two chunks);
  tails     — every user's last 10% of events (at least one) arrive later, every user's earlier ones first, so
              sequences continue across chunks (a user's first new item follows their previous last item).
Update time: wall time of `update` per chunk (the counts, the rows whose similarities changed re-ranked, the matrix
spliced); median over the chunks of exactly `--chunk` events (the last, smaller one is applied but not counted),
over `--repeats` repeats. Refit time: `fit` on all the
data, median of `--repeats`. At the end of each repeat the updated model must equal the refit one (same entries,
same float32 values). Writes benchmarks/out/seqrec/itemknn_incremental.json.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from machine import stamp

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "amazon2014_seqrec_s3rec"
OUT = Path(__file__).resolve().parent / "out" / "seqrec"


def new_users(seqs: list[list[int]], chunk: int) -> tuple[list[list[int]], list[dict[int, list[int]]]]:
    """(what is fitted on, the updates): the last 10% of users arrive later, user after user."""
    cut = len(seqs) - len(seqs) // 10
    return seqs[:cut], chunks([(u, i) for u in range(cut, len(seqs)) for i in seqs[u]], chunk)


def tails(seqs: list[list[int]], chunk: int) -> tuple[list[list[int]], list[dict[int, list[int]]]]:
    """(what is fitted on, the updates): each user's last 10% of events (at least one) arrive later, ordered by
    how far from the end they are (every user's earlier ones first)."""
    held = [max(1, math.ceil(len(s) / 10)) for s in seqs]
    late = sorted((h - p, u, s[len(s) - h + p]) for u, (s, h) in enumerate(zip(seqs, held)) for p in range(h))
    return [s[:len(s) - h] for s, h in zip(seqs, held)], chunks([(u, i) for _, u, i in late[::-1]], chunk)


def chunks(events: list[tuple[int, int]], chunk: int) -> list[dict[int, list[int]]]:
    """(user, item) events in arrival order as updates of `chunk` events (the last one: what is left); a user's
    events may be split over consecutive updates."""
    out = []
    for start in range(0, len(events), chunk):
        part: dict[int, list[int]] = {}
        for u, item in events[start:start + chunk]:
            part.setdefault(u, []).append(item)
        out.append(part)
    return out


def run(seqs: list[list[int]], n_items: int, scenario, chunk: int, repeats: int) -> dict:
    from huaxiang.models.seqrec.itemknn import ItemKNN
    base, updates = scenario(seqs, chunk)
    sizes = [sum(len(v) for v in u.values()) for u in updates]
    update_s, rows, refit_s, equal = [], [], [], []
    for _ in range(repeats):
        m = ItemKNN().fit(base, max(max(s, default=0) for s in base))
        for part, size in zip(updates, sizes):
            t = time.perf_counter()
            changed = m.update(part, n_items)
            took = time.perf_counter() - t
            if size == chunk:
                update_s.append(took)
                rows.append(len(changed))
        t = time.perf_counter()
        refit = ItemKNN().fit(seqs, n_items)
        refit_s.append(time.perf_counter() - t)
        a, b = m.sim_, refit.sim_
        equal.append(bool(np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
                          and np.allclose(a.data, b.data, rtol=1e-6, atol=0) and np.array_equal(a.data, b.data)))
    med_update, med_refit = float(np.median(update_s)), float(np.median(refit_s))
    return {"fitted_events": sum(map(len, base)), "new_events": sum(sizes), "chunks": sizes,
            "update_ms_median": med_update * 1000, "update_ms_all": [round(s * 1000, 1) for s in update_s],
            "rows_reranked_median": float(np.median(rows)), "rows": n_items + 1,
            "refit_ms_median": med_refit * 1000, "speedup": med_refit / med_update, "equal_to_refit": all(equal)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="Beauty,Sports_and_Outdoors")
    ap.add_argument("--chunk", type=int, default=10_000, help="new events per update")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from huaxiang.models.seqrec.data import read_sequences
    machine = stamp()
    print(machine)
    results = {}
    for ds in args.datasets.split(","):
        data = read_sequences(str(SHARED / f"{ds}.txt.gz"))
        results[ds] = {"users": len(data.seqs), "items": data.n_items, "events": sum(map(len, data.seqs))}
        for name, scenario in (("new_users", new_users), ("tails", tails)):
            r = run(data.seqs, data.n_items, scenario, args.chunk, args.repeats)
            results[ds][name] = r
            print(f"{ds} {name}: fit on {r['fitted_events']:,} events, then {r['new_events']:,} new in chunks "
                  f"{r['chunks']}; update per {args.chunk:,} events {r['update_ms_median']:.0f} ms median "
                  f"({r['rows_reranked_median']:.0f} of {r['rows']:,} rows re-ranked), full refit "
                  f"{r['refit_ms_median']:.0f} ms: {r['speedup']:.1f}x; equal to the refit: {r['equal_to_refit']}")
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "itemknn_incremental.json"
    path.write_text(json.dumps({"benchmark": "itemknn_incremental", "machine": machine, "args": vars(args),
                                "results": results}, indent=1))
    print(f"wrote {path}")
    if not all(r[s]["equal_to_refit"] for r in results.values() for s in ("new_users", "tails")):
        raise SystemExit("an updated model differs from the refit one")


if __name__ == "__main__":
    main()
