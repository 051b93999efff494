"""The model registry of a store: every trained model kept as a numbered version, one of each kind promoted.

`<store>.models/registry.json` lists the versions — kind (recommender, classifier, …), name (the model family,
e.g. itemknn), version (1, 2, … per kind), created_at (UTC), data_from / data_to (the time range of the data it
learned from), params, metrics (validation) and path (its folder, relative to `<store>.models` when inside it) —
and, per kind, the promotion history: the promoted version is its last entry, `promote` appends, `rollback`
drops the last entry and so returns to the one promoted before. A version's folder is `<kind>/v<N>/`.

Every read-modify-write holds an exclusive lock on `registry.lock` (fcntl, so that concurrent trainings in
threads or processes on one machine never lose a version) and replaces the file atomically (written beside,
then renamed), so that a reader sees the old list or the new one, never half of one.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from ..errors import HuaxiangError

FILE = "registry.json"


def root(db: str) -> Path:
    """The folder beside the store that holds its models (`<db>.models`)."""
    return Path(f"{db}.models")


def _read(db: str) -> dict:
    path = root(db) / FILE
    if not path.exists():
        return {"versions": [], "promoted": {}, "next": {}}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HuaxiangError(f"cannot read the model registry {path}: {exc}") from exc


def _write(db: str, data: dict) -> None:
    path = root(db) / FILE
    tmp = path.with_name(f".{FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False))
    os.replace(tmp, path)


@contextmanager
def _locked(db: str):
    """The registry's content, under an exclusive lock; what the block leaves in it is written back."""
    root(db).mkdir(parents=True, exist_ok=True)
    with open(root(db) / "registry.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = _read(db)
            yield data
            _write(db, data)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _listed(data: dict, kind: str | None = None) -> list[dict]:
    """The versions (of `kind`), each with `promoted` (whether it is the promoted one of its kind) added."""
    current = {k: h[-1] for k, h in data["promoted"].items() if h}
    return [{**v, "promoted": current.get(v["kind"]) == v["version"]}
            for v in data["versions"] if kind is None or v["kind"] == kind]


def new_version(db: str, kind: str, make_folder: bool = True) -> tuple[int, Path]:
    """Reserves the next version number of `kind` and makes its folder `<db>.models/<kind>/v<N>/` (unless
    `make_folder` is False); returns both. A reserved number that is never registered is simply skipped."""
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", kind):
        raise HuaxiangError(f"model kind {kind!r}: lower-case letters, digits, - and _ only")
    with _locked(db) as data:
        taken = max([v["version"] for v in data["versions"] if v["kind"] == kind], default=0)
        version = max(data["next"].get(kind, 1), taken + 1)
        data["next"][kind] = version + 1
    folder = root(db) / kind / f"v{version}"
    if make_folder:
        folder.mkdir(parents=True, exist_ok=False)
    return version, folder


def register(db: str, kind: str, name: str, version: int, params: dict, metrics: dict,
             data_from: str | None, data_to: str | None, promote: bool = True, path: str | None = None) -> dict:
    """Lists version `version` of `kind` (from `new_version`), promoted at once when `promote`; `path` is its
    folder when not `<kind>/v<N>` (a path outside `<db>.models` is kept absolute). Returns its entry."""
    where = Path(path).resolve() if path else root(db).resolve() / kind / f"v{version}"
    try:
        rel = where.relative_to(root(db).resolve()).as_posix()
    except ValueError:
        rel = str(where)
    entry = {"kind": kind, "name": name, "version": int(version),
             "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "data_from": data_from, "data_to": data_to, "params": params, "metrics": metrics, "path": rel}
    with _locked(db) as data:
        if any(v["kind"] == kind and v["version"] == version for v in data["versions"]):
            raise HuaxiangError(f"{kind} version {version} is already registered in {root(db) / FILE}")
        data["versions"].append(entry)
        data["next"][kind] = max(data["next"].get(kind, 1), version + 1)
        if promote:
            data["promoted"].setdefault(kind, []).append(version)
        return _listed(data, kind)[-1]


def register_folder(db: str, kind: str, name: str, path: str, params: dict, metrics: dict,
                    data_from: str | None = None, data_to: str | None = None, promote: bool = True) -> dict:
    """Lists a model already saved in `path` (e.g. a classifier's --out folder) as the next version of `kind`."""
    if not Path(path).is_dir():
        raise HuaxiangError(f"{path}: no such model folder to register")
    version, _ = new_version(db, kind, make_folder=False)
    return register(db, kind, name, version, params, metrics, data_from, data_to, promote, path=path)


def versions(db: str, kind: str | None = None) -> list[dict]:
    """Every registered version (of `kind`), oldest first, each with `promoted` (bool)."""
    return _listed(_read(db), kind)


def promoted(db: str, kind: str) -> dict | None:
    """The promoted version of `kind`, or None when none is."""
    return next((v for v in versions(db, kind) if v["promoted"]), None)


def folder(db: str, entry: dict) -> Path:
    """A version's folder."""
    p = Path(entry["path"])
    return p if p.is_absolute() else root(db) / p


def _describe(listed: list[dict], kind: str) -> str:
    if not listed:
        return f"no {kind} versions yet"
    shown = ", ".join(f"{v['version']} {v['name']}" + (" (promoted)" if v["promoted"] else "") for v in listed[-8:])
    return f"{kind} versions: {'…, ' if len(listed) > 8 else ''}{shown}"


def promote(db: str, kind: str, version: int) -> dict:
    """Makes `version` the promoted one of `kind` (the one before stays in the history for `rollback`)."""
    with _locked(db) as data:
        listed = _listed(data, kind)
        entry = next((v for v in listed if v["version"] == version), None)
        if entry is None:
            raise HuaxiangError(f"no {kind} version {version} in {root(db) / FILE} ({_describe(listed, kind)})")
        history = data["promoted"].setdefault(kind, [])
        if not history or history[-1] != version:
            history.append(version)
        return {**entry, "promoted": True}


def rollback(db: str, kind: str) -> dict:
    """Returns `kind` to the version promoted before the current one; returns that version's entry."""
    with _locked(db) as data:
        history = data["promoted"].get(kind, [])
        if len(history) < 2:
            raise HuaxiangError(f"no earlier promoted {kind} version to roll back to in {root(db) / FILE} "
                                f"({_describe(_listed(data, kind), kind)})")
        history.pop()
        return next(v for v in _listed(data, kind) if v["promoted"])


def resolve(db: str, kind: str, spec: str | None) -> dict:
    """The version `spec` names: None the promoted one; "3" or "@3" version 3; "itemknn" the promoted version
    when it is an itemknn, else the newest itemknn; "itemknn@3" version 3, which must be an itemknn."""
    listed = versions(db, kind)
    text = (spec or "").strip()
    if "@" in text:
        name, number = text.rsplit("@", 1)
    else:
        name, number = ("", text) if text.isdigit() else (text, "")
    if not text:
        found = next((v for v in listed if v["promoted"]), None)
    elif number:
        if not number.isdigit():
            raise HuaxiangError(f"{kind} {spec!r}: a version is a number, as in itemknn@3 or 3")
        found = next((v for v in listed if v["version"] == int(number) and (not name or v["name"] == name)), None)
    else:
        named = [v for v in listed if v["name"] == name]
        found = next((v for v in named if v["promoted"]), named[-1] if named else None)
    if found is None:
        what = f"{kind} version {spec!r}" if text else f"promoted {kind}"
        raise HuaxiangError(f"no {what} in {root(db) / FILE} ({_describe(listed, kind)})")
    return found
