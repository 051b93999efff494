"""Continued pretraining: masked-language-model (MLM) training of the encoder on the platform's own texts (item
titles, reviews, search queries; Chinese and English), so that fine-tuning and embeddings start from a model that
has read them.

The encoder is the converted multilingual-e5-small (`text.convert`); its MLM head is new (a dense layer, GELU and
layer norm before the output layer, whose weights are the word embeddings, tied as in BERT), so the first steps
mostly train the head. Masking is BERT's: 15% of the non-special tokens are chosen, 80% of those become the mask
token, 10% a random token, 10% stay. The loss is computed on the chosen tokens only (the output layer spans the
250k-token vocabulary: scoring every position would cost ~7× more).

Held-out perplexity: a seeded sample of the texts (5%, at most `holdout`) is never trained on; its perplexity —
exp of the mean cross-entropy over its masked tokens, the same masks every time — is measured before training,
at every checkpoint and at the end.

Checkpoints: every `checkpoint_every` steps the encoder, the head, the optimizer and scheduler states and the step
are written to OUT/checkpoint; `resume` continues such a run where it stopped, to `steps` in all. Batches and masks
are functions of (seed, step), and the learning rate is constant after a fixed warm-up, so a resumed run trains as
the uninterrupted run would have, also when `steps` grows. The result is
OUT/encoder (a transformers checkpoint with its tokenizer: `huaxiang train classifier --init OUT`) and
OUT/pretrain.json.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import HuaxiangError
from .classifier import PREFIX, _device

CHECKPOINT = "checkpoint"


@dataclass
class PretrainConfig:
    steps: int = 1_000
    batch_size: int = 32
    max_len: int = 64
    lr: float = 5e-5
    warmup: int = 100  # steps of linear warm-up, then a constant rate (so --steps can grow on --resume)
    mask_prob: float = 0.15
    checkpoint_every: int = 200
    holdout: int = 1_000  # held-out texts for perplexity (at most 5% of them)
    seed: int = 0


def store_texts(con, limit: int | None = None) -> list[str]:
    """The store's distinct item titles, review texts and search queries (non-empty), in a fixed order."""
    rows = con.execute("""
        SELECT DISTINCT text FROM (
            SELECT title AS text FROM items UNION ALL SELECT text FROM reviews
            UNION ALL SELECT query FROM events WHERE type = 'search')
        WHERE text IS NOT NULL AND length(trim(text)) > 0 ORDER BY hash(text), text""" +
                       (f" LIMIT {int(limit)}" if limit else "")).fetchall()
    return [r[0] for r in rows]


def read_texts(paths: list[str], limit: int | None = None) -> list[str]:
    """One text per non-empty line of each file (plain or .gz)."""
    from ..ingest.readers import open_text
    texts: list[str] = []
    for path in paths:
        try:
            with open_text(path) as f:
                texts += [line.strip() for line in f if line.strip()]
        except UnicodeDecodeError as exc:
            raise HuaxiangError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return texts[:limit] if limit else texts


class MLMHead:
    """BERT's prediction head over the encoder's hidden states, its output layer tied to the word embeddings."""

    def __init__(self, encoder):
        import torch
        hidden = encoder.config.hidden_size
        self.embeddings = encoder.embeddings.word_embeddings
        self.module = torch.nn.ModuleDict({
            "dense": torch.nn.Linear(hidden, hidden),
            "norm": torch.nn.LayerNorm(hidden, eps=encoder.config.layer_norm_eps)})
        self.bias = torch.nn.Parameter(torch.zeros(self.embeddings.num_embeddings))

    def __call__(self, states):
        import torch
        h = self.module["norm"](torch.nn.functional.gelu(self.module["dense"](states)))
        return h @ self.embeddings.weight.T + self.bias

    def to(self, device):
        self.module.to(device)
        self.bias.data = self.bias.data.to(device)
        return self

    def parameters(self):
        return list(self.module.parameters()) + [self.bias]

    def state_dict(self) -> dict:
        return {**{k: v.detach().cpu() for k, v in self.module.state_dict().items()}, "bias": self.bias.detach().cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.bias.data.copy_(state["bias"])
        self.module.load_state_dict({k: v for k, v in state.items() if k != "bias"})


def mask_tokens(batch, tok, prob: float, generator):
    """BERT masking of `batch` (input_ids, attention_mask, …): (input ids to feed, the positions chosen, their true
    ids). Special tokens and padding are never chosen."""
    import torch
    ids = batch["input_ids"]
    special = torch.zeros_like(ids, dtype=torch.bool)
    for sid in tok.all_special_ids:
        special |= ids == sid
    eligible = (batch["attention_mask"] == 1) & ~special
    chosen = (torch.rand(ids.shape, generator=generator) < prob) & eligible
    if not chosen.any():  # (a batch of very short texts: one token at least)
        first = eligible.nonzero()[:1]
        chosen[tuple(first.T)] = True
    fed = ids.clone()
    roll = torch.rand(ids.shape, generator=generator)
    fed[chosen & (roll < 0.8)] = tok.mask_token_id
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    fed[swap] = torch.randint(len(tok), ids.shape, generator=generator)[swap]
    return fed, chosen, ids[chosen]


def _tokens(tok, texts: list[str], max_len: int):
    return tok([PREFIX + t for t in texts], padding=True, truncation=True, max_length=max_len, return_tensors="pt")


def mlm_loss(encoder, head, tok, texts: list[str], cfg: PretrainConfig, generator, device):
    """The mean cross-entropy over the masked tokens of `texts`, and how many there were."""
    import torch
    batch = _tokens(tok, texts, cfg.max_len)
    fed, chosen, truth = mask_tokens(batch, tok, cfg.mask_prob, generator)
    states = encoder(input_ids=fed.to(device), attention_mask=batch["attention_mask"].to(device)).last_hidden_state
    logits = head(states[chosen.to(device)])
    return torch.nn.functional.cross_entropy(logits.float(), truth.to(device)), int(chosen.sum())


def perplexity(encoder, head, tok, texts: list[str], cfg: PretrainConfig, device) -> float:
    """exp(mean cross-entropy) over the masked tokens of `texts`, masked the same way every call."""
    import torch
    if not texts:
        return float("nan")
    encoder.train(False)
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(texts), 64):
            gen = torch.Generator().manual_seed(cfg.seed * 7_919 + i)
            loss, n = mlm_loss(encoder, head, tok, texts[i:i + 64], cfg, gen, device)
            total, count = total + loss.item() * n, count + n
    encoder.train(True)
    return math.exp(total / max(count, 1))


def split_texts(texts: list[str], cfg: PretrainConfig) -> tuple[list[str], list[str]]:
    """(training texts, held-out texts): a seeded 5% (at most `cfg.holdout`) held out."""
    order = np.random.default_rng(cfg.seed).permutation(len(texts))
    n_out = min(cfg.holdout, len(texts) // 20)
    return [texts[i] for i in order[n_out:]], [texts[i] for i in order[:n_out]]


def batch_rows(n: int, step: int, cfg: PretrainConfig) -> np.ndarray:
    """The rows of step `step` (from 0): epochs of seeded permutations, a function of (seed, step) only."""
    per_epoch = max(1, n // cfg.batch_size)
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([cfg.seed, epoch]).permutation(n)
    return order[k * cfg.batch_size:(k + 1) * cfg.batch_size]


def pretrain(texts: list[str], out_dir: str, cfg: PretrainConfig, resume: str | None = None,
             progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Continued MLM pretraining of the encoder on `texts` for `cfg.steps` steps in all (`resume`: a folder whose
    checkpoint to continue); writes OUT/encoder, OUT/checkpoint and OUT/pretrain.json; returns pretrain.json."""
    import torch
    from transformers import get_constant_schedule_with_warmup

    from .convert import convert, load_hf
    if len(texts) < 20:
        raise HuaxiangError(f"continued pretraining needs at least 20 texts, got {len(texts)}")
    out = Path(out_dir)
    start_step, state, base, history = 0, None, None, []
    if resume:
        saved = Path(resume) / CHECKPOINT
        if not (saved / "state.pt").exists():
            raise HuaxiangError(f"--resume {resume}: no checkpoint there ({saved}/state.pt missing)")
        state = torch.load(saved / "state.pt", weights_only=False)
        old = PretrainConfig(**state["config"])
        if {f.name: getattr(old, f.name) for f in fields(old) if f.name != "steps"} != \
                {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name != "steps"}:
            raise HuaxiangError(f"--resume {resume}: the checkpoint was made with other settings "
                                f"({json.dumps(state['config'])}); give the same ones (only --steps may change)")
        start_step, base, history = state["step"], state["base"], state["history"]
        tok, encoder = load_hf(saved / "encoder")
    else:
        base = str(convert())
        tok, encoder = load_hf(base)
    if tok.mask_token is None:  # (the converted tokenizer names no mask token: XLM-R's is in its vocabulary)
        tok.add_special_tokens({"mask_token": "<mask>"})
    if tok.mask_token_id is None or tok.mask_token_id >= encoder.config.vocab_size:
        raise HuaxiangError(f"the tokenizer of {base} has no mask token in the encoder's vocabulary")
    torch.manual_seed(cfg.seed)
    device = _device()
    encoder.to(device).train(True)
    head = MLMHead(encoder).to(device)
    if state is not None:
        head.load_state_dict(state["head"])
    train, held_out = split_texts(texts, cfg)
    params = list(encoder.parameters()) + head.parameters()  # (the output layer is the word embeddings)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    sched = get_constant_schedule_with_warmup(opt, cfg.warmup)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    before = state["perplexity_before"] if state is not None else perplexity(encoder, head, tok, held_out, cfg,
                                                                             device)
    started, spent = time.perf_counter(), state["seconds"] if state is not None else 0.0

    def save(step: int, ppl: float) -> None:
        folder = out / CHECKPOINT
        folder.mkdir(parents=True, exist_ok=True)
        encoder.save_pretrained(str(folder / "encoder"))
        tok.save_pretrained(str(folder / "encoder"))
        torch.save({"step": step, "config": asdict(cfg), "base": base, "head": head.state_dict(),
                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "perplexity_before": before,
                    "history": history, "seconds": spent + time.perf_counter() - started}, folder / "state.pt.tmp")
        (folder / "state.pt.tmp").replace(folder / "state.pt")  # (a crash mid-write keeps the previous one)

    loss_value = float("nan")
    for step in range(start_step, cfg.steps):
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        loss, _ = mlm_loss(encoder, head, tok, [train[i] for i in batch_rows(len(train), step, cfg)], cfg, gen,
                           device)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        loss_value = loss.item()
        if progress:
            progress(f"step {step + 1}/{cfg.steps} loss {loss_value:.3f}", step + 1, cfg.steps)
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            ppl = perplexity(encoder, head, tok, held_out, cfg, device)
            history.append({"step": step + 1, "loss": loss_value, "held_out_perplexity": ppl,
                            "seconds": spent + time.perf_counter() - started})
            if progress:
                progress(f"step {step + 1}/{cfg.steps}: held-out perplexity {ppl:.2f} (checkpoint)", step + 1,
                         cfg.steps)
            save(step + 1, ppl)
    after = perplexity(encoder, head, tok, held_out, cfg, device)
    history.append({"step": cfg.steps, "loss": loss_value, "held_out_perplexity": after,
                    "seconds": spent + time.perf_counter() - started})
    save(cfg.steps, after)
    encoder.save_pretrained(str(out / "encoder"))
    tok.save_pretrained(str(out / "encoder"))
    meta = {"base": base, "texts": len(texts), "train_texts": len(train), "held_out_texts": len(held_out),
            "steps": cfg.steps, "resumed_from_step": start_step if resume else None,
            "held_out_perplexity_before": before, "held_out_perplexity_after": after,
            "train_seconds": spent + time.perf_counter() - started, "history": history, "config": asdict(cfg)}
    (out / "pretrain.json").write_text(json.dumps(meta, indent=2))
    return meta
