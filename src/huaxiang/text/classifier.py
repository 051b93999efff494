"""Fine-tuning the pretrained encoder as a text classifier: full fine-tuning or LoRA (peft).

Model: the converted multilingual-e5-small encoder (`convert.py`), mean pooling over tokens (as E5
is trained), dropout and a linear head. Training: AdamW with linear warm-up and decay, a seeded
stratified validation split, evaluation after every epoch, the best epoch by validation macro-F1
kept, early stopping after `patience` epochs without improvement.

Saved folder: `classifier.json` (labels, settings, scores), `head.pt`, and either the whole
encoder (full) or the LoRA adapter (the base encoder comes from the converter's cache).
"""
from __future__ import annotations

import copy
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..batching import length_batches
from ..errors import HuaxiangError
from .convert import convert, load_hf, mean_pool

PREFIX = "passage: "  # E5's prefix for texts that are not search queries
warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")


@dataclass
class TrainConfig:
    lora: bool = False
    epochs: int = 3
    max_rows: int | None = None
    max_len: int = 64
    batch_size: int = 32
    lr: float | None = None  # default: 3e-5 full, 5e-4 LoRA
    val_fraction: float = 0.1
    patience: int = 1
    seed: int = 0
    lora_r: int = 8
    balanced: bool = False  # weight the loss by inverse label frequency (skewed labels)
    init: str | None = None  # start from this encoder (a `huaxiang pretrain --out` folder) instead of the packaged
    history: list = field(default_factory=list)


def read_labelled(path: str, text_col: str, label_col: str, max_rows: int | None = None) -> pd.DataFrame:
    """(text, label) rows of a CSV; rows missing either are dropped and counted in `attrs['dropped']`."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise HuaxiangError(f"{path}: cannot read CSV ({str(exc).splitlines()[0]})") from exc
    missing = [c for c in (text_col, label_col) if c not in df.columns]
    if missing:
        raise HuaxiangError(f"{path}: no column {missing[0]!r} (columns: {', '.join(df.columns)})")
    out = df[[text_col, label_col]].rename(columns={text_col: "text", label_col: "label"})
    before = len(out)
    out = out.dropna()
    out = out[out["text"].str.strip() != ""].reset_index(drop=True)
    dropped = before - len(out)
    if max_rows:
        out = out.sample(n=min(max_rows, len(out)), random_state=0).reset_index(drop=True)
    out.attrs["dropped"] = dropped
    return out


def stratified_split(labels: pd.Series, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held-out): `fraction` of each label held out, at least one per label when it can."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for _, idx in sorted(labels.groupby(labels).groups.items()):
        idx = rng.permutation(np.asarray(idx))
        k = int(round(len(idx) * fraction)) if len(idx) > 1 else 0
        k = max(k, 1) if len(idx) > 1 and fraction > 0 else k
        held += list(idx[:k])
        train += list(idx[k:])
    return np.array(sorted(train)), np.array(sorted(held))


class _Classifier:
    """Encoder + mean pooling + linear head (built lazily so that torch loads only when used)."""

    def __init__(self, encoder, n_labels: int):
        import torch
        self.torch = torch
        self.encoder = encoder
        self.head = torch.nn.Sequential(torch.nn.Dropout(0.1), torch.nn.Linear(encoder.config.hidden_size, n_labels))

    def logits(self, batch):
        hidden = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        return self.head(mean_pool(hidden, batch["attention_mask"]))

    def parameters(self):
        return [p for p in list(self.encoder.parameters()) + list(self.head.parameters()) if p.requires_grad]

    def train(self, on: bool = True):
        self.encoder.train(on)
        self.head.train(on)


def _device():
    import torch
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _batches(tok, texts: list[str], max_len: int, batch_size: int, device):
    for i in range(0, len(texts), batch_size):
        enc = tok([PREFIX + t for t in texts[i:i + batch_size]], padding=True, truncation=True,
                  max_length=max_len, return_tensors="pt")
        yield i, {k: v.to(device) for k, v in enc.items()}


def predict_proba(model: _Classifier, tok, texts: list[str], max_len: int, batch_size: int = 64) -> np.ndarray:
    torch = model.torch
    model.train(False)
    out = []
    with torch.no_grad():
        for _, batch in _batches(tok, texts, max_len, batch_size, next(model.head.parameters()).device):
            out.append(torch.softmax(model.logits(batch).float(), dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.head[-1].out_features))


def scores(y_true: np.ndarray, proba: np.ndarray, labels: list[str]) -> dict:
    """accuracy, macro-F1, n, and (two labels) ROC AUC of the second label."""
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
    pred = proba.argmax(axis=1)
    out = {"accuracy": float(accuracy_score(y_true, pred)),
           "macro_f1": float(f1_score(y_true, pred, average="macro", labels=list(range(len(labels))), zero_division=0)),
           "n": int(len(y_true))}
    if len(labels) == 2 and len(set(y_true.tolist())) == 2:
        out["auc"] = float(roc_auc_score(y_true, proba[:, 1]))
    return out


def _load_base(init: str | None = None):
    """(tokenizer, encoder, its folder): the packaged encoder, or `init`'s (a pretrain folder, or an encoder's)."""
    from .encoder import encoder_folder
    path = convert() if init is None else encoder_folder(init)
    if path is None:
        raise HuaxiangError(f"--init {init}: no encoder there (expected a `huaxiang pretrain --out` folder)")
    return (*load_hf(path), path)


def train_classifier(df: pd.DataFrame, out_dir: str, cfg: TrainConfig,
                     progress: Callable[[str, int, int], None] | None = None,
                     validation: pd.DataFrame | None = None) -> dict:
    """Fine-tunes on `df` (text, label); writes the model to `out_dir`; returns classifier.json.
    Early stopping watches `validation` when given, else a seeded stratified hold-out of `df`."""
    import torch
    from transformers import get_linear_schedule_with_warmup
    df = df.reset_index(drop=True)  # positions, not the caller's index, identify rows below
    labels = sorted(df["label"].unique().tolist())
    if len(labels) < 2:
        raise HuaxiangError(f"need at least two labels to train a classifier, found {labels}")
    torch.manual_seed(cfg.seed)
    if validation is not None:
        train_idx = np.arange(len(df))
        val_idx = np.arange(len(df), len(df) + len(validation))
        df = pd.concat([df, validation[df.columns]], ignore_index=True)
    else:
        train_idx, val_idx = stratified_split(df["label"], cfg.val_fraction, cfg.seed)
    y = df["label"].map({l: i for i, l in enumerate(labels)}).to_numpy()
    tok, encoder, base = _load_base(cfg.init)
    if cfg.lora:
        from peft import LoraConfig, get_peft_model
        encoder = get_peft_model(encoder, LoraConfig(r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, lora_dropout=0.1,
                                                     target_modules=["query", "key", "value", "dense"]))
    device = _device()
    model = _Classifier(encoder.to(device), len(labels))
    model.head.to(device)
    lr = cfg.lr or (5e-4 if cfg.lora else 3e-5)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps_per_epoch = math.ceil(len(train_idx) / cfg.batch_size)
    sched = get_linear_schedule_with_warmup(opt, int(0.06 * steps_per_epoch * cfg.epochs), steps_per_epoch * cfg.epochs)
    texts = df["text"].tolist()
    lengths = np.array([len(t) for t in texts])
    counts = np.bincount(y, minlength=len(labels))
    weight = torch.as_tensor(len(y) / (len(labels) * np.maximum(counts, 1)), dtype=torch.float32,
                             device=device) if cfg.balanced else None
    rng = np.random.default_rng(cfg.seed)
    best, best_state, stale, history = -1.0, None, 0, []
    started = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train(True)
        for step, rows in enumerate(length_batches(rng.permutation(train_idx), lengths, cfg.batch_size, rng)):
            _, batch = next(_batches(tok, [texts[j] for j in rows], cfg.max_len, len(rows), device))
            target = torch.as_tensor(y[rows], device=device)
            loss = torch.nn.functional.cross_entropy(model.logits(batch), target, weight=weight)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            if progress:
                progress(f"epoch {epoch}/{cfg.epochs} loss {loss.item():.3f}", step + 1, steps_per_epoch)
        val = scores(y[val_idx], predict_proba(model, tok, [texts[j] for j in val_idx], cfg.max_len), labels) \
            if len(val_idx) else {"macro_f1": 0.0}
        history.append({"epoch": epoch, **val, "seconds": time.perf_counter() - started})
        if val["macro_f1"] > best:
            best, stale = val["macro_f1"], 0
            best_state = (copy.deepcopy({k: v.detach().cpu() for k, v in model.encoder.state_dict().items()
                                         if not cfg.lora or "lora_" in k}),
                          copy.deepcopy({k: v.detach().cpu() for k, v in model.head.state_dict().items()}))
        else:
            stale += 1
            if stale > cfg.patience:
                break
    enc_state, head_state = best_state
    model.encoder.load_state_dict(enc_state, strict=False)
    model.head.load_state_dict(head_state)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.lora:
        model.encoder.save_pretrained(str(out / "adapter"))
    else:
        model.encoder.save_pretrained(str(out / "encoder"))
        tok.save_pretrained(str(out / "encoder"))
    torch.save(model.head.state_dict(), out / "head.pt")
    trainable = sum(p.numel() for p in model.parameters())
    meta = {"labels": labels, "method": "lora" if cfg.lora else "full", "base": str(base),
            "max_len": cfg.max_len, "prefix": PREFIX, "pooling": "mean", "trainable_parameters": trainable,
            "train_rows": int(len(train_idx)), "validation_rows": int(len(val_idx)),
            "train_seconds": time.perf_counter() - started, "best_validation": max(history, key=lambda h: h["macro_f1"]),
            "history": history, "config": {k: v for k, v in asdict(cfg).items() if k != "history"}}
    (out / "classifier.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
    return meta


INT8 = "int8.pt"  # the dynamically quantised encoder (`compress_classifier`), beside the fp32 one
VARIANTS = ("fp32", "int8")


def quantised(encoder):
    """`encoder` with every Linear layer's weights in int8 (a scale per output channel: on a small fine-tuned
    classifier it kept 95.5% of the predictions where one scale per matrix kept 93%), activations quantised on the
    fly (CPU)."""
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    with warnings.catch_warnings():  # (torch marks its quantised tensors deprecated in favour of torchao)
        warnings.simplefilter("ignore")
        return quantize_dynamic(encoder, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def load_classifier(model_dir: str, variant: str | None = None):
    """(model, tokenizer, classifier.json with its `variant`) from a folder written by `train_classifier`.
    `variant`: fp32, int8 (`compress_classifier`), or None: the fastest present (int8 when there is one and no
    GPU)."""
    import torch
    d = Path(model_dir)
    if not (d / "classifier.json").exists():
        raise HuaxiangError(f"{model_dir}: not a classifier folder (no classifier.json); train one with "
                            "`huaxiang train classifier`")
    if variant not in (None, *VARIANTS):
        raise HuaxiangError(f"unknown variant {variant!r}: use {' or '.join(VARIANTS)}")
    if variant == "int8" and not (d / INT8).exists():
        raise HuaxiangError(f"{model_dir}: no int8 variant; make one with `huaxiang compress --model {model_dir}`")
    int8 = variant == "int8" or (variant is None and (d / INT8).exists() and _device().type == "cpu")
    meta = json.loads((d / "classifier.json").read_text())
    if meta["method"] == "lora":
        from peft import PeftModel
        tok, base = load_hf(meta["base"] if meta.get("config", {}).get("init") else convert())  # (--init's)
        encoder = PeftModel.from_pretrained(base, str(d / "adapter"))
        if int8:
            encoder = encoder.merge_and_unload()
    else:
        tok, encoder = load_hf(d / "encoder")
    if int8:
        encoder = quantised(encoder.eval())
        encoder.load_state_dict(torch.load(d / INT8, map_location="cpu", weights_only=False))
    model = _Classifier(encoder if int8 else encoder.to(_device()), len(meta["labels"]))
    model.head.load_state_dict(torch.load(d / "head.pt", map_location="cpu"))
    if not int8:
        model.head.to(_device())
    return model, tok, {**meta, "variant": "int8" if int8 else "fp32"}


def compress_classifier(model_dir: str) -> Path:
    """Writes the int8 variant of a trained classifier (dynamic quantisation of the encoder's Linear layers:
    weights int8, activations quantised per batch; LoRA adapters merged first) beside it; returns its path."""
    import torch
    model, _, meta = load_classifier(model_dir, "fp32")
    encoder = model.encoder.cpu().eval()
    if meta["method"] == "lora":
        encoder = encoder.merge_and_unload()
    path = Path(model_dir) / INT8
    torch.save(quantised(encoder).state_dict(), path)
    return path


def evaluate_classifier(model_dir: str, df: pd.DataFrame, variant: str | None = None) -> dict:
    """accuracy, macro-F1, n (and AUC for two labels) on `df`, the seconds it took, reviews per second, and the
    method and variant scored."""
    model, tok, meta = load_classifier(model_dir, variant)
    labels = meta["labels"]
    unknown = sorted(set(df["label"]) - set(labels))
    if unknown:
        raise HuaxiangError(f"labels {unknown[:5]} were not seen in training (known: {labels})")
    y = df["label"].map({l: i for i, l in enumerate(labels)}).to_numpy()
    started = time.perf_counter()
    out = scores(y, predict_proba(model, tok, df["text"].tolist(), meta["max_len"]), labels)
    out["seconds"] = time.perf_counter() - started
    out["reviews_per_second"] = len(df) / max(out["seconds"], 1e-9)
    out["method"], out["variant"] = meta["method"], meta["variant"]
    return out
