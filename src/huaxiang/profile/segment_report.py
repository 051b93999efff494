"""The segments report (`huaxiang segments`, `GET /v1/segments`): segment sizes and what defines each, CLV value
tiers × segments, k-means cluster means — exact, or with differential-privacy noise for sharing outside.

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
"""
from __future__ import annotations

import json

import duckdb
import numpy as np

from ..errors import HuaxiangError
from ..store import has_table
from .scores import value_tiers

DEFINING_FEATURES = ("n_events", "active_days", "frequency", "monetary", "recency_days", "idle_days", "buy_rate",
                     "tenure_days")
MIN_EPSILON, MAX_EPSILON = 0.01, 100.0  # below 0.01 the noise drowns any count (and sampling it takes long)


def segment_report(con: duckdb.DuckDBPyConnection, epsilon: float | None = None, clv_cap: float = 1_000.0,
                   seed: int | None = None) -> dict:
    try:
        rows = con.execute("SELECT segment, definition, size FROM segment_rules").fetchall()
        clusters = con.execute("SELECT * FROM clusters ORDER BY cluster").df()
    except duckdb.CatalogException as exc:
        raise HuaxiangError("no segments in this store yet: run `huaxiang build` first") from exc
    if epsilon is None:
        total = sum(n for _, _, n in rows) or 1
        return {"segments": [{"segment": s, "definition": d, "size": n, "share": n / total} for s, d, n in rows],
                "features": segment_features(con),
                "value_tiers": value_tiers(con),
                "clusters": json.loads(clusters.to_json(orient="records")),
                "drift": segment_drift(con)}
    return _private(rows, value_tiers(con, clv_cap), epsilon, clv_cap, seed)


def segment_features(con: duckdb.DuckDBPyConnection) -> list[dict]:
    """Per segment, the mean of the features that tell segments apart (NULLs left out of each mean)."""
    means = ", ".join(f"avg({c}) AS {c}" for c in DEFINING_FEATURES)
    cur = con.execute(f"SELECT segment, count(*) AS users, {means} FROM profiles GROUP BY segment ORDER BY users DESC")
    names = [d[0] for d in cur.description]
    return [{k: (None if v is None or v != v else v) for k, v in zip(names, row)} for row in cur.fetchall()]


def segment_drift(con: duckdb.DuckDBPyConnection, builds: int = 30) -> dict:
    """How the segments moved over the last `builds` builds: each build's time and every segment's size in it,
    and how many users went from which segment to which in the latest build (from None: new; to None: gone)."""
    times = [t for (t,) in con.execute("SELECT DISTINCT built_at FROM segment_history ORDER BY built_at DESC LIMIT ?",
                                       [builds]).fetchall()][::-1] if has_table(con, "segment_history") else []
    if not times:  # (a store built before the history was kept)
        return {"builds": [], "sizes": {}, "moves": []}
    sizes: dict[str, list[int]] = {}
    for t, seg, n in con.execute("SELECT built_at, segment, size FROM segment_history WHERE built_at >= ?",
                                 [times[0]]).fetchall():
        sizes.setdefault(seg, [0] * len(times))[times.index(t)] = n
    moves = con.execute("""SELECT from_segment, to_segment, users FROM segment_moves
        WHERE built_at = (SELECT max(built_at) FROM segment_moves) ORDER BY users DESC""").fetchall()
    return {"builds": [t.isoformat(timespec="seconds") for t in times], "sizes": sizes,
            "moves": [{"from": a, "to": b, "users": n} for a, b, n in moves]}


def latest_changes(drift: dict) -> list[tuple[str, int, int]]:
    """(segment, size in the build before the latest, size in the latest) from `segment_drift`'s answer, biggest
    change first; empty with fewer than two builds."""
    if len(drift.get("builds") or []) < 2:
        return []
    rows = [(seg, sizes[-2], sizes[-1]) for seg, sizes in drift["sizes"].items()]
    return sorted(rows, key=lambda r: (-abs(r[2] - r[1]), r[0]))


def _private(rows, tiers, epsilon: float, clv_cap: float, seed: int | None) -> dict:
    from diffprivlib.mechanisms import Geometric, Laplace
    if not MIN_EPSILON <= epsilon <= MAX_EPSILON or not clv_cap > 0:
        raise HuaxiangError(f"epsilon must be in [{MIN_EPSILON}, {MAX_EPSILON}] and clv_cap positive "
                            f"(got epsilon={epsilon}, clv_cap={clv_cap})")
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
            "value_tiers": cells,
            "privacy": {"epsilon": epsilon, "clv_cap": clv_cap,
                        "mechanisms": "geometric (counts, ε/3 each histogram), Laplace (clipped CLV sums, ε/3)",
                        "omitted": "rule definitions, feature means, cluster means and drift"}}
