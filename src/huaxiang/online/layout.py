"""The online store's layout in Redis: what each key holds, how a user's recommendation context is encoded, and the
versions a publish writes and switches.

Everything lives under `hx:`. A tenant's data is versioned: a publish writes version N+1 beside the served N, then
switches `hx:current` (tenant -> N) in one MULTI/EXEC, so a reader that takes N once per request never mixes two
builds; the old version is removed after a grace period (readers re-read the pointer every `POINTER_SECONDS`).

  hx:current                 hash   tenant -> the version served (the only pointer readers follow)
  hx:pending                 hash   tenant -> the version a publish is writing (the writer updates both)
  hx:T:seq                   string INCR gives the tenant's next version
  hx:T:vN:meta               hash   state, source, fingerprint, users, bytes, model and search blob ids, created_at
  hx:T:vN:u:<user id>        hash   doc (the exact bytes of GET /v1/users/{id}/profile), ctx (what the recommender
                                    needs, `encode_ctx`), week (7×24 event counts, `encode_week`), h (content hash),
                                    seq (the writer's: the stream entry its doc is up to, `live.py`)
  hx:T:vN:ids                zset   every user id (score 0): the pages' finder reads it by prefix
  hx:T:vN:seg                string the tenant's entry of the segment report (JSON)
  hx:T:vN:dp                 hash   what a private segment report is computed from (`encode_private`)
  hx:blob:<sha256>           hash   content-addressed artefacts (the recommender's files, a search index): shared
                                    by versions and tenants, written once, removed when nothing refers to them
  hx:keys                    hash   key hash -> the key's record (JSON); hx:keys:rev counts changes
  hx:sess:<sha256 of token>  string the hash of the key behind a pages session (expires with it)
  hx:forget:pending          set    users whose deletion is queued for the writer
  hx:live:dirty              hash   user -> the stream entry of their latest event not yet refreshed (`live.py`)
  hx:publish:lock            string held by the one publish running (expires a minute after its last batch)
  hx:experiments             string the running experiments (JSON: `experiments.catalog` listings with their salt
                                    and each variant's recommender blob id), written by `huaxiang publish` and by
                                    the server that holds the store when it starts or stops one
  huaxiang:events            stream events (`event`) and deletions (`forget`) for the one writer

T is `t.` + the tenant's name percent-quoted (`t.` alone for the default tenant ''), so no tenant name can reach
into another's keys; a user id is always the last part of its key and is stored as it is.
"""
from __future__ import annotations

import hashlib
import json
import time
from itertools import chain
from urllib.parse import quote

from ..errors import HuaxiangError

CURRENT = b"hx:current"
PENDING = b"hx:pending"
KEYS = b"hx:keys"  # (serve/keys.py RedisKeys keeps the key table)
KEYS_REV = b"hx:keys:rev"
FORGET_PENDING = b"hx:forget:pending"
LIVE_DIRTY = b"hx:live:dirty"
PUBLISH_LOCK = b"hx:publish:lock"
EXPERIMENTS = b"hx:experiments"
STREAM = "huaxiang:events"
POINTER_SECONDS = 0.5  # how often a reader re-reads hx:current and hx:keys:rev
GRACE_SECONDS = 5.0  # an old version outlives its switch by this (≥ several pointer re-reads)
BLOB_CHUNK = 64 * 1024 * 1024  # a blob's file is stored as fields name#0, name#1, … of at most this (Redis values ≤ 512 MB)


def connect(url: str):
    """A Redis client (bytes in, bytes out) for a `redis://host:port/db` URL, checked: HuaxiangError in one line
    when it cannot be reached."""
    import redis
    try:
        r = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30)
        r.ping()
    except (redis.RedisError, ValueError) as exc:
        raise HuaxiangError(f"cannot reach the online store {url!r}: {exc}") from None
    return r


def tenant_part(tenant: str) -> str:
    return "t." + quote(tenant, safe="")


def version_prefix(tenant: str, version: int) -> bytes:
    return f"hx:{tenant_part(tenant)}:v{int(version)}:".encode()


def user_key(tenant: str, version: int, user_id: str) -> bytes:
    return version_prefix(tenant, version) + b"u:" + user_id.encode("utf-8", "surrogatepass")


def ids_key(tenant: str, version: int) -> bytes:
    return version_prefix(tenant, version) + b"ids"


def meta_key(tenant: str, version: int) -> bytes:
    return version_prefix(tenant, version) + b"meta"


def seg_key(tenant: str, version: int) -> bytes:
    return version_prefix(tenant, version) + b"seg"


def dp_key(tenant: str, version: int) -> bytes:
    return version_prefix(tenant, version) + b"dp"


def seq_key(tenant: str) -> bytes:
    return f"hx:{tenant_part(tenant)}:seq".encode()


def blob_key(blob_id: str) -> bytes:
    return b"hx:blob:" + blob_id.encode()


def session_key(token_hash: str) -> bytes:
    return b"hx:sess:" + token_hash.encode()


def content_hash(*parts: bytes) -> bytes:
    """A short hash of a user's fields: a publish or writer that would write the same bytes writes nothing."""
    return hashlib.blake2b(b"".join(len(p).to_bytes(8, "little") + p for p in parts), digest_size=12
                           ).hexdigest().encode()


def encode_ctx(history: list[tuple[str, str]], liked: list[str], queries: list[str], segment: str | None,
               top_category: str | None) -> bytes:
    """What the recommender and search need of a user (item ids, not indices, so that a new model does not
    invalidate it): history [(item id, event type)] oldest first, items reviewed well, latest searches first."""
    return _CTX_JSON.encode({"h": [list(x) for x in history], "l": list(liked), "q": list(queries), "s": segment,
                             "c": top_category}).encode()


_CTX_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


def decode_ctx(raw: bytes | None) -> dict:
    return json.loads(raw) if raw else {"h": [], "l": [], "q": [], "s": None, "c": None}


def encode_week(grid: list[list[int]]) -> bytes:
    """A 7 × 24 grid of event counts (weekday × hour, in the profile's own UTC offset) as 168 numbers."""
    return ",".join(map(str, map(int, chain.from_iterable(grid)))).encode()


def decode_week(raw: bytes | None) -> list[list[int]]:
    values = [int(v) for v in raw.split(b",")] if raw else [0] * 168
    return [values[d * 24:(d + 1) * 24] for d in range(7)]


def encode_private(rules: list[tuple[str, str, int]], cells: list[tuple]) -> dict:
    """A tenant's segment rules (segment, definition, size) and value-tier cells (tier, segment, every user's CLV)
    as hash fields: `rules` and `cells` JSON, `v:<i>` the i-th cell's CLVs as float64 bytes."""
    import numpy as np
    return {"rules": json.dumps(rules, ensure_ascii=False), "cells": json.dumps([[t, g] for t, g, _ in cells]),
            **{f"v:{i}": np.asarray(v, dtype="<f8").tobytes() for i, (_, _, v) in enumerate(cells)}}


def decode_private(raw: dict) -> tuple[list[tuple], list[tuple]]:
    import numpy as np
    if not raw:
        return [], []
    cells = json.loads(raw[b"cells"])
    return ([tuple(r) for r in json.loads(raw[b"rules"])],
            [(t, g, np.frombuffer(raw[f"v:{i}".encode()], dtype="<f8")) for i, (t, g) in enumerate(cells)])


def _int_map(raw: dict) -> dict[str, int]:
    return {k.decode("utf-8", "surrogatepass"): int(v) for k, v in raw.items()}


def current(r) -> dict[str, int]:
    """tenant -> the version served."""
    return _int_map(r.hgetall(CURRENT))


def pending(r) -> dict[str, int]:
    """tenant -> the version being written by a publish."""
    return _int_map(r.hgetall(PENDING))


def live_versions(r, tenant: str) -> list[int]:
    """The versions a write for this tenant must reach: the served one and the one being published."""
    enc = tenant.encode("utf-8", "surrogatepass")
    cur, pend = r.hget(CURRENT, enc), r.hget(PENDING, enc)
    return sorted({int(v) for v in (cur, pend) if v is not None})


def begin(r, tenant: str, source: str) -> int:
    """A new version of `tenant`, marked pending (a writer also updates it from now on)."""
    version = int(r.incr(seq_key(tenant)))
    with r.pipeline(transaction=True) as p:
        p.hset(meta_key(tenant, version), mapping={"state": "writing", "source": source,
                                                   "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        p.hset(PENDING, tenant.encode("utf-8", "surrogatepass"), version)
        p.execute()
    return version


def switch(r, versions: dict[str, int]) -> dict[str, int | None]:
    """Serve `versions` (tenant -> N) from now on, every tenant in one step; returns the versions they replace."""
    enc = {t.encode("utf-8", "surrogatepass"): v for t, v in versions.items()}
    with r.pipeline(transaction=True) as p:
        for t in enc:
            p.hget(CURRENT, t)
        before = p.execute()
    with r.pipeline(transaction=True) as p:
        for t, v in versions.items():
            p.hset(meta_key(t, v), "state", "ready")
        p.hset(CURRENT, mapping=enc)
        p.hdel(PENDING, *enc)
        p.execute()
    return {t: int(b) if b is not None else None for t, b in zip(versions, before)}


def drop_version(r, tenant: str, version: int, batch: int = 1_000) -> int:
    """Removes every key of one version (UNLINK: freed in the background); returns how many."""
    n, pattern = 0, version_prefix(tenant, version) + b"*"
    doomed = []
    for key in r.scan_iter(match=pattern, count=batch):
        doomed.append(key)
        if len(doomed) >= batch:
            n += r.unlink(*doomed)
            doomed = []
    if doomed:
        n += r.unlink(*doomed)
    return n


def blob_id(files: dict[str, bytes]) -> str:
    """The content address of a set of named files (sha256 over names and contents)."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return h.hexdigest()


def write_blob(r, files: dict[str, bytes]) -> str:
    """Stores named files under their content address, unless already there; returns the address."""
    bid = blob_id(files)
    key = blob_key(bid)
    if r.exists(key):
        return bid
    with r.pipeline(transaction=False) as p:
        for name, data in files.items():
            parts = [data[i:i + BLOB_CHUNK] for i in range(0, len(data), BLOB_CHUNK)] or [b""]
            for k, part in enumerate(parts):
                p.hset(key + b":part", f"{name}#{k}", part)
            p.execute()
    r.rename(key + b":part", key)  # the blob appears whole or not at all
    return bid


def read_blob(r, bid: str) -> dict[str, bytes]:
    """The named files of a blob (KeyError: no such blob)."""
    raw = r.hgetall(blob_key(bid))
    if not raw:
        raise KeyError(bid)
    files: dict[str, list[tuple[int, bytes]]] = {}
    for field, data in raw.items():
        name, _, k = field.decode().rpartition("#")
        files.setdefault(name, []).append((int(k), data))
    return {name: b"".join(d for _, d in sorted(parts)) for name, parts in files.items()}
