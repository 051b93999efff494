"""The segments report (`huaxiang segments`, `GET /v1/segments`), per tenant: each tenant's segment sizes and what
defines each (with that tenant's own thresholds), the mean features per segment, CLV value tiers × segments, k-means
cluster means and the drift across builds — exact, or with differential-privacy noise for sharing outside.

The answer is {"tenants": [entry, …]}, one entry per tenant in the order of their names (the default tenant '' of
un-namespaced ids first), only the tenants asked for (`tenants`: the names a caller may see; None: all):
  tenant       the tenant's name ('' for ids without a prefix)
  segments     [{segment, definition, size, share}]: the rules in the order they are tried; share of the tenant
  features     [{segment, users, <the mean of each of DEFINING_FEATURES>}]
  value_tiers  [{value_tier, segment, users, mean_clv}] ([] before `huaxiang score clv`)
  clusters     [{cluster, <the mean of each k-means feature>, size}] ([] without k-means)
  drift        {builds, sizes: {segment: [size per build]}, moves: [{from, to, users}]}
A private report (`epsilon`) holds only `tenant`, `segments` (without definitions) and `value_tiers` per tenant, and
one `privacy` block beside `tenants`.

Differential privacy (`epsilon`): the noise comes from diffprivlib's mechanisms. A user is in exactly one segment
(the first rule they match) and at most one (value tier, segment) cell, so each histogram of counts changes by at
most 1 when one person is added or removed (parallel composition). The budget ε is split in three equal parts:
  segment sizes          ε/3, two-sided geometric noise (integers), sensitivity 1
  tier × segment users   ε/3, geometric noise, sensitivity 1
  tier × segment CLV     ε/3, Laplace noise on the sum of each user's CLV clipped to [0, clv_cap], sensitivity
                         clv_cap; the mean is noisy sum / noisy count (post-processing costs no budget)
Shares are computed from the noisy sizes; negative counts are raised to 0 (post-processing). Left out of a private
report: the rules' text (its thresholds are population quantiles), per-segment feature means, k-means cluster
means and the drift across builds. The guarantee is for the counts and sums given the segment rules and tier
boundaries, which come from the last build and scoring without noise. `clv_cap` must be chosen without looking at the data (it is a bound, not a statistic).
Tenants: each tenant's histograms count its own users only and get the whole ε (split as above). A user belongs to
exactly one tenant, so the tenants' parts are computed on disjoint sets of people and, by parallel composition, the
report over any set of tenants is ε-differentially private (not ε times the number of tenants). Which tenants are
listed is not protected (a tenant is listed once it has users).
"""
from __future__ import annotations

import json

import duckdb
import numpy as np

from ..errors import HuaxiangError
from ..schema import tenant_sql
from ..store import has_table
from .scores import value_tiers

DEFINING_FEATURES = ("n_events", "active_days", "frequency", "monetary", "recency_days", "idle_days", "buy_rate",
                     "tenure_days")
MIN_EPSILON, MAX_EPSILON = 0.01, 100.0  # below 0.01 the noise drowns any count (and sampling it takes long)


def segment_report(con: duckdb.DuckDBPyConnection, epsilon: float | None = None, clv_cap: float = 1_000.0,
                   seed: int | None = None, tenants: list[str] | None = None) -> dict:
    """The report of the tenants in `tenants` (None: every tenant of the store), as the module's doc says."""
    rules = segment_rules(con)
    if tenants is not None:
        wanted = set(tenants)
        rules = {t: rows for t, rows in rules.items() if t in wanted}
    if epsilon is not None:
        _check(epsilon, clv_cap)
        return private_report(rules, _by_tenant(value_tiers(con, clv_cap)), epsilon, clv_cap, seed)
    feats, tiers, clusters = segment_features(con), _by_tenant(value_tiers(con)), segment_clusters(con)
    parts = []
    for t, rows in rules.items():
        total = sum(n for _, _, n in rows) or 1
        parts.append({"tenant": t,
                      "segments": [{"segment": s, "definition": d, "size": n, "share": n / total} for s, d, n in rows],
                      "features": feats.get(t, []), "value_tiers": tiers.get(t, []), "clusters": clusters.get(t, []),
                      "drift": segment_drift(con, t)})
    return {"tenants": parts}


def private_report(rules: dict[str, list], tiers: dict[str, list[dict]], epsilon: float, clv_cap: float,
                   seed: int | None = None) -> dict:
    """The private report from each tenant's rules (`segment_rules`) and value-tier cells with CLVs clipped to
    `clv_cap` (`value_tiers`, or `clipped_tiers` of the values the online store keeps)."""
    _check(epsilon, clv_cap)
    rng = np.random.default_rng(seed)
    parts = [{"tenant": t, **{k: v for k, v in _private(rows, tiers.get(t, []), epsilon, clv_cap,
                                                          int(rng.integers(2**31))).items() if k != "privacy"}}
             for t, rows in rules.items()]
    return {"tenants": parts, "privacy": _privacy(epsilon, clv_cap)}


def tier_values(con: duckdb.DuckDBPyConnection, tenant: str) -> list[tuple[str, str, np.ndarray]]:
    """(value tier, segment, every user's CLV) of one tenant's cells — what a private report with any `clv_cap`
    is computed from (`clipped_tiers`); [] before `huaxiang score clv`."""
    try:
        rows = con.execute(f"""SELECT json_extract_string(s.detail, '$.value_tier') AS tier, p.segment,
                list(s.score ORDER BY s.score) FROM scores s JOIN profiles p USING (user_id)
            WHERE s.kind = 'clv' AND {tenant_sql('s.user_id')} = ? GROUP BY 1, 2""", [tenant]).fetchall()
    except duckdb.CatalogException:
        return []
    return [(t, g, np.asarray(v, dtype=np.float64)) for t, g, v in rows]


def clipped_tiers(cells: list[tuple[str, str, np.ndarray]], clv_cap: float) -> list[dict]:
    """`value_tiers` of one tenant (in its order) from `tier_values`' cells, each CLV clipped to [0, clv_cap]."""
    order = ["top", "high", "medium", "low"]
    rows = [{"value_tier": t, "segment": g, "users": len(v), "mean_clv": float(np.clip(v, 0, clv_cap).mean())}
            for t, g, v in cells if len(v)]
    return sorted(rows, key=lambda r: (order.index(r["value_tier"]) if r["value_tier"] in order else len(order),
                                       -r["users"], r["segment"] or ""))


def tenant_label(tenant: str) -> str:
    """A tenant's name for people: '' is the default tenant of ids without a prefix."""
    return tenant or "default (ids without a tenant prefix)"


def segment_rules(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[str, str, int]]]:
    """{tenant: [(segment, definition, size)]} from the last build, the rules in the order they are tried."""
    try:
        rows = con.execute("SELECT tenant, segment, definition, size FROM segment_rules ORDER BY tenant, rowid"
                           ).fetchall()
    except duckdb.CatalogException as exc:
        raise HuaxiangError("no segments in this store yet: run `huaxiang build` first") from exc
    except duckdb.BinderException as exc:
        raise HuaxiangError("this store's segments were built before they were kept per tenant: run `huaxiang "
                            "build` again") from exc
    out: dict[str, list] = {}
    for tenant, segment, definition, size in rows:
        out.setdefault(tenant, []).append((segment, definition, size))
    return out


def _by_tenant(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows that carry a `tenant` key, grouped by it (the key left out of each row)."""
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(row["tenant"], []).append({k: v for k, v in row.items() if k != "tenant"})
    return out


def segment_features(con: duckdb.DuckDBPyConnection) -> dict[str, list[dict]]:
    """Per tenant and segment, the mean of the features that tell segments apart (NULLs left out of each mean);
    {tenant: [{segment, users, …}]}, the largest segment first."""
    means = ", ".join(f"avg({c}) AS {c}" for c in DEFINING_FEATURES)
    cur = con.execute(f"""SELECT {tenant_sql('user_id')} AS tenant, segment, count(*) AS users, {means} FROM profiles
        GROUP BY ALL ORDER BY tenant, users DESC, segment""")
    names = [d[0] for d in cur.description]
    return _by_tenant([{k: (None if v is None or v != v else v) for k, v in zip(names, row)}
                       for row in cur.fetchall()])


def segment_clusters(con: duckdb.DuckDBPyConnection) -> dict[str, list[dict]]:
    """{tenant: [{cluster, <mean features>, size}]}: each tenant's k-means clusters ({} without k-means)."""
    if not has_table(con, "clusters"):
        return {}
    frame = con.execute("SELECT * FROM clusters ORDER BY tenant, cluster").df()
    return _by_tenant(json.loads(frame.to_json(orient="records")))


def segment_drift(con: duckdb.DuckDBPyConnection, tenant: str, builds: int = 30) -> dict:
    """How a tenant's segments moved over the store's last `builds` builds: each build's time and every segment's
    size in it (0 in a build without it), and how many users went from which segment to which in the latest build
    (from None: new; to None: gone)."""
    times = [t for (t,) in con.execute("""SELECT DISTINCT built_at FROM segment_history WHERE tenant IS NOT NULL
        ORDER BY built_at DESC LIMIT ?""", [builds]).fetchall()][::-1] if has_table(con, "segment_history") else []
    if not times:  # (a store built before the history was kept per tenant)
        return {"builds": [], "sizes": {}, "moves": []}
    sizes: dict[str, list[int]] = {}
    for t, seg, n in con.execute("""SELECT built_at, segment, size FROM segment_history
            WHERE tenant = ? AND built_at >= ? ORDER BY built_at, segment""", [tenant, times[0]]).fetchall():
        sizes.setdefault(seg, [0] * len(times))[times.index(t)] = n
    moves = con.execute("""SELECT from_segment, to_segment, users FROM segment_moves
        WHERE tenant = ? AND built_at = (SELECT max(built_at) FROM segment_moves)
        ORDER BY users DESC, from_segment NULLS FIRST, to_segment NULLS FIRST""", [tenant]).fetchall()
    return {"builds": [t.isoformat(timespec="seconds") for t in times], "sizes": sizes,
            "moves": [{"from": a, "to": b, "users": n} for a, b, n in moves]}


def latest_changes(drift: dict) -> list[tuple[str, int, int]]:
    """(segment, size in the build before the latest, size in the latest) from `segment_drift`'s answer, biggest
    change first; empty with fewer than two builds."""
    if len(drift.get("builds") or []) < 2:
        return []
    rows = [(seg, sizes[-2], sizes[-1]) for seg, sizes in drift["sizes"].items()]
    return sorted(rows, key=lambda r: (-abs(r[2] - r[1]), r[0]))


def _check(epsilon: float, clv_cap: float) -> None:
    if not MIN_EPSILON <= epsilon <= MAX_EPSILON or not clv_cap > 0:
        raise HuaxiangError(f"epsilon must be in [{MIN_EPSILON}, {MAX_EPSILON}] and clv_cap positive "
                            f"(got epsilon={epsilon}, clv_cap={clv_cap})")


def _privacy(epsilon: float, clv_cap: float) -> dict:
    return {"epsilon": epsilon, "clv_cap": clv_cap,
            "mechanisms": "geometric (counts, ε/3 each histogram), Laplace (clipped CLV sums, ε/3)",
            "tenants": "each tenant's part spends ε on its own users (disjoint: parallel composition)",
            "omitted": "rule definitions, feature means, cluster means and drift"}


def _private(rows, tiers, epsilon: float, clv_cap: float, seed: int | None) -> dict:
    """One population's private report: (segment, definition, size) rows and its value-tier cells, noised."""
    from diffprivlib.mechanisms import Geometric, Laplace
    _check(epsilon, clv_cap)
    part = epsilon / 3
    rng = np.random.default_rng(seed)
    count = Geometric(epsilon=part, sensitivity=1, random_state=rng.integers(2**31))
    total_clv = Laplace(epsilon=part, sensitivity=clv_cap, random_state=rng.integers(2**31))
    sizes = [(s, max(0, count.randomise(int(n)))) for s, _, n in rows]
    total = sum(n for _, n in sizes) or 1
    cells = []
    for t in tiers:
        users = max(0, count.randomise(int(t["users"])))
        clipped_sum = max(0.0, total_clv.randomise(t["mean_clv"] * t["users"]))
        cells.append({"value_tier": t["value_tier"], "segment": t["segment"], "users": users,
                      "mean_clv": clipped_sum / max(users, 1)})
    return {"segments": [{"segment": s, "size": n, "share": n / total} for s, n in sizes],
            "value_tiers": cells, "privacy": _privacy(epsilon, clv_cap)}
