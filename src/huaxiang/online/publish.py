"""Publishing a store (or a Parquet build, `source.py`) to the online store in Redis (`layout.py`).

`render_users` turns users into what the online store holds of each: the exact bytes of their profile document,
their recommendation context, their 7 × 24 week grid and a hash of the three — a whole batch in a few set-based
queries (the writer calls it for a batch's users after each refresh).

`publish` writes every user of each tenant as a new version beside the one served, then switches all the changed
tenants at once and removes the versions they replace after a grace period. A tenant whose inputs did not change
since the version served (its fingerprint: counts and summed hashes of its rows, the model's and search index's
content addresses) is skipped: a re-run with nothing changed writes nothing. A tenant's users are read a slice
at a time (its rows copied sorted by user id: see `_slice_cursor`), rendered in chunks of consecutive ids (a
range, not a list: `RENDER_USERS`) and written one round trip per batch; no more than a chunk of documents is held
at once. With `workers`, processes render and write slices side by side. A publish that fails removes the versions
it began; one that was killed leaves them pending, and the next publish removes them first. One publish at a time
per Redis (a lock, `layout.PUBLISH_LOCK`, that lapses a minute after a killed publish's last batch).
"""
from __future__ import annotations

import gc
import hashlib
import json
import time
from contextlib import contextmanager
from typing import Callable

import duckdb

from .. import __version__
from ..errors import HuaxiangError
from ..profile.render import records_where
from ..recommend.store_model import HISTORY_LENGTH, ITEM_EVENTS
from ..schema import sql_literal, tenant_is_sql, tenant_sql
from ..store import has_table
from . import layout

FORMAT = 1  # of what a publish writes per user; a change of it changes every fingerprint
QUERIES_KEPT = 3  # latest searches in a context (as `user_view` reads them)
_ITEM_TYPES = ", ".join(sql_literal(t) for t in ITEM_EVENTS)
_SAME_TENANT = f"{tenant_sql('item_id')} = {tenant_sql('user_id')}"


# ---------------------------------------------------------------------------------------------------- rendering

def render_users(con: duckdb.DuckDBPyConnection, user_ids: list[str]) -> dict[str, dict[str, bytes]]:
    """{user_id: {"doc", "ctx", "week", "h"}} for those of `user_ids` with a profile (see the module's doc)."""
    if not user_ids:
        return {}
    return render_where(con, "user_id IN (SELECT unnest(?))", [list(user_ids)])


def render_where(con: duckdb.DuckDBPyConnection, where: str, params: list) -> dict[str, dict[str, bytes]]:
    """`render_users` for the users whose `user_id` meets `where` (SQL over a column `user_id`, with `params`)."""
    records = records_where(con, where, params)
    if not records:
        return {}
    history, liked, queries = contexts(con, where, params)
    weeks = week_codes(con, where, params)
    out = {}
    doc_json, ctx, empty, hashed = _DOC_JSON.encode, layout.encode_ctx, EMPTY_WEEK, layout.content_hash
    for user, record in records.items():
        doc = doc_json(record).encode()
        c = ctx(history.get(user, ()), liked.get(user, ()), queries.get(user, ()), record.get("segment"),
                record.get("top_category"))
        week = weeks.get(user, empty)
        out[user] = {"doc": doc, "ctx": c, "week": week, "h": hashed(doc, c, week)}
    return out


# json.dumps(…, ensure_ascii=False), made once (a record holds no cycle to look for: the same bytes, sooner)
_DOC_JSON = json.JSONEncoder(ensure_ascii=False, check_circular=False)
EMPTY_WEEK = layout.encode_week([[0] * 24 for _ in range(7)])


def contexts(con, where: str, params: list, n: int = HISTORY_LENGTH):
    """What `user_view` reads from the store for one user, for every user `where` selects, in three queries:
    ({user: [[item id, type]] oldest first}, {user: [item id reviewed well] oldest first},
    {user: [query] latest first}); only items of the user's own tenant are kept (after the latest n are taken).
    DuckDB gathers each user's list."""
    history = dict(con.execute(f"""SELECT user_id, list_filter(list_slice(h, -{int(n)}, -1),
                lambda x: {tenant_sql('x[1]')} = {tenant_sql('user_id')}) FROM (
            SELECT user_id, list([item_id, type] ORDER BY ts, event_id) AS h FROM (
                SELECT user_id, item_id, type, ts, event_id,
                       lag(item_id) OVER (PARTITION BY user_id ORDER BY ts, event_id) AS before
                FROM events WHERE {where} AND item_id IS NOT NULL AND type IN ({_ITEM_TYPES}))
            WHERE before IS DISTINCT FROM item_id GROUP BY user_id)""", params).fetchall())
    liked = {}
    if has_table(con, "reviews"):
        liked = dict(con.execute(f"""SELECT user_id, list(item_id ORDER BY ts, review_id) FROM (
                SELECT user_id, item_id, ts, review_id FROM reviews WHERE {where} AND (rating >= 4 OR label = 1)
                QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY ts DESC, review_id DESC) <= {int(n)})
            WHERE {_SAME_TENANT} GROUP BY user_id""", params).fetchall())
    queries = dict(con.execute(f"""SELECT user_id, list(query ORDER BY ts DESC, event_id DESC) FROM (
            SELECT user_id, query, ts, event_id FROM events WHERE {where} AND type = 'search' AND query IS NOT NULL
            QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY ts DESC, event_id DESC) <= {QUERIES_KEPT})
        GROUP BY user_id""", params).fetchall())
    return history, liked, queries


def week_codes(con, where: str, params: list) -> dict[str, bytes]:
    """`layout.encode_week` of `render.week_hours` of every user with a profile and events that `where` selects (in
    their profile's UTC offset), the 168 numbers of each joined by DuckDB."""
    return {user: code.encode() for user, code in con.execute(f"""SELECT user_id, array_to_string(list_transform(
                range(168), lambda i: coalesce(list_extract(ns, list_position(cells, i)), 0)), ',') FROM (
            SELECT user_id, list(cell) AS cells, list(n) AS ns FROM (
                SELECT user_id, (dayofweek(t) + 6) % 7 * 24 + hour(t) AS cell, count(*) AS n FROM (
                    SELECT user_id,
                           ts + to_seconds(CAST(round(coalesce(p.habit_utc_offset, 0) * 3600) AS BIGINT)) AS t
                    FROM events JOIN profiles p USING (user_id) WHERE {where})
                GROUP BY ALL)
            GROUP BY user_id)""", params).fetchall()}


def _range(tenant: str, lo: str, hi: str) -> str:
    """SQL: a user id of `tenant` between `lo` and `hi` (literals: DuckDB prunes row groups by them, which it does
    not for a prepared statement's parameters)."""
    return f"user_id BETWEEN {sql_literal(lo)} AND {sql_literal(hi)} AND {tenant_is_sql('user_id', tenant)}"


# ---------------------------------------------------------------------------------------------------- publishing

def tenants_of(con) -> list[str]:
    """The tenants with profiles, in name order."""
    try:
        return [t for (t,) in con.execute(f"SELECT DISTINCT {tenant_sql('user_id')} AS t FROM profiles ORDER BY t"
                                          ).fetchall()]
    except duckdb.CatalogException as exc:
        raise HuaxiangError("no profiles in this store yet: run `huaxiang build` first") from exc


def tenant_users(con, tenant: str) -> list[str]:
    return [u for (u,) in con.execute(f"SELECT user_id FROM profiles WHERE {tenant_is_sql('user_id', tenant)} "
                                      "ORDER BY user_id").fetchall()]


def segment_entry(con, tenant: str) -> bytes:
    """The tenant's entry of the segment report, as JSON (b"" when the store has no segments)."""
    from ..profile.segment_report import segment_report
    try:
        parts = segment_report(con, tenants=[tenant])["tenants"]
    except HuaxiangError:
        return b""
    return json.dumps(parts[0], ensure_ascii=False).encode() if parts else b""


def segment_inputs(con, tenant: str) -> str:
    """A digest of what the tenant's segment report reads besides its profiles and scores (the rules, the drift
    across builds, the clusters) — not of the report itself, whose float means may differ in their last digits
    from one run to the next (a parallel sum's order), which would make every re-run a change."""
    from ..profile.segment_report import segment_clusters, segment_drift, segment_rules
    try:
        parts = [segment_rules(con).get(tenant), segment_drift(con, tenant), segment_clusters(con).get(tenant)]
    except HuaxiangError:
        return ""
    return hashlib.sha256(json.dumps(parts, default=str, sort_keys=True).encode()).hexdigest()


def private_fields(con, tenant: str) -> dict:
    """What a private segment report of the tenant is computed from (layout.encode_private; {}: no segments)."""
    from ..profile.segment_report import segment_rules, tier_values
    try:
        rules = segment_rules(con).get(tenant)
    except HuaxiangError:
        return {}
    return layout.encode_private(rules, tier_values(con, tenant)) if rules else {}


def catalogue_key(con, tenant: str) -> str:
    """What the tenant's search index is built from (count and summed hash of its titled items; as
    `search.title_catalogue` keys its cache); "" when it has no titled item."""
    if not has_table(con, "items"):
        return ""
    n, total = con.execute(f"""SELECT count(*), sum(hash(item_id, title)) FROM items
        WHERE title IS NOT NULL AND {tenant_is_sql('item_id', tenant)}""").fetchone()
    return f"{n}:{total}" if n else ""


def fingerprint(con, tenant: str, extra: dict) -> str:
    """A digest of everything the tenant's published data depends on: counts and summed row hashes of its rows
    of profiles, scores, events, items and reviews, plus `extra` (the segment report entry's hash, the model's
    and search index's content addresses)."""
    own = tenant_is_sql("user_id", tenant)
    parts = {"format": FORMAT, "huaxiang": __version__, **extra,
             "profiles": con.execute(f"SELECT count(*), sum(hash(p)) FROM profiles p WHERE {own}").fetchone(),
             "events": con.execute(f"""SELECT count(*), max(ts), sum(hash(event_id, user_id, item_id, type, ts,
                 category_id, price, query)) FROM events WHERE {own}""").fetchone()}
    if has_table(con, "scores"):
        parts["scores"] = con.execute(f"SELECT count(*), sum(hash(user_id, kind, score, detail)) FROM scores "
                                      f"WHERE {own}").fetchone()
    if has_table(con, "items"):
        parts["items"] = con.execute(f"SELECT count(*), sum(hash(item_id, title)) FROM items "
                                     f"WHERE {tenant_is_sql('item_id', tenant)}").fetchone()
    if has_table(con, "reviews"):
        parts["reviews"] = con.execute(f"SELECT count(*), sum(hash(review_id, user_id, item_id, ts, rating, label)) "
                                       f"FROM reviews WHERE {own}").fetchone()
    return hashlib.sha256(json.dumps(parts, default=str, sort_keys=True).encode()).hexdigest()


def _meta(r, tenant: str, version: int | None) -> dict[str, str]:
    if version is None:
        return {}
    return {k.decode(): v.decode() for k, v in r.hgetall(layout.meta_key(tenant, version)).items()}


def _drop_pending(r, tenants: list[str] | None) -> list[tuple[str, int]]:
    """Removes the versions a crashed publish left pending (of `tenants`; None: of every tenant)."""
    dropped = []
    for tenant, version in layout.pending(r).items():
        if tenants is None or tenant in tenants:
            r.hdel(layout.PENDING, tenant.encode("utf-8", "surrogatepass"))
            layout.drop_version(r, tenant, version)
            dropped.append((tenant, version))
    return dropped


def _abandon(r, versions: dict[str, int]) -> None:
    """Best effort: removes the versions a failed publish began (their tenants' `current` is untouched)."""
    try:
        for tenant, version in versions.items():
            r.hdel(layout.PENDING, tenant.encode("utf-8", "surrogatepass"))
            layout.drop_version(r, tenant, version)
    except Exception:  # (Redis gone, say: the next publish removes them)
        pass


def collect_blobs(r) -> int:
    """Removes the blobs (`hx:blob:*`) that no version served or being written refers to; returns how many."""
    live = set(layout.current(r).items()) | set(layout.pending(r).items())
    used = {v["blob"] for e in json.loads(r.get(layout.EXPERIMENTS) or b"[]") for v in e["variants"]}
    for tenant, version in live:
        for bid in r.hmget(layout.meta_key(tenant, version), "model", "search"):
            if bid:
                used.add(bid.decode())
    doomed = []
    for key in r.scan_iter(match=b"hx:blob:*", count=1_000):
        bid = key[len(b"hx:blob:"):].decode()
        if bid.endswith(":part") or bid not in used:  # (a part: the leftover of a write that died)
            doomed.append(key)
    return r.unlink(*doomed) if doomed else 0


def publish_experiments(con, r, db: str) -> list[dict]:
    """Sets `hx:experiments` to the store's running experiments, each variant's recommender (`recommender_files` of
    its registry spec) written as a blob first: what the online workers serve experiments by. Called by
    `huaxiang publish` and by the server holding the store when it starts or stops an experiment."""
    from ..experiments.catalog import running
    from ..recommend.store_model import recommender_files
    payload = [{"name": e.name, "tenant": e.tenant, "salt": e.salt, "variants": [
        {"name": v, "model": spec, "share": share, "blob": layout.write_blob(r, recommender_files(db, model=spec))}
        for v, spec, share in e.variants]} for e in running(con)]
    raw = json.dumps(payload).encode()
    if (r.get(layout.EXPERIMENTS) or b"[]") != raw:  # (a publish that changes nothing writes nothing)
        r.set(layout.EXPERIMENTS, raw)
    return payload


def _used_memory(r) -> int:
    return int(r.info("memory")["used_memory"])


# A publish reads a tenant's users a slice at a time: a private cursor in which `profiles`, `events`, `scores` and
# `reviews` are temporary copies of the slice's rows sorted by user id, so that each batch of it is a cheap range
# scan (the store's own tables are in arrival order: a batch's users are spread over all of them), and `items` is
# the items its events name. Each copy reads the whole of the store's tables, so a slice is as large as memory
# allows: about SLICE_EVENTS events (from the profiles' event counts), at most SLICE_USERS users. Users are
# rendered RENDER_USERS at a time (a few set-based queries each: fewer, larger queries cost less per user) and
# written `batch` per pipeline.
SLICE_EVENTS = 2_000_000
SLICE_USERS = 1_000_000
RENDER_USERS = 5_000
SLICED = ("profiles", "events", "scores", "reviews")


def _slice_cursor(con, tenant: str, lo: str, hi: str):
    cur = con.cursor()
    catalog = cur.execute("SELECT current_database()").fetchone()[0].replace('"', '""')
    for name in SLICED:
        if has_table(cur, name):
            cur.execute(f'CREATE TEMP TABLE {name} AS SELECT * FROM "{catalog}".main.{name} '
                        f"WHERE {_range(tenant, lo, hi)} ORDER BY user_id")
    if has_table(cur, "items"):  # (the items the slice's events name: what a batch joins its events with)
        cur.execute(f'CREATE TEMP TABLE items AS SELECT * FROM "{catalog}".main.items '
                    "WHERE item_id IN (SELECT item_id FROM temp.main.events)")
    return cur


def slice_users(con, tenant: str, users: list[str]) -> int:
    """How many of `users` (consecutive ids of `tenant`) a slice takes: about SLICE_EVENTS events' worth."""
    try:
        (events,) = con.execute(f"SELECT coalesce(sum(n_events), 0) FROM profiles "
                                f"WHERE {_range(tenant, users[0], users[-1])}").fetchone()
    except duckdb.Error:  # (profiles without event counts: a slice of a fixed size)
        events = 0
    per_user = max(1.0, events / len(users)) if events else 10.0
    return max(RENDER_USERS, min(SLICE_USERS, int(SLICE_EVENTS / per_user)))


def write_users(con, r, tenant: str, version: int, users: list[str], batch: int,
                step: Callable[[int], None] | None = None) -> tuple[int, int]:
    """Renders `users` (consecutive ids of `tenant`, in order) and writes them into `version`: one pipeline of
    HSETs and a ZADD per batch. Returns (users written, bytes of their doc, ctx and week)."""
    written = size = 0
    if not users:
        return written, size
    per_slice = slice_users(con, tenant, users)
    chunk = max(batch, RENDER_USERS)
    for i in range(0, len(users), per_slice):
        piece = users[i:i + per_slice]
        cur = _slice_cursor(con, tenant, piece[0], piece[-1])
        try:
            for j in range(0, len(piece), chunk):
                part = piece[j:j + chunk]
                with _no_cycle_collection():
                    rendered = render_where(cur, _range(tenant, part[0], part[-1]), [])
                    for k in range(0, len(part), batch):
                        n, nbytes = _write(r, tenant, version, part[k:k + batch], rendered)
                        written += n
                        size += nbytes
                        if step:
                            step(len(part[k:k + batch]))
                    del rendered
        finally:
            cur.close()
    return written, size


def _write(r, tenant: str, version: int, users: list[str], rendered: dict) -> tuple[int, int]:
    """One round trip: the HSETs of those of `users` rendered, and their ZADD to the version's ids. The commands
    are packed here, as the client would pack them (its packing and pipeline cost a third of the writing)."""
    size, ids, out = 0, [], []
    prefix = layout.user_key(tenant, version, "")
    for user in users:
        fields = rendered.get(user)
        if fields is not None:
            key = prefix + user.encode("utf-8", "surrogatepass")
            doc, ctx, week, h = fields["doc"], fields["ctx"], fields["week"], fields["h"]
            out.append(b"*10\r\n$4\r\nHSET\r\n$%d\r\n%s\r\n$3\r\ndoc\r\n$%d\r\n%s\r\n$3\r\nctx\r\n$%d\r\n%s\r\n"
                       b"$4\r\nweek\r\n$%d\r\n%s\r\n$1\r\nh\r\n$%d\r\n%s\r\n"
                       % (len(key), key, len(doc), doc, len(ctx), ctx, len(week), week, len(h), h))
            size += len(doc) + len(ctx) + len(week)
            ids.append(key[len(prefix):])
    if not ids:
        return 0, 0
    zkey = layout.ids_key(tenant, version)
    out.append(b"*%d\r\n$4\r\nZADD\r\n$%d\r\n%s\r\n" % (2 + 2 * len(ids), len(zkey), zkey))
    out.extend(b"$1\r\n0\r\n$%d\r\n%s\r\n" % (len(u), u) for u in ids)
    _round_trip(r, b"".join(out), len(ids) + 1)
    return len(ids), size


def _round_trip(r, packed: bytes, replies: int) -> None:
    """Sends packed commands on one of the client's connections and reads their `replies` (an error reply raises,
    after the others are read)."""
    import redis
    pool = r.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command([packed], check_health=False)
        failed = None
        for _ in range(replies):
            try:
                conn.read_response()
            except redis.ResponseError as exc:
                failed = failed or exc
        if failed is not None:
            raise failed
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


@contextmanager
def _no_cycle_collection():
    """The cyclic garbage collector paused for a batch (what it makes holds no cycles: refcounting frees it);
    its passes over the many objects a batch holds cost a publish about a quarter of its time."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


_CLIENT_ARGS = ("host", "port", "db", "username", "password", "path", "socket_timeout", "socket_connect_timeout")


def _client_args(r) -> tuple[type, dict]:
    """What a worker process needs to make its own client to the same server (a client cannot be pickled)."""
    pool = r.connection_pool
    return pool.connection_class, {k: v for k, v in pool.connection_kwargs.items() if k in _CLIENT_ARGS}


def _write_task(opener, client, tenant: str, version: int, users: list[str], batch: int,
                threads: int) -> tuple[int, int, int]:
    """`write_users` in a worker process, on its own connection to the source and client to Redis."""
    import redis
    cls, kwargs = client
    con, r = opener(), redis.Redis(connection_pool=redis.ConnectionPool(connection_class=cls, **kwargs))
    try:
        con.execute(f"SET threads = {int(threads)}")
        return (len(users), *write_users(con, r, tenant, version, users, batch))
    finally:
        con.close()
        r.close()


def publish(con: duckdb.DuckDBPyConnection, r, source: str, tenants: list[str] | None = None,
            grace: float = layout.GRACE_SECONDS, model_files: dict[str, bytes] | None = None,
            progress: Callable[[int, int], None] | None = None, batch: int = 2_000, workers: int = 1,
            opener: Callable[[], duckdb.DuckDBPyConnection] | None = None) -> dict:
    """Publishes the users of `tenants` (None: every tenant with profiles) from `con` (a store, or a Parquet
    build's `source.parquet_source`) to Redis `r`; `source` names where they came from (kept in each version's
    meta); `model_files`: the recommender's files (`store_model.recommender_files`), shared by every tenant;
    `progress(done, total)` is called as users are written. With `workers` > 1, that many processes render and
    write slices of users, each on its own connection from `opener` (picklable: e.g. a partial of
    `store.connect(db, read_only=True)`).
    Returns {"tenants": {tenant: {"version", "users", "written", "unchanged", "bytes_per_user"}}, "seconds",
    "users_per_s", "redis_used_memory_delta"} (seconds: up to the switch, without the grace period; memory: used
    after the new versions were written, the replaced ones still there, minus before)."""
    if batch < 1 or workers < 1:
        raise HuaxiangError(f"batch and workers must be at least 1 (got {batch}, {workers})")
    if workers > 1 and opener is None:
        raise HuaxiangError("publishing with several workers needs an opener of the source")
    with _one_at_a_time(r) as renew:
        return _publish(con, r, source, tenants, grace, model_files, progress, batch, workers, opener, renew)


LOCK_MS = 60_000  # a publish's lock lapses this long after its last sign of life (a killed publish frees it so)


@contextmanager
def _one_at_a_time(r):
    """Holds `layout.PUBLISH_LOCK` while a publish runs (HuaxiangError when another holds it); yields a function
    that renews it."""
    import secrets
    token = secrets.token_hex(12).encode()
    if not r.set(layout.PUBLISH_LOCK, token, nx=True, px=LOCK_MS):
        raise HuaxiangError("another publish to this online store is running (one at a time): try again when it "
                            f"ends (a publish that was killed frees it within {LOCK_MS // 1000} s)")
    try:
        yield lambda: r.pexpire(layout.PUBLISH_LOCK, LOCK_MS)
    finally:
        if r.get(layout.PUBLISH_LOCK) == token:
            r.delete(layout.PUBLISH_LOCK)


def _publish(con, r, source, tenants, grace, model_files, progress, batch, workers, opener, renew) -> dict:
    started = time.perf_counter()
    present = tenants_of(con)
    names = present if tenants is None else sorted(set(tenants))
    unknown = [t for t in names if t not in present]
    if unknown:
        raise HuaxiangError(f"no profiles of tenant {unknown[0]!r} in {source}")
    cleaned = _drop_pending(r, None if tenants is None else names)
    memory_before = _used_memory(r)
    model_id = layout.blob_id(model_files) if model_files else ""
    served = layout.current(r)
    plans, result = {}, {}
    for tenant in names:
        seg, search_key = segment_entry(con, tenant), catalogue_key(con, tenant)
        fp = fingerprint(con, tenant, {"seg": segment_inputs(con, tenant), "model": model_id, "search": search_key})
        meta = _meta(r, tenant, served.get(tenant))
        if meta.get("fingerprint") == fp:
            users = int(meta.get("users", 0))
            result[tenant] = {"version": served[tenant], "users": users, "written": 0, "unchanged": True,
                              "bytes_per_user": round(int(meta.get("bytes", 0)) / users) if users else 0}
        else:
            plans[tenant] = {"fingerprint": fp, "seg": seg, "search_key": search_key, "old": meta,
                             "users": tenant_users(con, tenant)}
    if plans and model_files:
        layout.write_blob(r, model_files)
    total, versions = sum(len(p["users"]) for p in plans.values()), {}
    done = [0]

    def step(n: int) -> None:
        done[0] += n
        renew()
        if progress:
            progress(done[0], total)

    if progress and plans:
        progress(0, total)
    try:
        for tenant in plans:
            versions[tenant] = layout.begin(r, tenant, source)
        sizes = {t: [0, 0] for t in plans}  # tenant -> [users written, bytes]
        if workers > 1 and total:
            _write_parallel(plans, versions, sizes, opener, _client_args(r), batch, workers, step,
                            lambda: _search_blobs(con, r, plans))
        else:
            _search_blobs(con, r, plans)
            for tenant, plan in plans.items():
                sizes[tenant] = list(write_users(con, r, tenant, versions[tenant], plan["users"], batch, step))
        for tenant, plan in plans.items():
            version, (n, size) = versions[tenant], sizes[tenant]
            if plan["seg"]:
                r.set(layout.seg_key(tenant, version), plan["seg"])
            private = private_fields(con, tenant)
            if private:
                r.hset(layout.dp_key(tenant, version), mapping=private)
            r.hset(layout.meta_key(tenant, version), mapping={
                "source": source, "fingerprint": plan["fingerprint"], "users": n, "bytes": size, "model": model_id,
                "search": plan["search"], "search_key": plan["search_key"], "huaxiang": __version__})
            result[tenant] = {"version": version, "users": n, "written": n, "unchanged": False,
                              "bytes_per_user": round(size / n) if n else 0}
    except BaseException:  # (Ctrl-C too) the half-written versions go now; a killed publish leaves them to the next
        _abandon(r, versions)
        raise
    memory_after = _used_memory(r) if versions else memory_before
    replaced = layout.switch(r, versions) if versions else {}
    seconds = time.perf_counter() - started
    if versions or cleaned:
        if any(v is not None for v in replaced.values()) and grace > 0:
            renew()
            time.sleep(grace)
        renew()
        for tenant, old_version in replaced.items():
            if old_version is not None:
                layout.drop_version(r, tenant, old_version)
        collect_blobs(r)
    written = sum(t["written"] for t in result.values())
    return {"tenants": {t: result[t] for t in names}, "seconds": round(seconds, 3),
            "users_per_s": round(written / seconds) if seconds > 0 else 0,
            "redis_used_memory_delta": memory_after - memory_before}


def _search_blobs(con, r, plans: dict) -> None:
    """Each planned tenant's search index blob (its id into the plan): the served version's when built from the
    same titles and still there, else built and written now."""
    from ..recommend.search import pack_catalogue, title_catalogue
    for tenant, plan in plans.items():
        old, key = plan["old"], plan["search_key"]
        if not key:
            plan["search"] = ""
        elif old.get("search_key") == key and old.get("search") and r.exists(layout.blob_key(old["search"])):
            plan["search"] = old["search"]
        else:
            plan["search"] = layout.write_blob(r, pack_catalogue(title_catalogue(con, tenant)))


def _write_parallel(plans, versions, sizes, opener, client, batch, workers, step, meanwhile) -> None:
    """The planned tenants' users in slices over `workers` processes (spawned: the parent's DuckDB threads must
    not be forked); `meanwhile` runs here while they work."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed
    total = sum(len(p["users"]) for p in plans.values())
    size = max(batch, min(SLICE_USERS, -(-total // (workers * 4))))
    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_write_task, opener, client, tenant, versions[tenant], plan["users"][i:i + size],
                               batch, threads): tenant
                   for tenant, plan in plans.items() for i in range(0, len(plan["users"]), size)}
        try:
            meanwhile()
            for future in as_completed(futures):
                n, written, nbytes = future.result()
                sizes[futures[future]][0] += written
                sizes[futures[future]][1] += nbytes
                step(n)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
