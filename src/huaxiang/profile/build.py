"""`huaxiang build`: behaviour features → tags → segments → one profile row per user.

The tables `features` and `profiles` (and `segment_rules`, `clusters`, `item_tokens`) are replaced
as a whole at the end, in one transaction: readers never see a half-built store.

Every population statistic is per tenant (`schema.tenant_of`): segment thresholds, price-band cut points, title
keywords' idf and k-means clusters are each tenant's own, so a tenant's profiles are those it would get alone.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import duckdb
import ibis
import pandas as pd

from ..config import Config
from ..schema import tenant_expr, tenant_sql
from ..store import has_table, plan_without_statistics, transaction
from ..features import behaviour as bh
from ..features import segments as sg
from ..features import tags as tg
from ..features.table import feature_parts, join_parts, price_cuts, reference_times
from ..text.aspects import write_review_mentions
from ..text.encoder import ENCODERS

@dataclass
class BuildReport:
    users: int = 0
    as_of: dict[str, datetime] = field(default_factory=dict)  # per tenant ('' when ids have none)
    seconds: dict[str, float] = field(default_factory=dict)
    segments: dict[str, int] = field(default_factory=dict)


def embedding_model(con, cfg: Config) -> str | None:
    """The encoder whose user vectors the profiles take, once `huaxiang embed` has written them."""
    return ENCODERS[cfg.encoder].name if has_table(con, "user_interests") else None


def _write_frame(con, name: str, df: pd.DataFrame) -> None:
    con.register("_frame", df)
    con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM _frame")
    con.unregister("_frame")


def _replace_tables(con, names: list[str], before: Callable[[], None] | None = None) -> None:
    """Each `_new_<name>` table becomes `<name>`, in one transaction (which `before` runs in first)."""
    with transaction(con):
        if before:
            before()
        for name in names:
            con.execute(f"DROP TABLE IF EXISTS {name}")
            con.execute(f"ALTER TABLE _new_{name} RENAME TO {name}")


def profile_rows(feats, th, cfg: Config):
    """Features -> profile rows: segments against each user's tenant's thresholds (`th`: `sg.thresholds`, or a
    table of `sg.threshold_table`'s columns), tags."""
    th = th if isinstance(th, ibis.expr.types.Table) else sg.threshold_table(th)
    f = feats.left_join(th, tenant_expr(feats.user_id) == th._th_tenant)
    prof = sg.assign(f, sg.conditions(f, cfg.new_days, cfg.at_risk_days, cfg.dormant_days)).drop(*th.columns)
    return prof.mutate(tags=tg.interest_tags(prof), cluster=ibis.null("int64"),
                       habit_utc_offset=ibis.literal(float(cfg.utc_offset_hours)))


def rule_rows(th: dict[str, dict[str, float]], sizes: dict[tuple[str, str], int], cfg: Config) -> pd.DataFrame:
    """The `segment_rules` table: per tenant, each segment's rule with the tenant's numbers, and its size
    (`sizes`: (tenant, segment) -> users)."""
    rows = [(tenant, r.segment, r.definition, sizes.get((tenant, r.segment), 0)) for tenant in sorted(th)
            for r in sg.describe(th[tenant], cfg.new_days, cfg.at_risk_days, cfg.dormant_days, cfg.high_quantile)]
    return pd.DataFrame(rows, columns=["tenant", "segment", "definition", "size"]).astype(
        {"tenant": str, "segment": str, "definition": str, "size": "int64"})


def record_segments(con: duckdb.DuckDBPyConnection) -> None:
    """The segments' drift, kept across builds, per tenant: this build's segment sizes appended to
    `segment_history`, and how many users went from each segment to each other since the last build to
    `segment_moves` (from NULL: new to the store; to NULL: gone from it). Runs while `_new_profiles` has not yet
    replaced `profiles`. (Rows of stores built before tenants were recorded keep a NULL tenant.)"""
    con.execute("CREATE TABLE IF NOT EXISTS segment_history (built_at TIMESTAMP, tenant VARCHAR, segment VARCHAR, "
                "size BIGINT)")
    con.execute("CREATE TABLE IF NOT EXISTS segment_moves (built_at TIMESTAMP, tenant VARCHAR, from_segment VARCHAR, "
                "to_segment VARCHAR, users BIGINT)")
    for table in ("segment_history", "segment_moves"):
        con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS tenant VARCHAR")
    built_at = datetime.now(timezone.utc).replace(tzinfo=None)
    con.execute(f"""INSERT INTO segment_history BY NAME SELECT ? AS built_at, {tenant_sql('user_id')} AS tenant,
        segment, count(*) AS size FROM _new_profiles GROUP BY ALL""", [built_at])
    if has_table(con, "profiles"):
        con.execute(f"""INSERT INTO segment_moves BY NAME SELECT ? AS built_at, {tenant_sql('user_id')} AS tenant,
            o.segment AS from_segment, n.segment AS to_segment, count(*) AS users
            FROM profiles o FULL JOIN _new_profiles n USING (user_id) GROUP BY ALL""", [built_at])


class ProfileRefresher:
    """Incremental update of a few users: their features, segment and tags recomputed from the store as it is now,
    their rows in `features` and `profiles` replaced (one transaction); everyone else untouched.

    The SQL is compiled and prepared once (Ibis compilation costs ~1 s, DuckDB's planning of the feature query
    ~30 ms; running it on a handful of users, a few ms), planned without statistics propagation for the whole
    database (`plan_without_statistics`: a prepared plan must not depend on what the tables held when it was made):
    the users to refresh and the tenants' reference times are read from two temp tables filled per call. Segment
    thresholds and price-band cut points are each tenant's at construction (from the profiles and prices then); a
    tenant new since the last full build gets them at the next one (until then: no threshold segment, no band)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, cfg: Config):
        self.con = con.cursor()  # temp tables are private to this cursor
        plan_without_statistics(self.con)  # before PREPARE (a re-plan after a change of the catalog, too)
        self.con.execute("CREATE OR REPLACE TEMP TABLE _refresh_users (user_id VARCHAR)")
        self.con.execute("CREATE OR REPLACE TEMP TABLE _refresh_refs (tenant VARCHAR, as_of TIMESTAMP)")
        ib = ibis.duckdb.from_connection(self.con)
        only = ib.table("_refresh_users").user_id
        # the per-tenant statistics as temp tables: the prepared statements read them (an in-memory table would
        # not be there when they run)
        th = sg.thresholds(ib.table("features"), cfg.high_quantile, cfg.potential_quantile)
        th = ib.create_table("_refresh_thresholds", sg.threshold_table(th), temp=True, overwrite=True)
        cuts = ib.create_table("_refresh_cuts", bh.price_cut_table(price_cuts(ib)), temp=True, overwrite=True)
        users, parts = feature_parts(ib, cfg, ib.table("_refresh_refs"), cuts,
                                     has_table(self.con, "review_sentiment"), embedding_model(self.con, cfg),
                                     only=only)
        feats_sql = ibis.to_sql(join_parts(users, list(parts.values())), dialect="duckdb")
        # profiles are computed from the fresh feature rows (a temp table), not from a second feature query
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE _refresh_feats AS SELECT * FROM ({feats_sql}) LIMIT 0")
        prof = profile_rows(ib.table("_refresh_feats"), th, cfg)
        refs = bh.data_ends(ib.table("events"), ib.table("orders"))  # each wanted tenant's data end, now
        refs = refs.filter(refs.tenant.isin(tenant_expr(only)))
        # prepared once: DuckDB then skips parsing, binding and optimising the large statements on each call
        self.con.execute(f"PREPARE _refresh_refs_q AS INSERT INTO _refresh_refs BY NAME "
                         f"{ibis.to_sql(refs, dialect='duckdb')}")
        self.con.execute(f"PREPARE _refresh_feats_q AS INSERT INTO _refresh_feats {feats_sql}")
        self.con.execute(f"PREPARE _refresh_profiles_q AS INSERT INTO profiles BY NAME "
                         f"{ibis.to_sql(prof, dialect='duckdb')}")

    def refresh(self, user_ids: list[str], within: bool = False) -> int:
        """Returns the number of profiles written. `within`: in the transaction the caller holds open on
        `self.con` (the writer's live path: it reads a snapshot it chose), instead of one of its own."""
        if not user_ids:
            return 0
        c = self.con
        c.execute("DELETE FROM _refresh_users")
        c.execute("INSERT INTO _refresh_users SELECT DISTINCT unnest(?)", [list(user_ids)])
        c.execute("DELETE FROM _refresh_refs")
        c.execute("EXECUTE _refresh_refs_q")
        with nullcontext() if within else transaction(c):
            c.execute("DELETE FROM _refresh_feats")
            c.execute("EXECUTE _refresh_feats_q")
            c.execute("DELETE FROM features WHERE user_id IN (SELECT user_id FROM _refresh_users)")
            c.execute("INSERT INTO features BY NAME SELECT * FROM _refresh_feats")
            c.execute("DELETE FROM profiles WHERE user_id IN (SELECT user_id FROM _refresh_users)")
            written = c.execute("EXECUTE _refresh_profiles_q").fetchone()[0]
        return written


def build_profiles(con: duckdb.DuckDBPyConnection, cfg: Config, as_of: datetime | None = None,
                   step: Callable[[str], None] | None = None,
                   progress: Callable[[int, int], None] | None = None) -> BuildReport:
    """Builds `features` and `profiles` from the store. `step(name)` is called as each stage starts,
    `progress(done, total)` within a long stage."""
    step = step or (lambda name: None)
    report = BuildReport()
    timer = time.perf_counter()

    def lap(name):
        nonlocal timer
        now = time.perf_counter()
        report.seconds[name] = now - timer
        timer = now

    ib = ibis.duckdb.from_connection(con)
    refs = reference_times(ib, as_of)

    step("tokenising item titles")
    titled = con.execute("SELECT item_id, title FROM items WHERE title IS NOT NULL").df()
    _write_frame(con, "_new_item_tokens", tg.item_tokens(titled))
    _replace_tables(con, ["item_tokens"])
    lap("tokens")

    step("reading reviews: aspects, brands, colours, products")
    write_review_mentions(con, progress)
    _replace_tables(con, ["review_mentions"])
    lap("review mentions")

    # each group of features is computed on its own (so that it has the whole memory budget),
    # then the small per-user results are joined
    users, parts = feature_parts(ib, cfg, refs, price_cuts(ib), has_table(con, "review_sentiment"),
                                 embedding_model(con, cfg))
    done = []
    for i, (name, expr) in enumerate(parts.items()):
        step(f"features: {name}")
        done.append(ib.create_table(f"_part_{i}", expr, temp=True, overwrite=True))
    ib.create_table("_new_features", join_parts(ib.create_table("_part_users", users, temp=True, overwrite=True),
                                                done), overwrite=True)
    for i in range(len(done)):
        con.execute(f"DROP TABLE _part_{i}")
    con.execute("DROP TABLE _part_users")
    lap("features")

    step("assigning segments and tags")
    feats = ib.table("_new_features")
    th = sg.thresholds(feats, cfg.high_quantile, cfg.potential_quantile)
    ib.create_table("_new_profiles", profile_rows(feats, th, cfg), overwrite=True)
    lap("segments")

    clusters = pd.DataFrame()
    if cfg.kmeans:
        step(f"k-means with k={cfg.kmeans}")
        df = con.execute(f"SELECT user_id, {', '.join(sg.KMEANS_FEATURES)} FROM _new_profiles ORDER BY user_id").df()
        labels, clusters = sg.kmeans(df, cfg.kmeans, cfg.seed)  # each tenant's own clusters
        con.register("_labels", pd.DataFrame({"user_id": df["user_id"], "cluster": labels}))
        con.execute("UPDATE _new_profiles p SET cluster = l.cluster FROM _labels l WHERE p.user_id = l.user_id")
        con.unregister("_labels")
        lap("kmeans")
    if not len(clusters):
        clusters = pd.DataFrame({"tenant": pd.Series(dtype="string"), "cluster": pd.Series(dtype="int64"),
                                 "size": pd.Series(dtype="int64")})
    _write_frame(con, "_new_clusters", clusters)

    sizes = {(t, s): n for t, s, n in con.execute(
        f"SELECT {tenant_sql('user_id')}, segment, count(*) FROM _new_profiles GROUP BY ALL").fetchall()}
    _write_frame(con, "_new_segment_rules", rule_rows(th, sizes, cfg))
    _replace_tables(con, ["features", "profiles", "segment_rules", "clusters"], lambda: record_segments(con))
    report.users = con.execute("SELECT count(*) FROM profiles").fetchone()[0]
    report.as_of = dict(con.execute(
        f"SELECT {tenant_sql('user_id')}, max(as_of) FROM profiles GROUP BY 1 ORDER BY 1").fetchall())
    for (_, segment), n in sorted(sizes.items()):
        report.segments[segment] = report.segments.get(segment, 0) + n  # the store's, all tenants together
    return report
