"""Item text vectors for a sequence file's items, from an items TSV (`item_id` + a text column:
`title`, `text` or `idgenrec_textid`), embedded by the configured encoder and cached on disk
(`$HUAXIANG_CACHE/item_text/<hash>.npy`) so that repeated runs do not embed again."""
from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import HuaxiangError
from ..ingest.readers import open_text
from ..models.seqrec.data import Sequences

TEXT_COLUMNS = ("title", "text", "idgenrec_textid")


def read_item_texts(path: str, data: Sequences) -> list[str]:
    """One text per item index (index 0 and items without text: "")."""
    try:
        with open_text(path) as f:
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            cols = reader.fieldnames or []
            column = next((c for c in TEXT_COLUMNS if c in cols), None)
            if "item_id" not in cols or column is None:
                raise HuaxiangError(f"{path}: needs an item_id column and one of {', '.join(TEXT_COLUMNS)} "
                                    f"(found {', '.join(cols) or 'nothing'})")
            by_id = {row["item_id"]: (row.get(column) or "").strip() for row in reader}
    except (OSError, UnicodeDecodeError) as exc:
        raise HuaxiangError(f"cannot read {path}: {exc}") from exc
    return [""] + [by_id.get(item, "") for item in data.items]


def item_vectors(texts: list[str], encoder, progress: Callable[[int, int], None] | None = None,
                 batch: int = 256) -> np.ndarray:
    """(len(texts), dim) passage vectors; empty texts get zero vectors. Cached by content + model."""
    key = hashlib.md5((encoder.name + "\n" + "\n".join(texts)).encode()).hexdigest()
    cache = Path(os.environ.get("HUAXIANG_CACHE", Path.home() / ".cache" / "huaxiang")) / "item_text" / f"{key}.npy"
    if cache.exists():
        return np.load(cache)
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    todo = [i for i, t in enumerate(texts) if t]
    for start in range(0, len(todo), batch):
        idx = todo[start:start + batch]
        out[idx] = encoder.encode([texts[i] for i in idx], "passage")
        if progress:
            progress(min(start + batch, len(todo)), len(todo))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, out)
    return out
