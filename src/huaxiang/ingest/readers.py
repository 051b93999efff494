"""Raw readers: turn a file into chunks of string columns, each row tagged with its line number.

A reader yields `Chunk`s. Rows it cannot even split into fields (a broken CSV line, invalid JSON)
come back as `Reject`s so that the caller can quarantine them with their line number.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import os
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from .. import schema
from ..errors import HuaxiangError

CHUNK_ROWS = 200_000  # read at call time: a reader given no chunk_rows uses the current value
Progress = Callable[[int], None]  # called with the number of bytes read so far


@dataclass
class Reject:
    line: int
    reason: str
    raw: str


@dataclass
class Chunk:
    table: pa.Table  # string columns + `_line`
    rejects: list[Reject] = field(default_factory=list)


class _Counting(io.RawIOBase):
    """Wraps a binary file and reports how many bytes of it have been read."""

    def __init__(self, f, progress: Progress | None):
        self.f, self.progress, self.n = f, progress, 0

    def readable(self):
        return True

    def readinto(self, b):
        n = self.f.readinto(b)
        self.n += n or 0
        if self.progress:
            self.progress(self.n)
        return n


class _Gunzip(io.RawIOBase):
    """Reads a gzip stream; a corrupt or truncated one is a HuaxiangError naming the file."""

    def __init__(self, f, path: str):
        self.f, self.path = gzip.GzipFile(fileobj=f), path

    def readable(self):
        return True

    def readinto(self, b):
        try:
            return self.f.readinto(b)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise HuaxiangError(f"{self.path}: not a readable gzip file ({exc})") from exc


def open_text(path: str, progress: Progress | None = None) -> io.TextIOBase:
    """Opens a plain or gzip file as UTF-8 text; undecodable bytes become U+FFFD (then quarantined)."""
    if not os.path.isfile(path):
        raise HuaxiangError(f"file not found: {path}")
    raw = io.BufferedReader(_Counting(open(path, "rb"), progress), buffer_size=1 << 20)
    stream = io.BufferedReader(_Gunzip(raw, path), buffer_size=1 << 16) if _is_gzip(path) else raw
    return io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")


def _is_gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _rows_table(names: list[str], rows: list[list[str]], lines: list[int]) -> pa.Table:
    """Rows of fields (all of len(names)) as a table of text columns plus `_line`."""
    columns = dict(zip(names, map(list, zip(*rows)))) if rows else {n: [] for n in names}
    return text_table(columns, lines)


def text_table(columns: dict[str, list], lines: list[int]) -> pa.Table:
    data = {name: pa.array(values, type=pa.string()) for name, values in columns.items()}
    data["_line"] = pa.array(lines, type=pa.int64())
    return pa.table(data)


def csv_chunks(path: str, delimiter: str = ",", header: bool | list[str] = True,
               progress: Progress | None = None, chunk_rows: int | None = None) -> Iterator[Chunk]:
    """CSV/TSV rows as chunks. `header=True` reads names from the first line; a list names them."""
    chunk_rows = chunk_rows or CHUNK_ROWS
    with open_text(path, progress) as f:
        reader = csv.reader(f, delimiter=delimiter)
        pending: list[list[str]] = []
        try:
            first = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise HuaxiangError(f"{path}: line 1: unreadable ({exc})") from exc
        if header is True:
            names = [h.strip() for h in first]
        else:  # given names; a first line equal to them is a header and skipped
            names = list(header)
            if [x.strip().lower() for x in first] != [n.lower() for n in names]:
                pending.append(first)
        if len(set(names)) != len(names):
            raise HuaxiangError(f"{path}: line 1: duplicate column names in header {names}")
        width = len(names)
        rows: list[list[str]] = []
        lines: list[int] = []
        rejects: list[Reject] = []
        start = 1 if pending else reader.line_num + 1
        while True:
            try:
                row = pending.pop() if pending else next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                rejects.append(Reject(start, f"unreadable CSV line: {exc}", ""))
                start = reader.line_num + 1
                continue
            if len(row) == width:
                rows.append(row)
                lines.append(start)
            elif row:  # blank lines are skipped, a row with the wrong field count is not
                rejects.append(Reject(start, f"expected {width} fields, found {len(row)}",
                                      delimiter.join(row)[:1000]))
            start = reader.line_num + 1
            if len(rows) >= chunk_rows:
                yield Chunk(_rows_table(names, rows, lines), rejects)
                rows, lines, rejects = [], [], []
        yield Chunk(_rows_table(names, rows, lines), rejects)


def whitespace_chunks(path: str, names: list[str], progress: Progress | None = None,
                      chunk_rows: int | None = None) -> Iterator[Chunk]:
    """Whitespace-separated columns (CDNOW-style); a header line equal to `names` is skipped."""
    chunk_rows = chunk_rows or CHUNK_ROWS
    rows, lines, rejects = [], [], []
    with open_text(path, progress) as f:
        for n, text in enumerate(f, start=1):
            parts = text.split()
            if not parts or (n == 1 and [p.lower() for p in parts] == [x.lower() for x in names]):
                continue
            if len(parts) == len(names):
                rows.append(parts)
                lines.append(n)
            else:
                rejects.append(Reject(n, f"expected {len(names)} fields, found {len(parts)}", text[:1000]))
            if len(rows) >= chunk_rows:
                yield Chunk(_rows_table(names, rows, lines), rejects)
                rows, lines, rejects = [], [], []
    yield Chunk(_rows_table(names, rows, lines), rejects)


def json_text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def clean_text(text: str) -> str:
    """`text` as valid Unicode: a lone surrogate (which JSON's `\\ud800` escapes can hold) becomes U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


NUMERIC = ("DOUBLE", "BIGINT", "TIMESTAMP")  # columns that also take a JSON number


def _json_kind(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _record_value(col: schema.Column, value) -> tuple[str | None, str | None]:
    """One value of an in-memory record -> (its text, the fault found in it or None). A text column takes only a
    JSON string; a numeric or timestamp column a string or a number; nothing takes a boolean, array or object."""
    if value is None:
        return None, None
    kind = _json_kind(value)
    fault = None
    if kind == "string":
        text = value
    elif kind == "number" and col.type in NUMERIC:
        try:
            text = str(value)
        except ValueError:  # an int of more than 4300 digits
            return None, f"{col.name}: a number too long to read"
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (ValueError, RecursionError):
            text = None
        wanted = "a string or a number" if col.type in NUMERIC else "a string"
        fault = f"{col.name} must be {wanted}, not a JSON {kind}"
    if text is not None:
        clean = clean_text(text)
        if clean is not text and fault is None:
            fault = f"invalid UTF-8 in {col.name} (a lone surrogate)"
        text = clean
    return text, fault


def records_chunk(records: list, table: schema.Table) -> Chunk:
    """Records already in memory (parsed JSON: an API batch, stream messages) as one chunk of `table`'s columns,
    `_line` being the position from 1; keys that are not columns of `table` are ignored. A record that is not an
    object is a Reject. A value of the wrong JSON type, or holding a lone surrogate, is named in `_pre_field` and
    `_pre_reason` (the first in column order), for validation to quarantine the row with that reason."""
    cols: dict[str, list] = {c.name: [] for c in table.columns}
    pre_field, pre_reason, lines, rejects = [], [], [], []
    for n, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            try:
                raw = "null" if record is None else clean_text(json_text(record))[:1000]
            except (TypeError, ValueError, RecursionError):  # not JSON-like at all
                raw = clean_text(repr(record))[:1000]
            rejects.append(Reject(n, "an event must be a JSON object", raw))
            continue
        first = None
        for col in table.columns:
            text, fault = _record_value(col, record.get(col.name))
            cols[col.name].append(text)
            if fault and first is None:
                first = (col.name, fault)
        pre_field.append(first[0] if first else None)
        pre_reason.append(first[1] if first else None)
        lines.append(n)
    return Chunk(text_table({**cols, "_pre_field": pre_field, "_pre_reason": pre_reason}, lines), rejects)


def jsonl_chunks(path: str, progress: Progress | None = None,
                 chunk_rows: int | None = None) -> Iterator[Chunk]:
    """JSON lines: one object per line; nested values are kept as JSON text.

    Every chunk carries every key seen so far in the file (NULL where a record lacks it), so that
    a key missing from a later chunk, or a last chunk of rejects only, maps like the earlier ones."""
    chunk_rows = chunk_rows or CHUNK_ROWS
    records, lines, rejects = [], [], []
    seen: dict[str, None] = {}

    def flush():
        for r in records:
            seen.update(dict.fromkeys(r))
        cols = {k: [json_text(r.get(k)) for r in records] for k in sorted(seen)}
        return Chunk(text_table(cols, lines), rejects)

    with open_text(path, progress) as f:
        for n, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except (ValueError, RecursionError) as exc:  # ValueError: also a number over 4300 digits
                rejects.append(Reject(n, f"invalid JSON: {str(exc)[:200]}", text[:1000]))
                continue
            if "\\ud" in text.lower():  # a lone surrogate escape is no character: U+FFFD, then quarantined
                obj = json.loads(json.dumps(obj, ensure_ascii=False)
                                 .encode("utf-8", "surrogatepass").decode("utf-8", "replace"))
            if not isinstance(obj, dict):
                rejects.append(Reject(n, "a JSON line must be an object", text[:1000]))
                continue
            records.append(obj)
            lines.append(n)
            if len(records) >= chunk_rows:
                yield flush()
                records, lines, rejects = [], [], []
    yield flush()


def parquet_chunks(path: str, progress: Progress | None = None,
                   chunk_rows: int | None = None) -> Iterator[Chunk]:
    """Parquet row groups as string columns; `_line` is the 1-based row number."""
    chunk_rows = chunk_rows or CHUNK_ROWS
    if not os.path.isfile(path):
        raise HuaxiangError(f"file not found: {path}")
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise HuaxiangError(f"{path}: not a readable Parquet file ({exc})") from exc
    total, row = os.path.getsize(path), 0
    for batch in pf.iter_batches(batch_size=chunk_rows):
        cols = {}
        for name, col in zip(batch.schema.names, batch.columns):
            if pa.types.is_timestamp(col.type):
                cols[name] = col.cast(pa.string())
            elif pa.types.is_nested(col.type):
                cols[name] = pa.array([json_text(v) for v in col.to_pylist()], type=pa.string())
            elif pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type) \
                    or pa.types.is_fixed_size_binary(col.type):  # undecodable bytes become U+FFFD
                cols[name] = pa.array([None if v is None else v.decode("utf-8", "replace")
                                       for v in col.to_pylist()], type=pa.string())
            else:
                cols[name] = col.cast(pa.string())
        n = batch.num_rows
        cols["_line"] = pa.array(range(row + 1, row + n + 1), type=pa.int64())
        row += n
        if progress:
            progress(int(total * row / max(pf.metadata.num_rows, 1)))
        yield Chunk(pa.table(cols))
