"""One user's profile as a record (for programs) and as text (for people)."""
from __future__ import annotations

import json
import math
import textwrap
from datetime import date, datetime
from typing import Callable

import duckdb

from ..errors import HuaxiangError
from ..schema import sql_literal
from .scores import scores_where
from .summary import summarize

WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


def _plain(value):
    """A value JSON can hold: timestamps as ISO text, NaN as null, nested lists/dicts walked."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def profile_records(con: duckdb.DuckDBPyConnection, user_ids: list[str], recent: int = 10) -> dict[str, dict]:
    """{user_id: profile record} for those of `user_ids` with a profile: the profile row, their `recent` latest
    events (with item titles) and their scores — three queries however many users."""
    return records_where(con, "user_id IN (SELECT unnest(?))", [list(user_ids)], recent)


def records_where(con: duckdb.DuckDBPyConnection, where: str, params: list, recent: int = 10) -> dict[str, dict]:
    """`profile_records` of the users with a profile whose `user_id` meets `where` (SQL, with `params` for its
    placeholders): e.g. a range of ids, so that a publish reads a batch of users without a list of them.
    DuckDB makes the values JSON-ready (`_json_sql`): a record is the row's values under their names."""
    try:
        select, plain = _json_columns(con, None, "profiles")
    except duckdb.CatalogException as exc:
        raise HuaxiangError("no profiles in this store yet: run `huaxiang build` first") from exc
    rows = con.execute(f"SELECT {', '.join(sql for _, sql in select)} FROM profiles WHERE {where}",
                       params).fetchall()
    if not rows:
        return {}
    names = [name for name, _ in select]
    records = {row[0]: dict(zip(names, row)) for row in rows}
    if plain:
        for record in records.values():
            for i, f in plain.items():
                if record[names[i]] is not None:
                    record[names[i]] = f(record[names[i]])
    del rows
    # (an event's NaN price is written as null, not left out: Python turns it, after the nulls are left out)
    select, plain = _json_columns(con, RECENT_COLUMNS, "events e LEFT JOIN items i USING (item_id)", nan_kept=True)
    # (each user's latest events first, then their items' titles: the join and the conversions for those alone;
    # the second QUALIFY is for an item listed twice, as the join of every event and then the latest would have it)
    latest = "PARTITION BY e.user_id ORDER BY e.ts DESC, e.event_id"
    ev = con.execute(f"""SELECT e.user_id, {', '.join(sql for _, sql in select)} FROM (
            SELECT * FROM events e WHERE {where} QUALIFY row_number() OVER ({latest}) <= {int(recent)}) e
        LEFT JOIN items i USING (item_id)
        QUALIFY row_number() OVER ({latest}) <= {int(recent)}
        ORDER BY e.user_id, e.ts DESC, e.event_id""", params).fetchall()
    names = [name for name, _ in select]
    for r in records.values():
        r["recent_events"] = []
    for user, *row in ev:
        if user in records:
            records[user]["recent_events"].append(
                {k: plain[i](v) if i in plain else v for i, (k, v) in enumerate(zip(names, row)) if v is not None}
                if plain else {k: v for k, v in zip(names, row) if v is not None})
    del ev
    scores = scores_where(con, where, params)
    for user, r in records.items():
        r["scores"] = scores.get(user, {})
        r["summary"] = summarize(r)
    return records


RECENT_COLUMNS = ["e.ts", "e.type", "e.item_id", "i.title", "e.category_id", "e.price", "e.query"]
_AS_IS = {"varchar", "bigint", "integer", "smallint", "tinyint", "ubigint", "uinteger", "usmallint", "utinyint",
          "hugeint", "boolean"}


def _json_columns(con, columns: list[str] | None, source: str,
                  nan_kept: bool = False) -> tuple[list[tuple[str, str]], dict[int, Callable]]:
    """[(name, SQL)] of `columns` (SQL expressions; None: every column) of `source` (a FROM clause), each SQL
    yielding the values `_plain` would make (`_json_sql`), and {index: what Python does to each value} of those
    whose type SQL leaves to Python (`_plain`; with `nan_kept`, `_finite` for the floating-point columns)."""
    described = con.execute(f"SELECT {', '.join(columns or ['*'])} FROM {source} LIMIT 0").description
    select, plain = [], {}
    for i, (name, sql_type, *_) in enumerate(described):
        expr = columns[i] if columns else _quoted(name)
        sql = None if nan_kept and sql_type.id in ("double", "float") else _json_sql(expr, sql_type)
        if sql is None:
            plain[i] = _finite if nan_kept and sql_type.id in ("double", "float") else _plain
        select.append((name, expr if sql in (None, expr) else f"{sql} AS {_quoted(name)}"))
    return select, plain


def _finite(v: float) -> float | None:
    return None if v != v or v in (math.inf, -math.inf) else v


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _json_sql(expr: str, sql_type, depth: int = 0) -> str | None:
    """SQL of `expr` (of `sql_type`, a DuckDB type) whose value is what `_plain` makes of `expr`'s value; None when
    SQL does not do it here (time zones, decimals, maps…: left to Python). Column by column, this costs DuckDB
    little and spares Python a call per value."""
    kind = sql_type.id
    if kind in _AS_IS:
        return expr
    if kind in ("double", "float"):
        return f"CASE WHEN isnan({expr}) OR isinf({expr}) THEN NULL ELSE {expr} END"
    if kind in ("timestamp", "date"):  # (as datetime.isoformat: a four-digit year, microseconds unless 0)
        year = f"lpad(CAST(year({expr}) AS VARCHAR), 4, '0')"
        if kind == "date":
            return f"{year} || strftime({expr}, '-%m-%d')"
        return (f"{year} || strftime({expr}, '-%m-%dT%H:%M:%S') || "
                f"CASE WHEN microsecond({expr}) % 1000000 = 0 THEN '' ELSE strftime({expr}, '.%f') END")
    if kind == "list":
        var = f"x{depth}"
        inner = _json_sql(var, sql_type.children[0][1], depth + 1)
        if inner is None:
            return None
        return expr if inner == var else f"list_transform({expr}, lambda {var}: {inner})"
    if kind == "struct":
        fields = []
        for name, field_type in sql_type.children:
            get = f"struct_extract({expr}, {sql_literal(name)})"
            sql = _json_sql(get, field_type, depth)
            if sql is None:
                return None
            fields.append((name, get, sql))
        if all(sql == get for _, get, sql in fields):
            return expr
        packed = ", ".join(f"{_quoted(name)} := {sql}" for name, _, sql in fields)
        return f"CASE WHEN {expr} IS NULL THEN NULL ELSE struct_pack({packed}) END"
    return None


def profile_record(con: duckdb.DuckDBPyConnection, user_id: str, recent: int = 10) -> dict:
    """The profile record of one user (see `profile_records`)."""
    record = profile_records(con, [user_id], recent).get(user_id)
    if record is None:
        raise no_profile(user_id)
    return record


def no_profile(user_id: str) -> HuaxiangError:
    return HuaxiangError(f"unknown user {user_id!r}: no profile (ids are case-sensitive; "
                         "namespaced ids look like `taobao:1`)")


def to_json(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, indent=2)


def _num(v, fmt="{:.2f}", none="–"):
    return none if v is None else fmt.format(v)


def _shares(items) -> str:
    return ", ".join(f"{x['name']} {x['share']:.0%}" for x in (items or [])) or "–"


def _counts(items) -> str:
    return ", ".join(f"{x['name']} ({x['n']})" if x["n"] > 1 else x["name"] for x in (items or [])) or "–"


def _bar(hist) -> str:
    if not hist or not max(hist):
        return ""
    blocks = " ▁▂▃▄▅▆▇█"
    top = max(hist)
    return "".join(blocks[min(8, math.ceil(8 * h / top))] for h in hist)


def habit_zone(r: dict) -> str:
    """The time zone the profile's time habits are in: "UTC", or e.g. "UTC+8"."""
    offset = r.get("habit_utc_offset") or 0
    return "UTC" if not offset else f"UTC{offset:+g}"


def render_text(r: dict) -> str:
    """A page a person can read: who, which segment, what they do, like, and spend."""
    tz = habit_zone(r)
    lines = [
        f"User {r['user_id']}  ·  segment: {r['segment']}  ({', '.join(r.get('segments') or [])})"
        + (f"  ·  value tier: {r['scores']['clv']['value_tier']}" if "clv" in (r.get("scores") or {}) else "")
        + (f"  ·  cluster {r['cluster']}" if r.get("cluster") is not None else ""),
        *textwrap.wrap(r.get("summary") or summarize(r), 100, initial_indent="  ", subsequent_indent="  "),
        f"  tags        {', '.join(r.get('tags') or []) or '–'}",
        *([f"  semantic    {', '.join(r.get('semantic_tags') or []) or '–'}  "
           f"(nearest interests to the {len(r['embedding'])}-d embedding)"] if r.get("embedding") else []),
        f"  activity    {r['n_events']} events on {r['active_days']} days in {r['n_sessions']} sessions; "
        f"first {str(r.get('first_ts') or '–')[:10]}, last {str(r.get('last_ts') or '–')[:16]} "
        f"(idle {_num(r.get('idle_days'), '{:.1f}')} days)",
        f"  funnel      view {r['n_view']} → cart {r['n_cart']} → fav {r['n_fav']} → buy {r['n_buy']}"
        f"  (cart {_num(r.get('cart_rate'), '{:.1%}')}, buy {_num(r.get('buy_rate'), '{:.1%}')}, "
        f"cart→buy {_num(r.get('cart_to_buy'), '{:.0%}')})",
        f"  RFM         recency {_num(r.get('recency_days'), '{:.1f}')} days, {r['frequency']} orders, "
        f"spend {_num(r.get('monetary'))} (avg order {_num(r.get('avg_order_value'))}), "
        f"repeat-purchase {_num(r.get('repeat_purchase_rate'), '{:.0%}')}, returns {r.get('n_returns', 0)}",
        f"  categories  {_shares(r.get('top_categories'))}",
        f"  brands      {_shares(r.get('top_brands'))}",
        f"  keywords    {', '.join(r.get('keywords') or []) or '–'}",
        f"  price       median {_num(r.get('median_price'))}, band {r.get('price_band') or '–'}",
        f"  habits      {r.get('daypart') or '–'} person, peak hour {r.get('peak_hour', '–')}:00 {tz}, "
        f"peak day {WEEKDAYS[r['peak_weekday']] if r.get('peak_weekday') is not None else '–'}, "
        f"night {_num(r.get('night_share'), '{:.0%}')}, weekend {_num(r.get('weekend_share'), '{:.0%}')}",
        f"  hours 0–23  {_bar(r.get('hour_hist'))}",
    ]
    if r.get("n_written_reviews"):
        mood = (f"; sentiment {r['n_positive_reviews']} positive / {r['n_negative_reviews']} negative "
                f"(mean {r['mean_sentiment']:.2f})" if r.get("mean_sentiment") is not None else "")
        lines.append(f"  reviews     {r['n_written_reviews']} written, average rating "
                     f"{_num(r.get('avg_rating'), '{:.1f}')}{mood}")
        lines.append(f"  aspects     praises {_counts(r.get('aspects_praised'))}; "
                     f"criticises {_counts(r.get('aspects_criticised'))}")
        if r.get("brands_mentioned") or r.get("colours_mentioned"):
            lines.append(f"  mentions    brands {_counts(r.get('brands_mentioned'))}; "
                         f"colours {_counts(r.get('colours_mentioned'))}")
    sc = r.get("scores") or {}
    if "clv" in sc:
        c = sc["clv"]
        worth = (f"CLV {c['score']:,.2f}" if c.get("unit") == "money" else "no prices known, ranked by purchases")
        lines.append(f"  value       {c['value_tier']} tier: {worth} over {c['months']} months — {c['text']}")
    for kind, label in (("churn", f"churn risk ({(sc.get('churn') or {}).get('horizon_days')} days)"),
                        ("propensity", "buys tomorrow")):
        if kind in sc:
            lines.append(f"  {kind:<11} {sc[kind]['score']:.0%} {label} — because {sc[kind]['text']}")
    if sc.get("risk", {}).get("flagged"):
        lines.append(f"  RISK        flagged: {sc['risk']['text']}")
    if r.get("recent_events"):
        lines.append("  recent")
        for e in r["recent_events"][:5]:
            what = e.get("title") or e.get("query") or e.get("item_id", "")
            lines.append(f"    {e['ts'][:16]}  {e['type']:<6} {what[:70]}")
    return "\n".join(lines)


def week_hours(con, user_id: str, offset_hours: float) -> list[list[int]]:
    """The user's interactions by weekday (Monday first) × hour of day, in local time (UTC + offset)."""
    grid = [[0] * 24 for _ in WEEKDAYS]
    shift = int(round(offset_hours * 3600))
    for dow, hour, n in con.execute("""SELECT (dayofweek(t) + 6) % 7, hour(t), count(*) FROM
            (SELECT ts + to_seconds(?) AS t FROM events WHERE user_id = ?) GROUP BY ALL""", [shift, user_id]).fetchall():
        grid[dow][hour] = n
    return grid
