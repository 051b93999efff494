"""Protecting the people behind the data: PII masked at ingest, user ids pseudonymised with a keyed HMAC
(forgetting a person, which reaches every stage, is `huaxiang.forget`).

Masking runs inside the ingest SQL (DuckDB's RE2), on review text and search queries, before a row is stored
or any model reads it. Patterns (applied in this order; each match becomes its tag):
  [email]    name@domain.tld
  [id-card]  Chinese resident ID: 6-digit area, birth date 18/19/20YYMMDD, 3 digits, check digit or X
  [phone]    Chinese mobiles (optional +86), and any +/digit run of 9–15 digits with spaces or dashes
  [address]  Chinese: …路/街/道/巷/弄 + number + 号; English: number + 1–4 capitalised words + St/Road/Ave/…
Pseudonymisation: when the environment variable HUAXIANG_ID_KEY is set, every user id becomes
`[tenant:]u_<first 20 hex of HMAC-SHA256(key, the rest of the id)>` at ingest. The key is never written to the store;
the same key maps the same person to the same pseudonym, so later batches join up.
"""
from __future__ import annotations

import hashlib
import hmac
import os

from .schema import TENANT_SEPARATOR, sql_literal, tenant_of

KEY_ENV = "HUAXIANG_ID_KEY"
_HAN = r"[\x{4e00}-\x{9fff}]"
PII_PATTERNS = [
    ("email", r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
    ("id-card", r"[1-9][0-9]{5}(18|19|20)[0-9]{2}(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx]"),
    ("phone", r"(\+?86[ -]?)?1[3-9][0-9]{9}|\+?[0-9][0-9 -]{7,17}[0-9]"),
    ("address", _HAN + r"{0,12}(路|街|道|巷|弄)[0-9]{1,5}号(" + _HAN + r"|[0-9A-Za-z])*"
     r"|\b[0-9]{1,5} ([A-Z][a-z]+ ){1,4}(Street|St|Road|Rd|Avenue|Ave|Boulevard|Blvd|Lane|Ln|Drive|Dr|Way|Court|Ct)\b\.?"),
]
MASKED = {"reviews": ("text",), "events": ("query",)}  # free text that people write about themselves


def mask_sql(expr: str) -> str:
    """SQL: `expr` with every PII pattern replaced by its tag."""
    for name, pattern in PII_PATTERNS:
        expr = f"regexp_replace({expr}, {sql_literal(pattern)}, '[{name}]', 'g')"
    return expr


def id_key() -> bytes | None:
    key = os.environ.get(KEY_ENV)
    return key.encode() if key else None


def pseudonym(raw_id: str | None, key: bytes) -> str | None:
    """`shop:123` -> `shop:u_<hmac>`: the tenant (`schema.tenant_of`: before the first colon) stays readable,
    the person does not."""
    if raw_id is None:
        return None
    tenant = tenant_of(raw_id)
    local = raw_id[len(tenant) + 1:] if tenant else raw_id
    prefix = tenant + TENANT_SEPARATOR if tenant else ""
    return f"{prefix}u_{hmac.new(key, local.encode('utf-8', 'surrogatepass'), hashlib.sha256).hexdigest()[:20]}"


def register_pseudonym(con) -> str | None:
    """Registers `hx_pseudonym(VARCHAR)` on `con` when a key is configured; returns the SQL function name."""
    key = id_key()
    if key is None:
        return None
    try:
        con.create_function("hx_pseudonym", lambda v: pseudonym(v, key), ["VARCHAR"], "VARCHAR",
                            null_handling="special", side_effects=False)
    except Exception as exc:  # already registered on this connection ("already exists"; DuckDB 1.4: "already created")
        if "already" not in str(exc):
            raise
    return "hx_pseudonym"
