"""API keys: random tokens shown once, stored only as SHA-256 hashes, each with one scope.

Scopes nest: admin ⊃ write ⊃ read (a write key can read; only admin can delete users)."""
from __future__ import annotations

import hashlib
import secrets

import duckdb

from ..errors import HuaxiangError

SCOPES = ("read", "write", "admin")
KEYS_DDL = """CREATE TABLE IF NOT EXISTS api_keys (
    key_hash VARCHAR PRIMARY KEY, scope VARCHAR, label VARCHAR, created_at TIMESTAMP DEFAULT current_timestamp,
    revoked BOOLEAN DEFAULT false)"""


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def create_key(con: duckdb.DuckDBPyConnection, scope: str, label: str = "") -> str:
    """A new key of `scope`; only its hash is stored, so this is the one time it can be read."""
    if scope not in SCOPES:
        raise HuaxiangError(f"unknown scope {scope!r} (one of: {', '.join(SCOPES)})")
    con.execute(KEYS_DDL)
    key = "hx_" + secrets.token_urlsafe(32)
    con.execute("INSERT INTO api_keys (key_hash, scope, label) VALUES (?, ?, ?)", [_hash(key), scope, label])
    return key


def load_keys(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """hash -> scope of every live key (the server reads them once at start and on reload)."""
    con.execute(KEYS_DDL)
    return dict(con.execute("SELECT key_hash, scope FROM api_keys WHERE NOT revoked").fetchall())


def scope_of(keys: dict[str, str], key: str | None) -> str | None:
    return keys.get(_hash(key)) if key else None


def allows(have: str, need: str) -> bool:
    return SCOPES.index(have) >= SCOPES.index(need)


def header_key(request) -> str | None:
    """The key a request carries: `X-API-Key: …` or `Authorization: Bearer …`."""
    key = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if key is None and auth.lower().startswith("bearer "):
        key = auth[7:].strip()
    return key
