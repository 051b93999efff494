"""What the routes of `huaxiang serve` share: one `Service` per app, built by `create_app` and kept on
`app.state.service` (the routes reach it through `deps.py`).

The service owns its DuckDB file (DuckDB allows one writing process); each request works on its own cursor.
Writes (a batch of events with its profile refresh, a deletion, key changes) run one at a time under `write_lock`,
so a deletion racing a batch for the same user never meets a write conflict or leaves half a user behind.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from uuid import uuid4

import duckdb
from fastapi import HTTPException

from ..config import load_config
from ..schema import tenant_sql
from ..store import connect, has_table
from .docs import ProfileDocs
from .keys import Key, create_key, key_hash, list_keys, load_keys, revoke_key
from .limits import FailedAttempts, KeyRate
from .metrics import Metrics
from .sessions import Sessions

log = logging.getLogger("huaxiang.serve")


@dataclass(frozen=True)
class ServeSettings:
    max_body_bytes: int = 1_000_000  # a request body over this gets 413, counted as it streams in
    max_batch_events: int = 5_000  # events per POST /v1/events
    key_reload_seconds: float = 2.0  # the key table is re-read this often (a revocation elsewhere takes effect)
    profile_docs: int = 200_000  # profile documents held in memory, most recently active users first
    key_rate: float = 2_000.0  # requests per second per key (token bucket); 0: no limit
    key_burst: float | None = None  # the bucket's size (default: one second's worth)
    failed_keys: int = 20  # failed key attempts per client address per minute before it gets 429
    session_hours: float = 8.0  # a sign-in to the pages lasts this long
    body_seconds: float = 10.0  # the wait allowed between two packets of a request body (else 408)
    header_seconds: float = 10.0  # a request's headers must arrive within this (else the connection is closed)
    work_threads: int = 1  # recommendation and search requests computed at once (more wait their turn: with
    # the GIL a second thread for this CPU-bound work lost ~12% of the throughput here)
    exposures: bool = True  # record what the answers showed (huaxiang.experiments.exposures)
    explore: float = 0.0  # the share of recommendations drawn at random from the pool (experiments.explore)
    explore_pool: int = 50  # the pool of best candidates exploration draws from (at least k)


class Base:
    """What both kinds of service hold: the settings, the API keys (hash -> record), sign-in sessions, rate limits
    and request metrics; `work` runs CPU-bound requests off the event loop."""

    def __init__(self, settings: ServeSettings, keys: dict[str, Key], sessions):
        self.settings, self.keys, self.sessions = settings, keys, sessions
        self.key_rate = KeyRate(settings.key_rate, settings.key_burst)
        self.failures = FailedAttempts(settings.failed_keys)
        self.limiter = None  # how many `work` calls run at once
        self.metrics = Metrics()
        self.write_lock = threading.RLock()  # every write (see the module's docstring)
        self.exposures = None  # an experiments.exposures.ExposureLog: what the answers showed

    def exposed(self, user_id: str | None, surface: str, answer: dict, started: float) -> dict:
        """`answer` (a recommendation or a search, computed since `time.perf_counter()` was `started`) with a fresh
        `request_id`; its items queued as exposures, off the request path, with the answer's `model` ({"name",
        "version"} of the recommender that served it) and `experiment` ({"name", "variant"}) when it has them; a
        search's model is "search" or "search+personal"."""
        from ..experiments.exposures import record
        request_id = uuid4().hex
        if self.exposures is not None and answer.get("items"):
            model, test = answer.get("model") or {}, answer.get("experiment") or {}
            self.exposures.add(record(
                request_id, user_id, surface, answer["items"],
                model.get("name") or ("search+personal" if answer.get("personalised") else "search"),
                model.get("version"), test.get("name"), test.get("variant"),
                latency_ms=(time.perf_counter() - started) * 1e3))
        return {"request_id": request_id, **answer}

    def recommend(self, user_id: str, k: int, explain: bool) -> dict:
        """The user's recommendation (`ranked`); with `explore` set, drawn from a pool of `explore_pool` ranked
        candidates (experiments.explore: each item then carries its `propensity`)."""
        if not self.settings.explore:
            return self.ranked(user_id, k, explain)
        from ..experiments.explore import explore
        answer = self.ranked(user_id, max(k, self.settings.explore_pool), explain)
        answer["items"] = explore(answer["items"], k, self.settings.explore)
        answer["k"] = k
        return answer

    def ranked(self, user_id: str, k: int, explain: bool) -> dict:
        raise NotImplementedError

    @staticmethod
    def served_by(answer: dict, rec, experiment: str | None = None, variant: str | None = None) -> dict:
        """A recommendation `answer` with the recommender that made it (`model`: its registry name and version) and,
        in an experiment, the user's arm (`experiment`: name and variant)."""
        answer["model"] = {"name": rec.meta.get("name") or rec.meta.get("model"), "version": rec.meta.get("version")}
        if experiment is not None:
            answer["experiment"] = {"name": experiment, "variant": variant}
        return answer

    async def work(self, fn, *args):
        """`fn(*args)` in a worker thread, at most `work_threads` at once (the event loop keeps answering)."""
        import anyio
        if self.limiter is None:  # made inside the event loop
            self.limiter = anyio.CapacityLimiter(self.settings.work_threads)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    def reload_keys(self) -> None:
        raise NotImplementedError

    def reload_keys_forever(self) -> None:
        """Re-reads the key table every `key_reload_seconds` (a thread started by `create_app`), so that a key
        revoked or made elsewhere takes effect within that time, without a store query on the request path."""
        while True:
            time.sleep(self.settings.key_reload_seconds)
            try:
                self.reload_keys()
            except Exception as exc:  # keep the keys held; try again next time
                log.error("could not re-read the API keys (%s: %s)", type(exc).__name__, exc)

    def key_for(self, key: str | None) -> Key | None:
        """The record of a valid key (None: unknown, revoked or expired)."""
        if not key:
            return None
        return self.key_by_hash(key_hash(key))

    def key_by_hash(self, hashed: str | None) -> Key | None:
        found = self.keys.get(hashed) if hashed else None
        return None if found is None or found.expired() else found


class Service(Base):
    """The embedded service: the store's connection, the profile documents, the recommender (loaded on first use)
    and the profile refresher, besides what `Base` holds. The methods the routes call (`profile_doc`, `recommend`,
    `search`, `segments`, … `write_events`, `forget`) are the same on the online service (online.py)."""

    def __init__(self, db: str, settings: ServeSettings):
        self.db, self.cfg = db, load_config()
        self.con = connect(db)
        super().__init__(settings, load_keys(self.con.cursor()), Sessions(settings.session_hours * 3600))
        self.recs = {}  # model spec (None: the promoted one) -> the recommender, loaded when a request needed it
        self.registry_seen = None  # the model registry's state when `recs` was filled (a promotion empties it)
        self.experiments = []  # the running experiments (catalog.Experiment), re-read with the keys
        self.batches = self.con.cursor()  # the API's event batches (under the write lock): its statements stay prepared
        self.writer = None  # an online.writer.OnlineWriter when this server also writes the online store
        self.refresher = None  # the profile refresher, made on the first refresh
        self.lock = threading.Lock()  # the profile refresher (one at a time)
        self.rec_lock = threading.Lock()  # loading the recommender (once)
        self.docs = ProfileDocs(self.con, settings.profile_docs)
        self.docs.warm()
        from ..experiments.catalog import running
        self.experiments = running(self.con.cursor())
        if settings.exposures:
            from ..experiments.exposures import ExposureLog, store_sink
            self.exposures = ExposureLog(store_sink(self.con, self.write_lock))

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self.con.cursor()

    def reload_keys(self) -> None:
        """The key table and the running experiments, read again; the recommenders dropped when the model registry
        changed (a version promoted or rolled back elsewhere: the next request loads the one now promoted)."""
        from ..experiments.catalog import running
        from ..models.registry import FILE, root
        self.keys = load_keys(self.con.cursor())
        self.experiments = running(self.con.cursor())
        registry = root(self.db) / FILE
        seen = registry.stat().st_mtime_ns if registry.exists() else None
        if seen != self.registry_seen:
            with self.rec_lock:
                self.recs, self.registry_seen = {}, seen

    # what the read routes ask for
    async def profile_doc(self, user_id: str) -> bytes | None:
        from fastapi.concurrency import run_in_threadpool
        return self.docs.get(user_id) or await run_in_threadpool(self.docs.fetch, user_id)  # (held: no hand-off)

    def fetch_doc(self, user_id: str) -> bytes | None:
        return self.docs.fetch(user_id)

    def ranked(self, user_id: str, k: int, explain: bool) -> dict:
        """The user's top-k from the promoted recommender, or from their variant's when an experiment covers them."""
        from ..experiments.catalog import covering
        from ..recommend.top_k import recommend
        test = covering(self.experiments, user_id)
        variant, spec = test.variant(user_id) if test else (None, None)
        rec = self.recommender(spec)
        return self.served_by(recommend(self.cursor(), rec, user_id, k, explain), rec, test and test.name, variant)

    def search(self, q: str, user_id: str | None, k: int, tenant: str | None) -> dict:
        from ..recommend.search import search_store
        return search_store(self.cursor(), q, user_id, k, None, self.recommender() if user_id else None,
                            tenant=tenant)

    def segments(self, epsilon: float | None, clv_cap: float, tenants) -> dict:
        from ..profile.segment_report import segment_report
        return segment_report(self.cursor(), epsilon, clv_cap, tenants=tenants)

    def find_users(self, q: str, wanted: list[str], tenants, limit: int) -> list[tuple]:
        """(user, segment, events) of users whose id is one of `wanted` or contains `q`, in `tenants` (None: all)."""
        tenants = sorted(tenants) if tenants is not None else None
        return self.cursor().execute(f"""SELECT user_id, segment, n_events FROM profiles
            WHERE (user_id IN (SELECT unnest(?)) OR contains(lower(user_id), lower(?)))
              AND (? IS NULL OR {tenant_sql('user_id')} IN (SELECT unnest(?)))
            ORDER BY user_id IN (SELECT unnest(?)) DESC, starts_with(lower(user_id), lower(?)) DESC,
                     n_events DESC, user_id LIMIT ?""", [wanted, q, tenants, tenants, wanted, q, limit]).fetchall()

    def week(self, user_id: str, offset_hours: float) -> list[list[int]]:
        from ..profile.render import week_hours
        return week_hours(self.cursor(), user_id, offset_hours)

    def profile_counts(self) -> dict[str, int]:
        c = self.cursor()
        return dict(c.execute(f"SELECT {tenant_sql('user_id')}, count(*) FROM profiles GROUP BY 1").fetchall()) \
            if has_table(c, "profiles") else {}

    def ping(self) -> dict:
        self.cursor().execute("SELECT 1").fetchone()
        return {}

    # what the key routes ask for
    def make_key(self, scope: str, label: str, tenants, expires_in) -> tuple[Key, str]:
        with self.write_lock:
            made = create_key(self.cursor(), scope, label, tenants, expires_in)
            self.reload_keys()
        return made

    def all_keys(self) -> list[Key]:
        return list_keys(self.cursor())

    def revoke_key(self, key_id: str) -> Key:
        with self.write_lock:
            done = revoke_key(self.cursor(), key_id)
            self.reload_keys()
        return done

    # what the experiment routes ask for
    def create_experiment(self, name: str, variants: list[tuple[str, str, float]], tenant: str | None):
        """A new running experiment (catalog.create); it applies to this process's next request."""
        from ..experiments.catalog import create
        with self.write_lock:
            made = create(self.cursor(), self.db, name, variants, tenant)
            self.experiments_changed()
        return made

    def stop_experiment(self, name: str):
        from ..experiments.catalog import stop
        with self.write_lock:
            done = stop(self.cursor(), name)
            self.experiments_changed()
        return done

    def experiments_changed(self) -> None:
        """The running experiments read again, here and, when this server also writes an online store, there."""
        from ..experiments.catalog import running
        self.experiments = running(self.cursor())
        if self.writer is not None:
            from ..online.publish import publish_experiments
            publish_experiments(self.cursor(), self.writer.r, self.db)

    def all_experiments(self, tenants=None) -> list:
        from ..experiments.catalog import all_experiments
        return all_experiments(self.cursor(), tenants)

    def visible_experiment(self, name: str, tenants=None):
        """The experiment `name` if one of `tenants` (None: every tenant) may see it, else None (as if unknown)."""
        return next((e for e in self.all_experiments(tenants) if e.name == name), None)

    def experiment_report(self, name: str) -> dict:
        """The report (catalog.report), over every exposure shown so far (the queue is written first)."""
        from ..experiments.catalog import report
        if self.exposures is not None:
            self.exposures.flush()
        return report(self.cursor(), name, self.cfg.attribution_window_hours)

    def export_exposures(self, path: str, until, tenants) -> dict[str, int]:
        """The explored exposures as an off-policy log (attribution.export_log), the queue written first."""
        from ..experiments.attribution import export_log
        if self.exposures is not None:
            self.exposures.flush()
        return export_log(self.cursor(), path, self.cfg.attribution_window_hours, until, tenants)

    # what the write routes ask for
    def write_events(self, batch: list) -> tuple[int, dict]:
        """Validated, stored (one transaction) and the batch's users' profiles refreshed: (200, the counts). The
        refresh runs even when every event was a duplicate: a batch re-sent after a crash between its commit and
        its refresh still gets its profiles."""
        from ..ingest import ingest_records
        with self.write_lock:
            report = ingest_records(self.batches, batch, f"api:{time.time_ns()}",
                                    future_tolerance_s=self.cfg.future_tolerance_seconds)
            refreshed = self.refresh(report.users)
            if self.writer is not None:
                self.writer.write(report.users)
        return 200, {"added": report.added.get("events", 0), "profiles_refreshed": refreshed,
                     "duplicates": report.duplicates.get("events", 0), "quarantined": report.quarantined,
                     "conflicts": report.conflicts, "suppressed": report.suppressed,
                     "rejected": [{"index": line - 1, "field": field, "reason": reason}
                                  for line, field, reason in report.rejected]}

    def forget(self, user_id: str, suppress: bool) -> tuple[int, dict]:
        from ..forget import forget_user
        with self.write_lock:
            if self.exposures is not None:  # (what the answers showed them so far is written, then deleted too)
                self.exposures.flush()
            removed = forget_user(self.cursor(), self.db, user_id, suppress=suppress)  # unknown: 404
            self.docs.drop([user_id])
            for rec in list(self.recs.values()):
                rec.forget_user(user_id)  # the serving snapshots keep serving, without them
            if self.writer is not None:
                self.writer.forgotten([user_id])
        return 200, {"user_id": user_id, "removed": removed, "suppressed": suppress}

    def recommender(self, model: str | None = None):
        """The promoted recommender, or the one the registry spec `model` names (an experiment's variant); loaded
        once. HTTPException 409 when none is trained."""
        from ..recommend.store_model import has_model, load_store_recommender
        rec = self.recs.get(model)
        if rec is None:
            with self.rec_lock:
                rec = self.recs.get(model)
                if rec is None:
                    if not has_model(self.db):
                        raise HTTPException(409, "no recommender trained for this store: run "
                                                 "`huaxiang train recommender`")
                    rec = self.recs[model] = load_store_recommender(self.db, model=model)
        return rec

    def refresh(self, users: list[str]) -> int:
        """Profiles of these (stored) users recomputed now, their documents renewed, their cached recommendation
        context dropped. Used by POST /v1/events and by the stream consumer."""
        from ..profile.build import ProfileRefresher
        users = sorted(set(users))
        for rec in list(self.recs.values()) if users else []:
            rec.forget_context(users)  # recommend() then reads them from the store
        if not users or not has_table(self.cursor(), "profiles"):
            return 0
        with self.lock:
            if self.refresher is None:
                self.refresher = ProfileRefresher(self.con, self.cfg)
            n = self.refresher.refresh(users)
        self.docs.load(users)
        return n

    def refresh_missing(self, chunk: int = 1_000) -> int:
        """Profiles for users with events but no profile — what a crash between a batch's commit and its refresh
        leaves behind. Run in the background at start-up; returns how many were made."""
        c = self.cursor()
        if not has_table(c, "profiles") or not has_table(c, "events"):
            return 0
        users = [u for (u,) in c.execute("""SELECT DISTINCT user_id FROM events
            WHERE user_id NOT IN (SELECT user_id FROM profiles) ORDER BY 1""").fetchall()]
        done = 0
        for i in range(0, len(users), chunk):
            with self.write_lock:
                done += self.refresh(users[i:i + chunk])
        if users:
            log.warning("made %d missing profiles (events stored without a refresh, e.g. after a crash)", done)
        return done
