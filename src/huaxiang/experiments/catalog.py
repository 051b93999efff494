"""The experiments of a store: the `experiments` table, what `huaxiang experiment create|list|stop|report` and the
`/v1/experiments` routes change and read, and which experiment and variant a user is in.

An experiment compares recommenders online: each variant names a trained recommender (a model registry spec:
`itemknn`, `hybrid@3`, …) and has a weight; its users are split by `assign.variant_of` (a hash of the experiment's
own random salt and the user id: sticky, the same on every worker, independent of other experiments). An experiment
covers one tenant (`--tenant NS`: users NS:…; '' for ids without a namespace) or, without one, every tenant; at most
one running experiment covers a user, so two experiments never fight over the same answer. A stopped experiment
keeps its record and its exposures: its report can be read at any time.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime

from ..errors import HuaxiangError
from ..schema import is_tenant_name, tenant_of
from ..store import has_table
from .assign import new_salt, parse_split, variant_of
from .attribution import WINDOW_HOURS, outcomes
from .stats import experiment_report

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
STATUSES = ("running", "stopped")


@dataclass(frozen=True)
class Experiment:
    name: str
    tenant: str | None  # None: every tenant
    salt: str
    variants: tuple[tuple[str, str, float], ...]  # (variant, model spec, weight), the control first
    status: str
    created_at: datetime
    stopped_at: datetime | None = None

    @property
    def control(self) -> str:
        return self.variants[0][0]

    @property
    def split(self) -> list[tuple[str, float]]:
        return [(v, w) for v, _, w in self.variants]

    def covers(self, user_id: str) -> bool:
        return self.tenant is None or tenant_of(user_id) == self.tenant

    def variant(self, user_id: str) -> tuple[str, str]:
        """(variant, model spec) the user sees."""
        name = variant_of(self.salt, user_id, self.split)
        return name, next(m for v, m, _ in self.variants if v == name)

    def listing(self) -> dict:
        return {"name": self.name, "tenant": self.tenant, "status": self.status, "control": self.control,
                "variants": [{"name": v, "model": m, "share": w} for v, m, w in self.variants],
                "created_at": self.created_at.isoformat(), "stopped_at":
                    self.stopped_at.isoformat() if self.stopped_at else None}


def parse_variants(text: str, split: str | None = None) -> list[tuple[str, str, float]]:
    """`control=itemknn,treatment=hybrid` (and `--split 50,50`) as [(variant, model spec, share)], shares summing
    to 1; the first variant is the control."""
    pairs = []
    for part in (p.strip() for p in text.split(",")):
        name, eq, model = part.partition("=")
        if not eq or not name.strip() or not model.strip():
            raise HuaxiangError(f"variant {part!r}: expected NAME=MODEL (e.g. control=itemknn,treatment=hybrid)")
        if not NAME.fullmatch(name.strip()):
            raise HuaxiangError(f"variant name {name.strip()!r}: letters, digits, '_', '.', '-' (at most 64)")
        pairs.append((name.strip(), model.strip()))
    weights = None
    if split is not None:
        try:
            weights = [float(w) for w in split.split(",")]
        except ValueError:
            raise HuaxiangError(f"split {split!r}: expected numbers separated by commas, e.g. 50,50") from None
    shares = parse_split([n for n, _ in pairs], weights)
    return [(n, m, w) for (n, m), (_, w) in zip(pairs, shares)]


def _of(row) -> Experiment:
    name, tenant, salt, variants, status, created, stopped = row
    return Experiment(name, tenant, salt, tuple((v["name"], v["model"], v["share"]) for v in json.loads(variants)),
                      status, created, stopped)


COLUMNS = "name, tenant, salt, variants, status, created_at, stopped_at"


def all_experiments(con, tenants=None) -> list[Experiment]:
    """Every experiment, newest first; with `tenants` (a set), only those covering one of them alone."""
    if not has_table(con, "experiments"):  # (a store opened read-only, made before experiments existed)
        return []
    found = [_of(r) for r in con.execute(f"SELECT {COLUMNS} FROM experiments ORDER BY created_at DESC, name")
             .fetchall()]
    return found if tenants is None else [e for e in found if e.tenant is not None and e.tenant in tenants]


def get(con, name: str) -> Experiment:
    if not has_table(con, "experiments"):
        raise HuaxiangError(f"no experiment {name!r} (this store has none yet)")
    row = con.execute(f"SELECT {COLUMNS} FROM experiments WHERE name = ?", [name]).fetchone()
    if row is None:
        known = [n for (n,) in con.execute("SELECT name FROM experiments ORDER BY name").fetchall()]
        raise HuaxiangError(f"no experiment {name!r} (known: {', '.join(known) or 'none'})")
    return _of(row)


def create(con, db: str, name: str, variants: list[tuple[str, str, float]], tenant: str | None = None) -> Experiment:
    """A new running experiment of the store `db` (`con`). Refused: a variant's model unknown to the store's registry,
    a name taken (even by a stopped one: its report stays), a malformed tenant, or a running experiment covering
    some of the same users."""
    from ..models.registry import resolve
    for _, spec, _ in variants:
        resolve(db, "recommender", spec)  # (unknown: a one-line error naming what exists)
    if not NAME.fullmatch(name or ""):
        raise HuaxiangError(f"experiment name {name!r}: letters, digits, '_', '.', '-' (at most 64), first a "
                            "letter or digit")
    if tenant is not None and not is_tenant_name(tenant):
        raise HuaxiangError(f"tenant {tenant!r} is not a tenant name")
    con.execute("BEGIN TRANSACTION")
    try:
        if con.execute("SELECT count(*) FROM experiments WHERE name = ?", [name]).fetchone()[0]:
            raise HuaxiangError(f"experiment {name!r} exists already (names are kept after a stop: choose another)")
        for other in running(con):
            if other.tenant is None or tenant is None or other.tenant == tenant:
                raise HuaxiangError(f"experiment {other.name!r} is running on the same users ("
                                    f"{'every tenant' if other.tenant is None else 'tenant ' + repr(other.tenant)}): "
                                    f"stop it first")
        shares = [{"name": v, "model": m, "share": w} for v, m, w in variants]
        con.execute("INSERT INTO experiments VALUES (?, ?, ?, ?, 'running', now()::TIMESTAMP, NULL)",
                    [name, tenant, new_salt(), json.dumps(shares)])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return get(con, name)


def stop(con, name: str) -> Experiment:
    """Stops a running experiment: its users get the promoted recommender again; its record and report stay."""
    found = get(con, name)
    if found.status != "running":
        raise HuaxiangError(f"experiment {name!r} is not running (stopped at {found.stopped_at})")
    con.execute("UPDATE experiments SET status = 'stopped', stopped_at = now()::TIMESTAMP WHERE name = ?", [name])
    return get(con, name)


def running(con) -> list[Experiment]:
    return [_of(r) for r in con.execute(
        f"SELECT {COLUMNS} FROM experiments WHERE status = 'running' ORDER BY created_at").fetchall()]


def covering(experiments: list[Experiment], user_id: str) -> Experiment | None:
    """The running experiment a user is in (None: none covers them)."""
    return next((e for e in experiments if e.covers(user_id)), None)


def report(con, name: str, window_hours: float = WINDOW_HOURS) -> dict:
    """The experiment's report: its record and, per variant, exposed users, impressions, CTR, conversion, revenue
    per exposed user (95% intervals), lifts against the control with p-values, the sample-ratio check and the
    latency guardrail (stats.experiment_report), from its exposures and the events attributed to them."""
    found = get(con, name)
    result = experiment_report(outcomes(con, name, window_hours), dict(found.split), found.control)
    for v, m, _ in found.variants:
        result["variants"][v]["model"] = m
        versions = [r[0] for r in con.execute("""SELECT DISTINCT model || coalesce('@' || version, '') FROM exposures
            WHERE experiment = ? AND variant = ? ORDER BY 1""", [name, v]).fetchall()]
        result["variants"][v]["served"] = versions
    return {"experiment": found.listing(), "window_hours": window_hours, **result}
