"""Benchmark: SASRec warm-started from the previous (promoted) version on new data, against a full retrain from
scratch on the same data, in the same run: training time and test NDCG@10 / HR@10.

    nice -n 10 .venv/bin/python benchmarks/sasrec_warm_start.py [--dataset Beauty] [--old-epochs 3] [--epochs 2]
        [--patience 5] [--seeds 0] [--threads 2] [--out sasrec_warm_start.json]

Data: the S3-Rec Amazon 2014 set (../shared/data/amazon2014_seqrec_s3rec/{DS}.txt.gz, as benchmarks/seqrec.py reads
it). New data arriving later: the last 10% of users (file order), as benchmarks/itemknn_incremental.py splits it.
Both trainings number users and items as the store does (`store_sequences`: users sorted by id, items by first
appearance in that order), so an old item's index differs between the two and the warm start maps them by item id
(`match_items`).
  previous version — SASRec trained on the first 90% of users (capped at --old-epochs; its time is not compared);
  full retrain     — SASRec from random weights on all users;
  warm start       — SASRec on all users starting from the previous version's weights.
Protocol of evaluate/seqrec.py: leave-one-out (per user the last item is the test target, the second-to-last the
validation target), full ranking, the history's items excluded. Both arms keep the epoch with the best validation
NDCG@10 and stop after --patience epochs without improvement or at the --epochs cap (the same for both); the test
targets are scored once, with the kept epoch. Time: `train_seconds_` (every epoch run, its validation pass
included; an epoch is the same work in both arms, so on a shared machine compare epochs as well as seconds).
Also reported, from the validation curves only: the epoch (and seconds) at which the warm start first
reaches the full retrain's best validation NDCG@10. Writes benchmarks/out/seqrec/sasrec_warm_start.json (--out).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from machine import stamp

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "amazon2014_seqrec_s3rec"
OUT = Path(__file__).resolve().parent / "out" / "seqrec"


def store_numbering(users: list[str], seqs: list[list[str]]):
    """Sequences numbered as `store_sequences` numbers them: users sorted by id, items by first appearance."""
    from huaxiang.models.seqrec.data import Sequences
    order = sorted(range(len(users)), key=lambda u: users[u])
    index: dict[str, int] = {}
    numbered = [[index.setdefault(i, len(index) + 1) for i in seqs[u]] for u in order]
    return Sequences([users[u] for u in order], numbered, list(index))


def arm(name: str, data, args, seed: int, init=None, init_index=None) -> dict:
    from huaxiang.evaluate.seqrec import evaluate
    from huaxiang.models.seqrec.data import split
    from huaxiang.models.seqrec.sasrec import SASRec
    m = SASRec(epochs=args.epochs, patience=args.patience, seed=seed, threads=args.threads)
    print(f"  {name} (seed {seed}):", flush=True)
    m.fit(split(data, "train")[0], data.n_items, valid=split(data, "valid"), init=init, init_index=init_index,
          progress=lambda msg: print(f"    {msg}", flush=True))
    best = max(m.history_, key=lambda r: r["ndcg@10"])
    test = evaluate(m.score, data, "test", "full")
    return {"arm": name, "seed": seed, "train_seconds": m.train_seconds_, "epochs_run": len(m.history_),
            "epoch_kept": best["epoch"], "valid_ndcg@10": best["ndcg@10"], "test_ndcg@10": test["ndcg@10"],
            "test_hr@10": test["hr@10"], "valid_curve": [round(r["ndcg@10"], 5) for r in m.history_],
            "seconds_curve": [round(r["seconds"], 1) for r in m.history_], **({"warm": m.warm_} if init else {})}


def summary(rows: list[dict]) -> None:
    """The table and, per seed, the warm start against the full retrain."""
    print("\n| arm | seed | epochs run | epoch kept | train s | s per epoch | valid NDCG@10 | test NDCG@10 "
          "| test HR@10 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["arm"] != "previous":
            print(f"| {r['arm']} | {r['seed']} | {r['epochs_run']} | {r['epoch_kept']} | {r['train_seconds']:.0f} | "
                  f"{r['train_seconds'] / r['epochs_run']:.0f} | {r['valid_ndcg@10']:.4f} | {r['test_ndcg@10']:.4f} | "
                  f"{r['test_hr@10']:.4f} |")
    for seed in sorted({r["seed"] for r in rows}):
        f, w = (next(r for r in rows if r["seed"] == seed and r["arm"] == a) for a in ("full retrain", "warm start"))
        at, secs = w["reaches_full_best_valid_at_epoch"], w["reaches_full_best_valid_at_seconds"]
        when = (f"after {at} of its epochs ({secs:.0f} s) against {f['epochs_run']} ({f['train_seconds']:.0f} s)"
                if at else "not within the cap")
        print(f"seed {seed}: warm start test NDCG@10 {w['test_ndcg@10'] / f['test_ndcg@10']:.2f}x the full retrain's "
              f"at {w['train_seconds'] / f['train_seconds']:.2f}x its time; reaches the full retrain's best "
              f"validation NDCG@10 {when}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="Beauty", choices=["Beauty", "Sports_and_Outdoors"])
    ap.add_argument("--old-epochs", type=int, default=3, help="epoch cap of the previous version's training")
    ap.add_argument("--epochs", type=int, default=2, help="epoch cap of both compared trainings")
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--seeds", default="0", help="comma-separated")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--out", default="sasrec_warm_start.json", help="the result file's name in "
                    "benchmarks/out/seqrec/")
    args = ap.parse_args()
    from huaxiang.models.seqrec.data import split
    from huaxiang.models.seqrec.sasrec import SASRec, match_items
    from huaxiang.ingest.readers import open_text
    with open_text(str(SHARED / f"{args.dataset}.txt.gz")) as f:
        lines = [line.split() for line in f if line.strip()]
    users, seqs = [p[0] for p in lines], [p[1:] for p in lines]
    cut = len(users) - len(users) // 10
    old, new = store_numbering(users[:cut], seqs[:cut]), store_numbering(users, seqs)
    index = match_items(old.items, new.items)
    moved = int(sum(1 for i in range(1, len(index)) if index[i] > 0 and index[i] != i))
    machine = stamp()
    print(f"{args.dataset}: previous version on {len(old.users):,} users / {old.n_items:,} items, new data "
          f"{len(new.users):,} users / {new.n_items:,} items ({int((index < 0).sum()):,} new items, {moved:,} old "
          f"items renumbered); {machine}", flush=True)
    started = time.perf_counter()
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        print(f"previous version (seed {seed}, up to {args.old_epochs} epochs):", flush=True)
        prev = SASRec(epochs=args.old_epochs, patience=args.patience, seed=seed, threads=args.threads)
        prev.fit(split(old, "train")[0], old.n_items, valid=split(old, "valid"),
                 progress=lambda msg: print(f"    {msg}", flush=True))
        prev_row = {"arm": "previous", "seed": seed, "train_seconds": prev.train_seconds_,
                    "epochs_run": len(prev.history_), "valid_curve": [round(r["ndcg@10"], 5) for r in prev.history_]}
        full = arm("full retrain", new, args, seed)
        warm = arm("warm start", new, args, seed, init=prev, init_index=index)
        reach = next((r for r, v in enumerate(warm["valid_curve"]) if v >= full["valid_ndcg@10"]), None)
        warm["reaches_full_best_valid_at_epoch"] = None if reach is None else reach + 1
        warm["reaches_full_best_valid_at_seconds"] = None if reach is None else warm["seconds_curve"][reach]
        rows += [prev_row, full, warm]
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / args.out
    path.write_text(json.dumps({"benchmark": "sasrec_warm_start", "machine": machine, "args": vars(args),
                                "previous_users": len(old.users), "users": len(new.users), "items": new.n_items,
                                "new_items": int((index < 0).sum()), "renumbered_items": moved,
                                "wall_seconds": round(time.perf_counter() - started, 1), "results": rows}, indent=1))
    summary(rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
