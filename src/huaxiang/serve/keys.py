"""API keys: random tokens shown once, stored only as SHA-256 hashes, each with a public id, one scope, the tenants
it may see and an optional expiry.

Scopes nest: admin ⊃ write ⊃ read (a write key can read; only admin can delete users and manage keys). A key bound
to tenants reads and writes only those tenants' users and items (a user of another tenant is answered as unknown);
a key with no tenants is the platform's own, for every tenant. A tenant is the text before an id's first ':'
(`schema.tenant_of`); '' is the tenant of ids without one.
"""
from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import duckdb

from ..errors import HuaxiangError
from ..online.layout import KEYS, KEYS_REV
from ..schema import TENANT_SEPARATOR, is_tenant_name, tenant_of
from ..store import has_table

SCOPES = ("read", "write", "admin")
KEYS_DDL = """CREATE TABLE IF NOT EXISTS api_keys (
    key_hash VARCHAR PRIMARY KEY, scope VARCHAR, label VARCHAR, created_at TIMESTAMP DEFAULT current_timestamp,
    revoked BOOLEAN DEFAULT false)"""
# columns added after the first release: a store made before them gains them on first use
KEYS_MIGRATION = ("ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS id VARCHAR",
                  "ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS tenants VARCHAR[]",
                  "ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS expires_at TIMESTAMP",
                  "UPDATE api_keys SET id = 'k_' || left(key_hash, 12) WHERE id IS NULL")


@dataclass(frozen=True)
class Key:
    """What a key may do. `tenants` None: every tenant."""
    id: str
    scope: str
    tenants: frozenset[str] | None = None
    label: str = ""
    created_at: datetime | None = None
    expires_at: datetime | None = None
    revoked: bool = False

    def allows(self, need: str) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(need)

    def sees(self, user_or_item_id: str) -> bool:
        """May this key see the tenant of this user or item id?"""
        return self.tenants is None or tenant_of(user_or_item_id) in self.tenants

    def covers(self, tenants: frozenset[str] | None) -> bool:
        """Does this key see every tenant in `tenants` (None: all tenants)?"""
        return self.tenants is None or (tenants is not None and tenants <= self.tenants)

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and (now or datetime.now()) >= self.expires_at

    def listing(self) -> dict:
        """The key as `GET /v1/keys` and `huaxiang keys list --json` show it (never the key itself)."""
        return {"id": self.id, "scope": self.scope, "tenants": sorted(self.tenants) if self.tenants is not None else None,
                "label": self.label, "created_at": _iso(self.created_at), "expires_at": _iso(self.expires_at),
                "revoked": self.revoked}


def _iso(t: datetime | None) -> str | None:
    return t.isoformat(timespec="seconds") if t else None


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _ready(con: duckdb.DuckDBPyConnection) -> None:
    """The key table, made or brought up to date — only when it needs it: a change of the store's catalog makes
    DuckDB re-plan every prepared statement (the profile refresher's)."""
    have = {c for (c,) in con.execute("SELECT column_name FROM information_schema.columns "
                                      "WHERE table_name = 'api_keys'").fetchall()}
    if not {"id", "tenants", "expires_at"} <= have:
        con.execute(KEYS_DDL)
        for sql in KEYS_MIGRATION:
            con.execute(sql)
        try:  # (DuckDB 1.4.4 cannot replay this DDL from its write-ahead log: a server stopped before its next
            con.execute("CHECKPOINT")  # checkpoint left a store that would not open again)
        except duckdb.Error:
            pass  # another transaction is running: DuckDB checkpoints later by itself


def check_tenants(tenants: list[str] | None) -> frozenset[str] | None:
    """A key's tenants as given (None or empty: all tenants); a name holding ':' is an error."""
    if not tenants:
        return None
    for t in tenants:
        if not is_tenant_name(t):
            raise HuaxiangError(f"tenant {t!r}: a tenant is a name without '{TENANT_SEPARATOR}' nor NUL (at most "
                                "100 characters; '' is the tenant of ids without a namespace)")
    return frozenset(tenants)


def create_key(con: duckdb.DuckDBPyConnection, scope: str, label: str = "", tenants: list[str] | None = None,
               expires_in: timedelta | None = None) -> tuple[Key, str]:
    """A new key of `scope` for `tenants` (None: all): (its record, the key). Only the key's hash is stored, so this
    is the one time the key can be read."""
    record, key = new_key(scope, label, tenants, expires_in)
    _ready(con)
    con.execute("INSERT INTO api_keys (key_hash, scope, label, created_at, id, tenants, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", [key_hash(key), scope, label, record.created_at, record.id,
                                                 sorted(record.tenants) if record.tenants is not None else None,
                                                 record.expires_at])
    return record, key


def new_key(scope: str, label: str = "", tenants: list[str] | None = None,
            expires_in: timedelta | None = None) -> tuple[Key, str]:
    """A new key's record and the key itself, checked, not yet stored anywhere."""
    if scope not in SCOPES:
        raise HuaxiangError(f"unknown scope {scope!r} (one of: {', '.join(SCOPES)})")
    bound = check_tenants(tenants)
    if expires_in is not None and expires_in.total_seconds() <= 0:
        raise HuaxiangError("a key's lifetime must be positive")
    key, key_id = "hx_" + secrets.token_urlsafe(32), "k_" + secrets.token_hex(6)
    now = datetime.now().replace(microsecond=0)
    return Key(key_id, scope, bound, label, now, now + expires_in if expires_in else None), key


def _record(row) -> Key:
    key_id, scope, tenants, label, created, expires, revoked = row
    return Key(key_id, scope, frozenset(tenants) if tenants is not None else None, label or "", created, expires,
               bool(revoked))


COLUMNS = "id, scope, tenants, label, created_at, expires_at, revoked"


def list_keys(con: duckdb.DuckDBPyConnection) -> list[Key]:
    """Every key, revoked ones too, oldest first."""
    _ready(con)
    return [_record(r) for r in con.execute(f"SELECT {COLUMNS} FROM api_keys ORDER BY created_at, id").fetchall()]


def load_keys(con: duckdb.DuckDBPyConnection) -> dict[str, Key]:
    """hash -> record of every key not revoked (expiry is checked on use)."""
    _ready(con)
    return {h: _record(r) for h, *r in con.execute(f"SELECT key_hash, {COLUMNS} FROM api_keys WHERE NOT revoked")
            .fetchall()}


def revoke_key(con: duckdb.DuckDBPyConnection, key_id: str) -> Key:
    """Marks the key revoked; its record. An unknown id is an error."""
    _ready(con)
    row = con.execute(f"UPDATE api_keys SET revoked = true WHERE id = ? RETURNING {COLUMNS}", [key_id]).fetchone()
    if row is None:
        raise HuaxiangError(f"unknown key id {key_id!r} (`huaxiang keys list` shows them)")
    return _record(row)


def header_key(request) -> str | None:
    """The key a request carries: `X-API-Key: …` or `Authorization: Bearer …`."""
    key = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if key is None and auth.lower().startswith("bearer "):
        key = auth[7:].strip()
    return key


class StoreKeys:
    """The key table of a store file, with the methods of `RedisKeys`."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con

    def create(self, scope: str, label: str = "", tenants: list[str] | None = None,
               expires_in: timedelta | None = None) -> tuple[Key, str]:
        return create_key(self.con, scope, label, tenants, expires_in)

    def list(self) -> list[Key]:
        return list_keys(self.con)

    def revoke(self, key_id: str) -> Key:
        return revoke_key(self.con, key_id)


class RedisKeys:
    """The key table of the online store (`huaxiang serve --online`): hash `hx:keys` (key hash -> the record as
    JSON), and a counter `hx:keys:rev` raised by every change, which each API worker polls to re-read the table."""

    def __init__(self, r):
        self.r = r

    def _put(self, hashed: str, record: Key) -> None:
        with self.r.pipeline(transaction=True) as p:
            p.hset(KEYS, hashed, json.dumps(record.listing(), ensure_ascii=False))
            p.incr(KEYS_REV)
            p.execute()

    def create(self, scope: str, label: str = "", tenants: list[str] | None = None,
               expires_in: timedelta | None = None) -> tuple[Key, str]:
        record, key = new_key(scope, label, tenants, expires_in)
        self._put(key_hash(key), record)
        return record, key

    def _all(self) -> dict[str, Key]:
        return {h.decode(): _from_listing(json.loads(v)) for h, v in self.r.hgetall(KEYS).items()}

    def list(self) -> list[Key]:
        return sorted(self._all().values(), key=lambda k: (k.created_at or datetime.min, k.id))

    def load(self) -> dict[str, Key]:
        return {h: k for h, k in self._all().items() if not k.revoked}

    def revision(self) -> int:
        return int(self.r.get(KEYS_REV) or 0)

    def revoke(self, key_id: str) -> Key:
        for hashed, k in self._all().items():
            if k.id == key_id:
                done = replace(k, revoked=True)
                self._put(hashed, done)
                return done
        raise HuaxiangError(f"unknown key id {key_id!r} (`huaxiang keys list --online URL` shows them)")

    def copy_from(self, con: duckdb.DuckDBPyConnection) -> int:
        """A store's keys added to this table: those it does not hold, and the store's revocations (a key revoked
        in either place stays revoked); returns how many changed."""
        if not has_table(con, "api_keys"):
            return 0
        _ready(con)
        held = self._all()
        changed = {h: _record(r) for h, *r in con.execute(f"SELECT key_hash, {COLUMNS} FROM api_keys").fetchall()
                   if h not in held or (r[-1] and not held[h].revoked)}
        if changed:
            with self.r.pipeline(transaction=True) as p:
                p.hset(KEYS, mapping={h: json.dumps(k.listing(), ensure_ascii=False) for h, k in changed.items()})
                p.incr(KEYS_REV)
                p.execute()
        return len(changed)


def _from_listing(d: dict) -> Key:
    when = lambda t: datetime.fromisoformat(t) if t else None  # noqa: E731
    return Key(d["id"], d["scope"], frozenset(d["tenants"]) if d["tenants"] is not None else None, d["label"] or "",
               when(d["created_at"]), when(d["expires_at"]), bool(d["revoked"]))
