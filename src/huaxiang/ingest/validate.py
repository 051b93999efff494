"""Row validation as SQL: raw strings in, typed rows or (field, reason) out.

`validation_sql(table, present)` builds one query over a relation (default `mapped`) holding `_line`
and raw VARCHAR columns named after the canonical columns in `present`. Each output row carries
`_field` and `_reason`: NULL for a good row, else the first check it failed. With `pre=True`, `mapped` also
holds `_pre_field` and `_pre_reason`: a fault the reader already found (a JSON value of the wrong type), tried
first.

A timestamp later than `now` (the time of ingest, UTC) plus `tolerance_s` seconds of clock skew is in the
future: one such event would move its tenant's reference time ahead and age every profile. The cut-off goes
into the statement as a literal computed once, or as SQL that reads it (`cutoff_sql`: the ingest pipeline keeps it in
a table, so that the statement's text, and so its prepared plan, stays the same from batch to batch).
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from .. import schema
from ..config import Config
from ..schema import sql_literal

ID_COLUMNS = {"event_id", "user_id", "item_id", "category_id", "session_id", "review_id",
              "order_id", "invoice"}
EARLIEST_TS = "1990-01-01"
LIMITS = {"request_id": schema.MAX_REQUEST_ID_CHARS}  # columns with a length limit of their own
FUTURE_TOLERANCE_S = Config.future_tolerance_seconds  # the default allowance for clock skew


ASCII_SPACE = "' \t\n\x0b\x0c\r'"  # a SQL literal holding the six characters themselves: binding a query
# with dozens of `chr(9) || chr(10) || …` chains cost ~8 ms per ingest of a small batch


def blank_to_null(raw: str) -> str:
    """SQL: the value with surrounding ASCII whitespace (not only spaces) removed; NULL when nothing is left."""
    return f"NULLIF(trim({raw}, {ASCII_SPACE}), '')"


def _shown(raw: str) -> str:
    """The raw value as it appears in a reason: quoted, cut to 60 characters."""
    return f"'''' || left({raw}, 60) || ''''"


def _parsed(col: schema.Column, raw: str) -> str:
    v = blank_to_null(raw)
    if col.type == "DOUBLE":
        return f"TRY_CAST({v} AS DOUBLE)"
    if col.type == "BIGINT":
        return (f"CASE WHEN TRY_CAST({v} AS DOUBLE) = round(TRY_CAST({v} AS DOUBLE)) "
                f"AND abs(TRY_CAST({v} AS DOUBLE)) < 9e15 THEN TRY_CAST(TRY_CAST({v} AS DOUBLE) AS BIGINT) END")
    if col.type == "TIMESTAMP":
        num = f"TRY_CAST({v} AS DOUBLE)"
        epoch = (f"CASE WHEN abs({num}) < 1e11 THEN to_timestamp({num})::TIMESTAMP "
                 f"WHEN abs({num}) < 1e14 THEN to_timestamp({num} / 1000)::TIMESTAMP END")
        return (f"CASE WHEN regexp_full_match({v}, '-?[0-9]+(\\.[0-9]+)?') THEN {epoch} "
                f"ELSE TRY_CAST(TRY_CAST({v} AS TIMESTAMPTZ) AS TIMESTAMP) END")
    if col.type == "EVENT_TYPE":
        low = f"lower({v})"
        cases = " ".join(f"WHEN {sql_literal(a)} THEN {sql_literal(t)}"
                         for a, t in schema.EVENT_TYPE_ALIASES.items())
        return f"CASE {low} {cases} ELSE {low} END"
    return v


def future_cutoff(now: datetime | None, tolerance_s: float) -> datetime:
    """The latest timestamp an ingest accepts (naive UTC): `now` (default: this instant) plus the tolerance."""
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    return now + timedelta(seconds=tolerance_s)


def _checks(table: schema.Table, present: set[str], cutoff: str,
            tolerance_s: float) -> list[tuple[str, str, str]]:
    """(condition, field, reason SQL) in the order they are tried; the first that holds wins."""
    out: list[tuple[str, str, str]] = []
    for col in table.columns:
        name = col.name
        if name not in present:
            if col.required:
                out.append(("TRUE", name, sql_literal(f"missing {name}: the source has no such column")))
            continue
        raw, val = f"r_{name}", f"p_{name}"
        out.append((f"contains({raw}, chr(65533))", name, sql_literal(f"invalid UTF-8 in {name}")))
        out.append((f"contains({raw}, chr(0))", name, sql_literal(f"NUL character in {name}")))
        limit = LIMITS.get(name, schema.MAX_ID_CHARS if name in ID_COLUMNS else schema.MAX_TEXT_CHARS)
        out.append((f"length({raw}) > {limit}", name,
                    sql_literal(f"{name} longer than {limit} characters (") + f" || length({raw}) || ')'"))
        if col.type in ("DOUBLE", "BIGINT", "TIMESTAMP"):
            what = {"DOUBLE": "not a number", "BIGINT": "not an integer",
                    "TIMESTAMP": "not a timestamp (epoch seconds/ms or ISO 8601)"}[col.type]
            out.append((f"{val} IS NULL AND {blank_to_null(raw)} IS NOT NULL", name,
                        sql_literal(f"{what}: ") + " || " + _shown(raw)))
        if col.type == "DOUBLE":
            out.append((f"isnan({val}) OR isinf({val})", name,
                        sql_literal(f"{name} is not finite: ") + " || " + _shown(raw)))
        if col.type == "TIMESTAMP":
            out.append((f"{val} < TIMESTAMP '{EARLIEST_TS}'", name,
                        sql_literal(f"timestamp out of range ({EARLIEST_TS} .. now): ") + " || " + _shown(raw)))
            # the reason names the tolerance, not the cut-off, so that a re-sent row gets the same verdict
            out.append((f"{val} > {cutoff}", name,
                        sql_literal("timestamp in the future: ") + " || " + _shown(raw)
                        + " || " + sql_literal(f" (more than {tolerance_s:g} s after the time of ingest)")))
        if col.type == "EVENT_TYPE":
            allowed = ", ".join(sql_literal(t) for t in schema.EVENT_TYPES)
            out.append((f"{val} IS NOT NULL AND {val} NOT IN ({allowed})", name,
                        sql_literal("unknown event type ") + " || " + _shown(raw)
                        + " || " + sql_literal(f" (expected one of {'/'.join(schema.EVENT_TYPES)})")))
        if col.required:
            out.append((f"{val} IS NULL", name, sql_literal(f"missing {name}")))
    if table is schema.EVENTS:
        if "price" in present:
            out.append(("p_price < 0", "price", sql_literal("negative price: ") + " || " + _shown("r_price")))
        if "quantity" in present:
            out.append(("p_quantity <= 0", "quantity",
                        sql_literal("quantity must be positive: ") + " || " + _shown("r_quantity")))
        if "type" in present:  # without a type column every row is already quarantined as missing type
            item = "p_item_id IS NULL" if "item_id" in present else "TRUE"
            out.append((f"{item} AND p_type NOT IN ('search')", "item_id",
                        sql_literal("missing item_id (required for a ") + " || p_type || ' event)'"))
    if table is schema.REVIEWS and "rating" in present:
        out.append(("p_rating < 0 OR p_rating > 5", "rating",
                    sql_literal("rating outside 0..5: ") + " || " + _shown("r_rating")))
    if table is schema.ITEMS and "price" in present:
        out.append(("p_price < 0", "price", sql_literal("negative price: ") + " || " + _shown("r_price")))
    return out


def validation_sql(table: schema.Table, present: set[str], now: datetime | None = None,
                   tolerance_s: float = FUTURE_TOLERANCE_S, pre: bool = False, relation: str = "mapped",
                   cutoff_sql: str | None = None) -> str:
    """The query over `relation`; the future cut-off is `cutoff_sql` when given (SQL giving a TIMESTAMP), else
    `now` plus `tolerance_s` as a literal."""
    present = present & set(table.names)
    cutoff = cutoff_sql or f"TIMESTAMP '{future_cutoff(now, tolerance_s).isoformat(sep=' ')}'"
    cols = ["_pre_field", "_pre_reason"] if pre else []
    for col in table.columns:
        if col.name in present:
            cols.append(f"{col.name} AS r_{col.name}")
            cols.append(f"{_parsed(col, col.name)} AS p_{col.name}")
    checks = [(c, sql_literal(f), r) for c, f, r in _checks(table, present, cutoff, tolerance_s)]
    if pre:
        checks.insert(0, ("_pre_field IS NOT NULL", "_pre_field", "_pre_reason"))
    field = " ".join(f"WHEN {c} THEN {f}" for c, f, _ in checks)
    reason = " ".join(f"WHEN {c} THEN {r}" for c, _, r in checks)
    typed = []
    for col in table.columns:
        if col.name == "language" and table is schema.REVIEWS:
            text = "p_text" if "text" in present else "NULL"  # no text: every row is quarantined anyway
            guess = f"CASE WHEN regexp_matches({text}, '[\\x{{4e00}}-\\x{{9fff}}]') THEN 'zh' ELSE 'en' END"
            typed.append(f"coalesce(lower(p_language), {guess}) AS language" if "language" in present
                         else f"{guess} AS language")
        elif col.name in present:
            typed.append(f"p_{col.name} AS {col.name}")
        else:
            typed.append(f"CAST(NULL AS {schema.sql_type(col)}) AS {col.name}")
    raw_json = "json_object(" + ", ".join(f"{sql_literal(n)}, left(r_{n}, 1000)" for n in sorted(present)) + ")" \
        if present else "'{}'"
    return f"""
        WITH p AS (SELECT _line, {', '.join(cols) if cols else 'NULL AS _none'} FROM {relation}),
        c AS (SELECT *, CASE {field} END AS _field, CASE {reason} END AS _reason FROM p)
        SELECT _line, _field, _reason, CASE WHEN _field IS NOT NULL THEN {raw_json} END AS _raw, {', '.join(typed)} FROM c
    """
