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
    freeze_embeddings: bool = False  # full: keep the token embeddings (96M of e5-small's 118M weights) as they are
    checkpoint_every: int = 500  # steps between checkpoints (0: only after each epoch)
    init: str | None = None  # start from this encoder (a `huaxiang pretrain --out` folder) instead of the packaged
    history: list = field(default_factory=list)


def read_labelled(path: str, text_col: str, label_col: str | None, max_rows: int | None = None) -> pd.DataFrame:
    """(text, label) rows of a CSV (`label_col` None: text only); rows missing either are dropped and counted in
    `attrs['dropped']`."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise HuaxiangError(f"{path}: cannot read CSV ({str(exc).splitlines()[0]})") from exc
    wanted = [text_col] + ([label_col] if label_col is not None else [])
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise HuaxiangError(f"{path}: no column {missing[0]!r} (columns: {', '.join(df.columns)})")
    out = df[wanted].rename(columns={text_col: "text", **({label_col: "label"} if label_col is not None else {})})
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


def _logits(model: _Classifier, tok, texts: list[str], max_len: int, batch_size: int = 64) -> np.ndarray:
    """The classifier's logits of `texts`, in their order (batched by length)."""
    torch = model.torch
    model.train(False)
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), model.head[-1].out_features), dtype=np.float32)
    with torch.no_grad():
        for i, batch in _batches(tok, [texts[j] for j in order], max_len, batch_size,
                                 next(model.head.parameters()).device):
            out[order[i:i + batch_size]] = model.logits(batch).float().cpu().numpy()
    return out


def predict_proba(model: _Classifier, tok, texts: list[str], max_len: int, batch_size: int = 64) -> np.ndarray:
    """Class probabilities of `texts`, in their order (batched by length, so that little padding is computed)."""
    logits = _logits(model, tok, texts, max_len, batch_size)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


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


CHECKPOINT = "checkpoint"  # OUT/checkpoint/state.pt: where a run stands, written every `checkpoint_every` steps


def _fingerprint(df: pd.DataFrame) -> str:
    """A digest of the rows (text and label, in order), so that a resumed run is known to see the same data."""
    import hashlib
    digest = hashlib.sha256()
    for text, label in zip(df["text"], df["label"]):
        digest.update(f"{text}\0{label}\0".encode("utf-8"))
    return digest.hexdigest()


def train_classifier(df: pd.DataFrame, out_dir: str, cfg: TrainConfig,
                     progress: Callable[[str, int, int], None] | None = None,
                     validation: pd.DataFrame | None = None, resume: bool = False) -> dict:
    """Fine-tunes on `df` (text, label); writes the model to `out_dir`; returns classifier.json.
    Early stopping watches `validation` when given, else a seeded stratified hold-out of `df`.

    Every `cfg.checkpoint_every` steps and after every epoch, OUT/checkpoint/state.pt records the trainable weights,
    the optimiser, the schedule, the random states and the best epoch so far. With `resume`, a run continues from
    it (the same data and settings are required) and ends with the weights an uninterrupted run would have; the
    checkpoint is removed when the model is written."""
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
    out = Path(out_dir)
    saved = out / CHECKPOINT / "state.pt"
    settings = {k: v for k, v in asdict(cfg).items() if k != "history"}
    fingerprint = _fingerprint(df)
    state = None
    if resume:
        if not saved.exists():
            raise HuaxiangError(f"--resume: no checkpoint in {out_dir} ({saved} missing)")
        state = torch.load(saved, weights_only=False)
        if state["config"] != settings or state["data"] != fingerprint or state["train_rows"] != len(train_idx):
            raise HuaxiangError(f"--resume: the checkpoint in {out_dir} was made with other data or settings "
                                f"({json.dumps(state['config'])}); give the same ones")
    y = df["label"].map({l: i for i, l in enumerate(labels)}).to_numpy()
    tok, encoder, base = _load_base(cfg.init)
    if cfg.lora:
        from peft import LoraConfig, get_peft_model
        encoder = get_peft_model(encoder, LoraConfig(r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, lora_dropout=0.1,
                                                     target_modules=["query", "key", "value", "dense"]))
    elif cfg.freeze_embeddings:
        encoder.embeddings.word_embeddings.weight.requires_grad_(False)
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
    best, best_state, stale, history, spent, start_epoch, skip = -1.0, None, 0, [], 0.0, 1, 0
    trainable = lambda: {k: v.detach().cpu().clone() for k, v in model.encoder.named_parameters() if v.requires_grad}
    if state is not None:
        model.encoder.load_state_dict(state["encoder"], strict=False)
        model.head.load_state_dict(state["head"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        best, best_state, stale, history = state["best"], state["best_state"], state["stale"], state["history"]
        spent, start_epoch, skip = state["seconds"], state["epoch"], state["step"]
    started = time.perf_counter()

    def checkpoint(epoch: int, step: int, rng_state: dict) -> None:
        """Where the run stands: `epoch` (from 1) with `step` of its batches done, drawn from `rng_state`."""
        saved.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"config": settings, "data": fingerprint, "train_rows": len(train_idx), "epoch": epoch,
                    "step": step, "rng": rng_state, "torch_rng": torch.get_rng_state(), "encoder": trainable(),
                    "head": model.head.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "best": best, "best_state": best_state, "stale": stale, "history": history,
                    "seconds": spent + time.perf_counter() - started}, saved.with_suffix(".tmp"))
        saved.with_suffix(".tmp").replace(saved)  # (a crash mid-write keeps the previous checkpoint)

    for epoch in range(start_epoch, cfg.epochs + 1):
        drawn_from = copy.deepcopy(rng.bit_generator.state)
        batches = length_batches(rng.permutation(train_idx), lengths, cfg.batch_size, rng)
        model.train(True)
        for step in range(skip, len(batches)):
            rows = batches[step]
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
            if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < len(batches):
                checkpoint(epoch, step + 1, drawn_from)
        skip = 0
        val = scores(y[val_idx], predict_proba(model, tok, [texts[j] for j in val_idx], cfg.max_len), labels) \
            if len(val_idx) else {"macro_f1": 0.0}
        history.append({"epoch": epoch, **val, "seconds": spent + time.perf_counter() - started})
        if val["macro_f1"] > best:
            best, stale = val["macro_f1"], 0
            best_state = (trainable(), copy.deepcopy({k: v.detach().cpu() for k, v in model.head.state_dict().items()}))
        else:
            stale += 1
            if stale > cfg.patience:
                break
        if epoch < cfg.epochs:
            checkpoint(epoch + 1, 0, rng.bit_generator.state)
    enc_state, head_state = best_state
    model.encoder.load_state_dict(enc_state, strict=False)
    model.head.load_state_dict(head_state)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.lora:
        model.encoder.save_pretrained(str(out / "adapter"))
    else:
        model.encoder.save_pretrained(str(out / "encoder"))
        tok.save_pretrained(str(out / "encoder"))
    torch.save(model.head.state_dict(), out / "head.pt")
    meta = {"labels": labels, "method": "lora" if cfg.lora else "full", "base": str(base),
            "max_len": cfg.max_len, "prefix": PREFIX, "pooling": "mean",
            "trainable_parameters": sum(p.numel() for p in model.parameters()),
            "train_rows": int(len(train_idx)), "validation_rows": int(len(val_idx)),
            "train_seconds": spent + time.perf_counter() - started, "resumed": state is not None,
            "best_validation": max(history, key=lambda h: h["macro_f1"]), "history": history, "config": settings}
    (out / "classifier.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
    if saved.exists():
        saved.unlink()
        saved.parent.rmdir()
    return meta


INT8 = "int8.pt"  # the dynamically quantised encoder (`compress_classifier`), beside the fp32 one
STUDENT = "student"  # the distilled student (`distil_classifier`): a classifier folder of its own, inside the model's
VARIANTS = ("fp32", "int8", "student", "student-int8")


def quantised(encoder):
    """`encoder` with every Linear layer's weights in int8 (a scale per output channel: on a small fine-tuned
    classifier it kept 95.5% of the predictions where one scale per matrix kept 93%), activations quantised on the
    fly (CPU)."""
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    with warnings.catch_warnings():  # (torch marks its quantised tensors deprecated in favour of torchao)
        warnings.simplefilter("ignore")
        return quantize_dynamic(encoder, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def fastest_variant(model_dir: str) -> str:
    """The fastest variant a classifier folder holds: the student before the teacher, int8 before fp32 (int8 only on
    the CPU: dynamic quantisation has no GPU kernels)."""
    d = Path(model_dir)
    int8 = _device().type == "cpu"
    if (d / STUDENT / "classifier.json").exists():
        return "student-int8" if int8 and (d / STUDENT / INT8).exists() else "student"
    return "int8" if int8 and (d / INT8).exists() else "fp32"


def load_classifier(model_dir: str, variant: str | None = None):
    """(model, tokenizer, classifier.json with its `variant`) from a folder written by `train_classifier`.
    `variant`: fp32, int8 (`compress_classifier`), student or student-int8 (`distil_classifier`), or None: the
    fastest present (`fastest_variant`)."""
    import torch
    d = Path(model_dir)
    if not (d / "classifier.json").exists():
        raise HuaxiangError(f"{model_dir}: not a classifier folder (no classifier.json); train one with "
                            "`huaxiang train classifier`")
    if variant not in (None, *VARIANTS):
        raise HuaxiangError(f"unknown variant {variant!r}: use one of {', '.join(VARIANTS)}")
    variant = variant or fastest_variant(model_dir)
    if variant.startswith(STUDENT):
        if not (d / STUDENT / "classifier.json").exists():
            raise HuaxiangError(f"{model_dir}: no distilled student; make one with `huaxiang compress --model "
                                f"{model_dir} --distil TEXTS`")
        model, tok, meta = load_classifier(str(d / STUDENT), "int8" if variant.endswith("int8") else "fp32")
        return model, tok, {**meta, "variant": variant}
    if variant == "int8" and not (d / INT8).exists():
        raise HuaxiangError(f"{model_dir}: no int8 variant; make one with `huaxiang compress --model {model_dir}`")
    int8 = variant == "int8"
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
    return model, tok, {**meta, "variant": variant}


def compress_classifier(model_dir: str) -> list[Path]:
    """Writes the int8 variant of a trained classifier (dynamic quantisation of the encoder's Linear layers:
    weights int8, activations quantised per batch; LoRA adapters merged first) beside it, and of its distilled
    student when it has one; returns their paths."""
    import torch
    d, written = Path(model_dir), []
    for folder in (d, d / STUDENT):
        if folder == d or (folder / "classifier.json").exists():
            model, _, meta = load_classifier(str(folder), "fp32")
            encoder = model.encoder.cpu().eval()
            if meta["method"] == "lora":
                encoder = encoder.merge_and_unload()
            torch.save(quantised(encoder).state_dict(), folder / INT8)
            written.append(folder / INT8)
    return written


@dataclass
class DistilConfig:
    layers: int | None = None  # the student's transformer layers (default: half the teacher's), evenly spaced
    epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-4
    temperature: float = 2.0
    seed: int = 0


def distil_classifier(model_dir: str, texts: list[str], cfg: DistilConfig,
                      progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Distils a trained classifier (the teacher) into a shallower student written to MODEL/student: the teacher's
    embeddings, every other layer (or `cfg.layers` evenly spaced) and head as the start, trained to match the
    teacher's class probabilities at `cfg.temperature` on `texts` (no labels needed: any texts of the domain, e.g.
    the training texts) with the word embeddings frozen. Returns the student's classifier.json."""
    import torch
    if not texts:
        raise HuaxiangError("distillation needs texts to learn from")
    teacher, tok, meta = load_classifier(model_dir, "fp32")
    if meta["method"] == "lora":
        teacher.encoder = teacher.encoder.merge_and_unload()
    deep = teacher.encoder.config.num_hidden_layers
    n = cfg.layers or max(1, deep // 2)
    if not 1 <= n < deep:
        raise HuaxiangError(f"a student has 1 to {deep - 1} layers (the teacher has {deep}), not {n}")
    keep = sorted({round(i * (deep - 1) / max(n - 1, 1)) for i in range(n)}) if n > 1 else [deep - 1]
    started = time.perf_counter()
    if progress:
        progress("the teacher reads the texts", 0, len(texts))
    soft = torch.as_tensor(_logits(teacher, tok, texts, meta["max_len"]) / cfg.temperature)
    student = teacher  # (pruned in place: the teacher's figures are all in `soft`)
    student.encoder.encoder.layer = torch.nn.ModuleList([student.encoder.encoder.layer[i] for i in keep])
    student.encoder.config.num_hidden_layers = len(keep)
    student.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    torch.manual_seed(cfg.seed)
    device = next(student.head.parameters()).device
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.01)
    rng = np.random.default_rng(cfg.seed)
    lengths = np.array([len(t) for t in texts])
    steps = math.ceil(len(texts) / cfg.batch_size)
    t2 = cfg.temperature ** 2
    for epoch in range(1, cfg.epochs + 1):
        student.train(True)
        for step, rows in enumerate(length_batches(rng.permutation(len(texts)), lengths, cfg.batch_size, rng)):
            _, batch = next(_batches(tok, [texts[j] for j in rows], meta["max_len"], len(rows), device))
            log_p = torch.log_softmax(student.logits(batch) / cfg.temperature, dim=-1)
            target = torch.softmax(soft[rows].to(device), dim=-1)
            loss = torch.nn.functional.kl_div(log_p, target, reduction="batchmean") * t2
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            if progress:
                progress(f"student epoch {epoch}/{cfg.epochs} loss {loss.item():.4f}", step + 1, steps)
    out = Path(model_dir) / STUDENT
    out.mkdir(parents=True, exist_ok=True)
    student.encoder.save_pretrained(str(out / "encoder"))
    tok.save_pretrained(str(out / "encoder"))
    torch.save(student.head.state_dict(), out / "head.pt")
    if (out / INT8).exists():
        (out / INT8).unlink()  # (an int8 of an earlier student would not match this one)
    smeta = {**{k: meta[k] for k in ("labels", "max_len", "prefix", "pooling")}, "method": "distilled",
             "base": str(Path(model_dir).resolve()), "teacher_layers": deep, "layers_kept": keep,
             "train_texts": len(texts), "train_seconds": time.perf_counter() - started,
             "trainable_parameters": sum(p.numel() for p in student.parameters()),
             "config": {k: v for k, v in asdict(cfg).items()}}
    (out / "classifier.json").write_text(json.dumps(smeta, indent=2, ensure_ascii=False))
    return smeta


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
