"""Benchmark: huaxiang's online reader against Feast's Python feature server on the same profiles, the same
Redis, the same open-loop load generator and the same machine, in one run.

    .venv/bin/python benchmarks/feast_peer.py [--db STORE] [--rates 1000,2000] [--seconds 30] [--warmup 5]
                                              [--workers 1 [2]] [--connections 64]

Feast runs in its own virtual environment, benchmarks/.feast-venv (feast[redis]==0.67.0 pins pandas<3 and
redis<8, which huaxiang's venv cannot hold). The script creates it when it is missing:
    python3.11 -m venv benchmarks/.feast-venv && benchmarks/.feast-venv/bin/pip install 'feast[redis]==0.67.0'
(--feast-venv DIR to use another). Nothing in the run needs the network beyond that install: every server listens
on 127.0.0.1, and Feast runs with its telemetry and lineage switched off.

Data: --db STORE (read only), or by default a store built here from the Taobao slice (814 shoppers; `huaxiang
ingest` + `huaxiang build`). Each system gets its own fresh `redis-server --save "" --appendonly no`:
  huaxiang  `huaxiang publish --to URL --db STORE` (timed), a read key from `huaxiang keys create --online URL`,
            `huaxiang serve --online URL --workers W --key-rate 100000` (the per-key limiter runs but never refuses
            here), and GET /v1/users/{id}/profile with the key: the profile document.
  Feast     a feature repository in a temporary folder: a FileSource over a Parquet export of the store's
            `profiles` table (scalar columns typed, list and struct columns as JSON strings, event_timestamp =
            last_ts), Entity user (join key user_id, STRING), one FeatureView user_profile with every feature (its
            ttl reaches the oldest row), a FeatureService over it with precompute_online=True; provider local, file
            registry, file offline store, Redis online store, entity key serialization 3. `feast apply` and
            `feast materialize-incremental NOW` (timed), then `feast serve --workers W --no-access-log` and POST
            /get-online-features for one user at a time: the features listed, or the feature service (asked with
            full_feature_names, the names Feast 0.67 stores its pre-computed vectors under).
  Before any load, 20 users' answers are checked against the store (Feast) and for status 200 (huaxiang).

Feast variants (workers always equal to huaxiang's):
  defaults  `feast serve` defaults (a worker is recycled every 1,000 requests ± 50; registry refresh every 60 s)
  guide     the values of Feast's online-server performance-tuning guide: --worker-connections 2000
            --max-requests 10000 --max-requests-jitter 500 --keep-alive-timeout 30 --registry_ttl_sec 300
  norecycle the guide's values with --max-requests 0 (gunicorn never recycles a worker)

The run, for each worker count:
  1. capacity: each server hammered closed loop (--capacity-clients connections, 2 s discarded, then
     --capacity-seconds): huaxiang, every Feast variant with the features listed, then the fastest variant with the
     feature service. The fastest Feast variant and form is Feast's side from then on (--no-probe: --feast-variant
     and --feast-form instead).
  2. matched: both, open loop, at half of Feast's capacity (a rate both sustain), --matched-seconds.
  3. headline: at each of --rates, order huaxiang, Feast, huaxiang, Feast (drift shows), open loop.
Every server is started afresh for its run and stopped after it; only one system runs at a time. Open loop
(benchmarks/loadgen.py): requests are scheduled at the rate from one seeded user sequence (the same for both),
sent over --connections keep-alive connections, latency counted from the scheduled send time; --warmup seconds at
the rate are sent first and not counted; what is unanswered --drain seconds after the last scheduled send is a
timeout (an error). Reports p50 / p90 / p99 / max, errors, achieved rate and mean response bytes per run and per
rate (rounds pooled), publish vs apply + materialize times, Redis memory, the versions (both venvs' redis-py and
hiredis, redis-server), CPU and date; writes benchmarks/out/latency/feast_peer.json.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import uvloop

import loadgen
from machine import LATENCY_OUT, cpu_name, stamp

HERE = Path(__file__).resolve().parent
FEAST_VENV = HERE / ".feast-venv"
FEAST_PIN = "feast[redis]==0.67.0"
SLICE = HERE.parents[1] / "shared" / "data" / "taobao_userbehavior_head" / "UserBehavior_head.csv.gz"
CLI = [sys.executable, "-m", "huaxiang.cli"]
SEED = 0
SEQUENCE = 20_000  # the seeded user sequence both systems are asked for, cycled
KEY_RATE = 100_000  # huaxiang serve --key-rate: the per-key limiter runs but never refuses at these rates
FEAST_TYPES = {"VARCHAR": "String", "BIGINT": "Int64", "INTEGER": "Int32", "SMALLINT": "Int32", "DOUBLE": "Float64",
               "FLOAT": "Float32", "BOOLEAN": "Bool", "TIMESTAMP": "UnixTimestamp",
               "TIMESTAMP WITH TIME ZONE": "UnixTimestamp"}
VARIANTS = {
    "defaults": [],
    "guide": ["--worker-connections", "2000", "--max-requests", "10000", "--max-requests-jitter", "500",
              "--keep-alive-timeout", "30", "--registry_ttl_sec", "300"],
    "norecycle": ["--worker-connections", "2000", "--max-requests", "0", "--keep-alive-timeout", "30",
                  "--registry_ttl_sec", "300"],
}


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# --- environments ---------------------------------------------------------------------------------------------

def feast_env() -> dict:
    """The environment of every Feast command: no venv of ours, no telemetry, no lineage, no progress bars."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update(FEAST_USAGE="False", FEAST_OPENLINEAGE_ENABLED="false", FEAST_NO_PROGRESS="1",
               PYTHONUNBUFFERED="1", DO_NOT_TRACK="1")
    return env


def ensure_feast_venv(venv: Path) -> Path:
    """The venv's bin folder, creating the venv (python3.11, feast[redis]==0.67.0) when it is missing."""
    feast = venv / "bin" / "feast"
    if not feast.exists():
        python = shutil.which("python3.11") or sys.executable
        say(f"creating {venv} ({FEAST_PIN}; a few minutes) …")
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", FEAST_PIN], check=True)
    return feast.parent


def versions(feast_bin: Path) -> dict:
    probe = ("import json, importlib.metadata as m\n"
             "def v(p):\n"
             "    try: return m.version(p)\n"
             "    except m.PackageNotFoundError: return None\n"
             "print(json.dumps({p: v(p) for p in %r}))")
    packages = ["feast", "redis", "hiredis", "fastapi", "uvicorn", "gunicorn", "uvicorn-worker", "pandas", "pyarrow",
                "protobuf", "uvloop", "httptools"]
    feast = json.loads(subprocess.run([str(feast_bin / "python"), "-c", probe % packages], check=True,
                                      capture_output=True, text=True, env=feast_env()).stdout)
    ours = json.loads(subprocess.run([sys.executable, "-c", probe % (["huaxiang"] + packages[1:])], check=True,
                                     capture_output=True, text=True).stdout)
    server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "-C", str(HERE.parent), "describe", "--always", "--dirty"], capture_output=True,
                            text=True).stdout.strip()
    return {"huaxiang_venv": {k: v for k, v in ours.items() if v}, "huaxiang_commit": commit,
            "feast_venv": {k: v for k, v in feast.items() if v}, "redis_server": server,
            "python": sys.version.split()[0], "cpu": cpu_name(), "cores": os.cpu_count(),
            "cores_usable": len(os.sched_getaffinity(0)),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


# --- processes --------------------------------------------------------------------------------------------------

@contextmanager
def redis_server(folder: Path):
    """A fresh loopback `redis-server --save "" --appendonly no`; yields (url, port)."""
    from huaxiang.stream import local_redis
    folder.mkdir(parents=True, exist_ok=True)
    with local_redis(str(folder)) as url:
        yield url, int(url.rsplit(":", 1)[1].split("/")[0])


def used_memory(url: str) -> int:
    import redis
    return int(redis.Redis.from_url(url).info("memory")["used_memory"])


@contextmanager
def process(argv: list[str], log: Path, probe: bytes, port: int, env: dict | None = None, cwd: str | None = None):
    """Runs argv (in its own process group) until the block ends; yields once `probe` sent to the port answers
    200 (a real request, so that the workers are up, not only the listening socket)."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with status {proc.returncode}; log {log}:\n"
                                   + log.read_text()[-3000:])
            try:
                status = ask(port, probe)[0]
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{argv[:3]} did not answer 200 in 120 s; log {log}:\n" + log.read_text()[-3000:])
            time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def ask(port: int, request: bytes) -> tuple[int, bytes]:
    """One prepared request on a new connection; (status, body)."""
    method, rest = request.split(b" ", 1)
    path = rest.split(b" ", 1)[0].decode()
    head, body = request.split(b"\r\n\r\n", 1)
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
    headers.pop("Host", None)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method.decode(), path, body=body or None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# --- data -------------------------------------------------------------------------------------------------------

def build_store(db: Path, log: Path) -> None:
    with open(log, "ab") as out:
        for step in (["ingest", str(SLICE), "--format", "taobao", "--namespace", "taobao"], ["build"]):
            subprocess.run(CLI + step + ["--db", str(db)], check=True, stdout=out, stderr=subprocess.STDOUT)


def export_profiles(db: Path, parquet: Path) -> tuple[list[tuple[str, str]], list[str], float]:
    """The `profiles` table as Parquet for Feast: [(feature, Feast type)], the user ids, and the age in days of
    the oldest event_timestamp (the feature view's ttl must reach it for materialize-incremental)."""
    import duckdb
    with duckdb.connect(str(db), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        columns = con.execute("SELECT column_name, data_type FROM information_schema.columns "
                              "WHERE table_name = 'profiles' ORDER BY ordinal_position").fetchall()
        fields, select = [], ["user_id"]
        for name, kind in columns:
            if name == "user_id":
                continue
            feast_type = FEAST_TYPES.get(kind)
            if feast_type is None:  # lists, structs, maps: one JSON string
                select.append(f"CAST(to_json({name}) AS VARCHAR) AS {name}")
                feast_type = "String"
            elif feast_type == "UnixTimestamp":
                select.append(f"CAST({name} AS TIMESTAMPTZ) AS {name}")
            else:
                select.append(name)
            fields.append((name, feast_type))
        select.append("CAST(coalesce(last_ts, as_of) AS TIMESTAMPTZ) AS event_timestamp")
        con.execute(f"COPY (SELECT {', '.join(select)} FROM profiles ORDER BY user_id) TO '{parquet}' "
                    "(FORMAT parquet)")
        users = [u for (u,) in con.execute("SELECT user_id FROM profiles ORDER BY user_id").fetchall()]
        oldest = con.execute("SELECT min(coalesce(last_ts, as_of)) FROM profiles").fetchone()[0]
    age_days = (datetime.now(timezone.utc).replace(tzinfo=None) - oldest).total_seconds() / 86400
    return fields, users, age_days


def write_feature_repo(repo: Path, parquet: Path, fields: list[tuple[str, str]], redis_port: int,
                       ttl_days: int) -> None:
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(f"""project: huaxiang_peer
provider: local
registry: {repo / 'registry.db'}
offline_store:
  type: file
online_store:
  type: redis
  connection_string: "127.0.0.1:{redis_port},db=0"
entity_key_serialization_version: 3
materialization:
  online_write_batch_size: 10000
""")
    types = sorted({t for _, t in fields})
    schema = "\n".join(f"        Field(name={name!r}, dtype={kind})," for name, kind in fields)
    (repo / "profiles_repo.py").write_text(f'''from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import {", ".join(types)}

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)

profiles = FileSource(name="profiles", path={str(parquet)!r}, timestamp_field="event_timestamp")

user_profile = FeatureView(
    name="user_profile",
    entities=[user],
    ttl=timedelta(days={ttl_days}),
    schema=[
{schema}
    ],
    online=True,
    source=profiles,
)

user_profile_service = FeatureService(name="user_profile_service", features=[user_profile], precompute_online=True)
''')


def feast_requests(host: str, users: list[str], features: list[str], form: str) -> list[bytes]:
    out = []
    for u in users:
        body = {"entities": {"user_id": [u]}}
        if form == "service":  # full names: Feast 0.67 stores the vectors under them and refuses plain names
            body.update(feature_service="user_profile_service", full_feature_names=True)
        else:
            body["features"] = [f"user_profile:{f}" for f in features]
        out.append(loadgen.post("/get-online-features", host, json.dumps(body).encode()))
    return out


def check_feast(port: int, db: Path, users: list[str], features: list[str]) -> dict:
    """Both Feast request forms answer the store's values for a few users (n_events, segment); the answer's size."""
    import duckdb
    with duckdb.connect(str(db), read_only=True) as con:
        truth = dict(con.execute("SELECT user_id, n_events FROM profiles WHERE user_id IN (SELECT unnest(?))",
                                 [users]).fetchall())
    sizes = {}
    for form in ("features", "service"):
        for u in users:
            status, body = ask(port, feast_requests(f"127.0.0.1:{port}", [u], features, form)[0])
            if status != 200:
                raise RuntimeError(f"Feast ({form}) answered {status} for {u}: {body[:300]!r}")
            doc = json.loads(body)
            names = doc["metadata"]["feature_names"]
            row = {n.removeprefix("user_profile__"): r["values"][0] for n, r in zip(names, doc["results"])}
            if len(row) != len(features) + 1 or any(r["statuses"][0] != "PRESENT" for r in doc["results"]):
                raise RuntimeError(f"Feast ({form}) answered {len(row)} fields for {u}, statuses "
                                   f"{sorted({r['statuses'][0] for r in doc['results']})}")
            if row.get("n_events") != truth[u] or row.get("user_id") != u:
                raise RuntimeError(f"Feast ({form}) answered n_events {row.get('n_events')} for {u}, the store "
                                   f"says {truth[u]}: {body[:300]!r}")
            sizes[form] = len(body)
    return sizes


# --- the runs ---------------------------------------------------------------------------------------------------

def load(port: int, requests: list[bytes], rate: float, warmup: float, seconds: float, connections: int,
         drain: float):
    return uvloop.run(loadgen.drive(port, requests, rate, seconds, connections, warmup=warmup, drain=drain))


def pooled(runs: list) -> dict:
    lat = np.concatenate([r.latencies_ms for r in runs])
    n = sum(len(r.latencies_ms) for r in runs)
    answered = n - sum(r.timeouts for r in runs)
    return {"requests": int(n), **{f"p{q}_ms": float(np.percentile(lat, q)) for q in (50, 90, 99)},
            "max_ms": float(lat.max()), "errors": sum(r.errors for r in runs),
            "timeouts": sum(r.timeouts for r in runs),
            "achieved_per_s": round(answered / sum(r.wall_s for r in runs), 1),
            "mean_response_bytes": round(sum(r.body_bytes for r in runs) / max(1, sum(r.answered for r in runs)), 1),
            "retries": sum(r.retries for r in runs)}


def report_fields(result: dict) -> dict:
    """The fields every latency file carries for `huaxiang report` (samples, p50 … max, achieved rate, errors):
    huaxiang's first headline rate, rounds pooled, with Feast's p99 at that rate named in `what`."""
    first = result["headline"][0]
    system = "huaxiang" if "huaxiang" in first else "feast"
    top = first[system]
    peer = f"; Feast in the same run: p99 {first['feast']['p99_ms']:,.1f} ms" if system == "huaxiang" else ""
    what = (f"{system} GET profile (online), {first['rate']:g}/s open loop, workers {first['workers']}, "
            f"{result['load']['rounds']} × {result['load']['seconds']:g} s{peer} (feast_peer.py)")
    return {"samples": top["requests"], **{k: top[k] for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")},
            "offered_per_s": first["rate"], "achieved_per_s": top["achieved_per_s"], "errors": top["errors"],
            "comparison": result["what"], "what": what}


def summarise(workers: int, rate: float, runs: dict) -> dict:
    both = {system: pooled(rs) for system, rs in runs.items()}
    if len(both) == 2:
        both["feast_p99_over_huaxiang_p99"] = round(both["feast"]["p99_ms"] / both["huaxiang"]["p99_ms"], 2)
        both["feast_p50_over_huaxiang_p50"] = round(both["feast"]["p50_ms"] / both["huaxiang"]["p50_ms"], 2)
    return {"workers": workers, "rate": rate, **both}


def row(label: str, s: dict) -> str:
    return (f"{label:<52} {s['p50_ms']:>7.2f} {s['p90_ms']:>7.2f} {s['p99_ms']:>8.2f} {s['max_ms']:>8.1f} "
            f"{s['errors']:>6} {s['achieved_per_s']:>8,.0f} {s['mean_response_bytes']:>8,.0f}")


HEADER = f"{'run':<52} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>8} {'max ms':>8} {'errors':>6} {'per s':>8} {'bytes':>8}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", type=Path, help="the huaxiang store to serve (default: build one from the Taobao slice)")
    ap.add_argument("--rates", default="1000,2000", help="offered requests per second, comma-separated")
    ap.add_argument("--seconds", type=float, default=30.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds at the rate sent first and discarded")
    ap.add_argument("--workers", type=int, nargs="+", default=[1], help="worker processes per server, e.g. 1 2")
    ap.add_argument("--connections", type=int, default=64, help="keep-alive connections (the same for both)")
    ap.add_argument("--drain", type=float, default=5.0,
                    help="seconds to wait for answers after the last scheduled send; what is still unanswered "
                         "counts as a timeout (an error), with its wait so far as its latency")
    ap.add_argument("--capacity-seconds", type=float, default=4.0,
                    help="measured seconds of each closed-loop capacity run (0: none, and no matched-rate run)")
    ap.add_argument("--capacity-clients", type=int, default=16, help="connections of the capacity runs")
    ap.add_argument("--matched-seconds", type=float, default=10.0,
                    help="measured seconds of the run of both at half of Feast's capacity (0: none)")
    ap.add_argument("--no-probe", action="store_true",
                    help="do not try Feast's variants: use --feast-variant and --feast-form")
    ap.add_argument("--feast-variant", default="norecycle", choices=sorted(VARIANTS))
    ap.add_argument("--feast-form", default="service", choices=["features", "service"])
    ap.add_argument("--rounds", type=int, default=2, help="huaxiang/Feast pairs per rate (2: ABAB)")
    ap.add_argument("--feast-venv", type=Path, default=FEAST_VENV)
    ap.add_argument("--out", type=Path, default=LATENCY_OUT / "feast_peer.json")
    ap.add_argument("--feast-only", action="store_true", help="debugging: the Feast half alone (no comparison)")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    began = time.monotonic()

    feast_bin = ensure_feast_venv(args.feast_venv)
    env = feast_env()
    info = versions(feast_bin)
    say(f"feast {info['feast_venv'].get('feast')} (redis-py {info['feast_venv'].get('redis')}, hiredis "
        f"{info['feast_venv'].get('hiredis')}); huaxiang redis-py {info['huaxiang_venv'].get('redis')}, hiredis "
        f"{info['huaxiang_venv'].get('hiredis')}; {info['redis_server']}")

    with tempfile.TemporaryDirectory(prefix="feast_peer_") as tmp, ExitStack() as stack:
        tmp = Path(tmp)
        logs = tmp / "logs"
        logs.mkdir()
        db = args.db
        if db is None:
            db = tmp / "store.duckdb"
            say("building the store from the Taobao slice …")
            build_store(db, logs / "build.log")
        parquet = tmp / "profiles.parquet"
        fields, users, age_days = export_profiles(db, parquet)
        features = [name for name, _ in fields]
        say(f"{len(users):,} profiles, {len(fields)} features each; exported to Parquet")

        hx_url, hx_port = stack.enter_context(redis_server(tmp / "redis_hx"))
        fs_url, fs_port = stack.enter_context(redis_server(tmp / "redis_feast"))

        # huaxiang: publish, then a read key
        systems = ("feast",) if args.feast_only else ("huaxiang", "feast")
        hx_publish_s, published, key = 0.0, {}, ""
        if "huaxiang" in systems:
            hx_publish_s, published, key = publish(hx_url, db)
            say(f"huaxiang publish: {hx_publish_s:.1f} s wall ({published.get('seconds', 0):.1f} s its own)")


        # Feast: a feature repository, apply, materialize
        repo = tmp / "feature_repo"
        write_feature_repo(repo, parquet, fields, fs_port, int(age_days) + 2)
        feast = [str(feast_bin / "feast"), "-c", str(repo)]
        t = time.perf_counter()
        subprocess.run(feast + ["apply"], check=True, env=env, cwd=repo, stdout=open(logs / "feast_apply.log", "wb"),
                       stderr=subprocess.STDOUT)
        feast_apply_s = time.perf_counter() - t
        t = time.perf_counter()
        now = datetime.now(timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds")
        subprocess.run(feast + ["materialize-incremental", now], check=True, env=env, cwd=repo,
                       stdout=open(logs / "feast_materialize.log", "wb"), stderr=subprocess.STDOUT)
        feast_materialize_s = time.perf_counter() - t
        say(f"feast apply {feast_apply_s:.1f} s, materialize-incremental {feast_materialize_s:.1f} s (wall)")
        setup = {"huaxiang_publish_wall_s": round(hx_publish_s, 2), "huaxiang_publish": published,
                 "feast_apply_wall_s": round(feast_apply_s, 2),
                 "feast_materialize_incremental_wall_s": round(feast_materialize_s, 2),
                 "redis_used_memory_bytes": {"huaxiang": used_memory(hx_url), "feast": used_memory(fs_url)}}

        rng = np.random.default_rng(SEED)
        sequence = [users[int(i)] for i in rng.integers(0, len(users), SEQUENCE)]

        def hx_server(workers: int):
            port = free_port()
            reqs = [loadgen.get(f"/v1/users/{u}/profile", f"127.0.0.1:{port}", {"X-API-Key": key})
                    for u in sequence]
            argv = CLI + ["serve", "--online", hx_url, "--workers", str(workers), "--host", "127.0.0.1",
                          "--port", str(port), "--key-rate", str(KEY_RATE)]
            return port, reqs, process(argv, logs / "huaxiang_serve.log", reqs[0], port)

        def feast_server(workers: int, variant: str, form: str):
            port = free_port()
            reqs = feast_requests(f"127.0.0.1:{port}", sequence, features, form)
            argv = feast + ["serve", "-h", "127.0.0.1", "-p", str(port), "--workers", str(workers),
                            "--no-access-log", *VARIANTS[variant]]
            return port, reqs, process(argv, logs / "feast_serve.log", reqs[0], port, env=env, cwd=str(repo))

        # correctness and sizes, once
        port, reqs, ctx = feast_server(1, "defaults", "features")
        with ctx:
            feast_sizes = check_feast(port, db, sequence[:20], features)
        body = b""
        if "huaxiang" in systems:
            port, reqs, ctx = hx_server(1)
            with ctx:
                status, body = ask(port, reqs[0])
                if status != 200:
                    raise RuntimeError(f"huaxiang answered {status}: {body[:300]!r}")
        say(f"one answer: huaxiang {len(body):,} bytes, Feast {feast_sizes['features']:,} bytes (features listed), "
            f"{feast_sizes['service']:,} bytes (feature service)")

        capacity, results, table, headline, matched = [], [], [], [], []
        variant, form = args.feast_variant, args.feast_form

        def measure_capacity(system: str, workers: int, v: str | None = None, f: str | None = None) -> dict:
            port, reqs, ctx = hx_server(workers) if system == "huaxiang" else feast_server(workers, v, f)
            with ctx:
                run = uvloop.run(loadgen.saturate(port, reqs, args.capacity_clients, args.capacity_seconds,
                                                  warmup=2.0))
            s = {"system": system, "workers": workers, "clients": args.capacity_clients,
                 **({"variant": v, "form": f} if system == "feast" else {}), **run.summary()}
            del s["offered_per_s"]
            capacity.append(s)
            label = "huaxiang" if system == "huaxiang" else f"feast {v}/{f}"
            table.append(row(f"capacity {label} w{workers} ({args.capacity_clients} closed)", s))
            say(table[-1])
            return s

        def open_loop(system: str, workers: int, rate: float, seconds: float, rnd: int, kind: str):
            port, reqs, ctx = hx_server(workers) if system == "huaxiang" else feast_server(workers, variant, form)
            with ctx:
                run = load(port, reqs, rate, args.warmup, seconds, args.connections, args.drain)
            s = {"kind": kind, "system": system, "round": rnd, "workers": workers, "rate": rate,
                 **({"variant": variant, "form": form} if system == "feast" else {}), **run.summary()}
            results.append(s)
            table.append(row(f"{system} w{workers} @{rate:g} {kind} {rnd}", s))
            say(table[-1])
            return run

        for n, workers in enumerate(args.workers):
            if args.capacity_seconds > 0:
                say(f"capacity, closed loop ({args.capacity_clients} connections, 2 s + {args.capacity_seconds:g} s "
                    f"each), workers {workers} …")
                if "huaxiang" in systems:
                    measure_capacity("huaxiang", workers)
                if n == 0 and not args.no_probe:  # Feast's variants and request forms: the fastest is its side
                    for v in VARIANTS:
                        measure_capacity("feast", workers, v, "features")
                    best_v = max((c for c in capacity if c["system"] == "feast"),
                                 key=lambda c: c["achieved_per_s"])["variant"]
                    measure_capacity("feast", workers, best_v, "service")
                    best = max((c for c in capacity if c["system"] == "feast"), key=lambda c: c["achieved_per_s"])
                    variant, form = best["variant"], best["form"]
                    say(f"Feast's side from here on: {variant}, {form}")
                else:
                    measure_capacity("feast", workers, variant, form)
                feast_cap = [c for c in capacity if c["system"] == "feast" and c["workers"] == workers
                             and c["variant"] == variant and c["form"] == form][-1]["achieved_per_s"]
                if args.matched_seconds > 0:  # a rate both can sustain: half of Feast's capacity
                    rate = max(10.0, round(feast_cap / 2, -1))
                    runs = {s: [open_loop(s, workers, rate, args.matched_seconds, 1, "matched")] for s in systems}
                    matched.append(summarise(workers, rate, runs))
            for rate in rates:
                runs = {system: [] for system in systems}
                for rnd in range(1, args.rounds + 1):
                    for system in systems:
                        runs[system].append(open_loop(system, workers, rate, args.seconds, rnd, "round"))
                headline.append(summarise(workers, rate, runs))

    what = (f"GET /v1/users/{{id}}/profile (huaxiang serve --online) vs POST /get-online-features (feast serve, "
            f"{variant}, {form}), one user per request, open loop from the scheduled send time, "
            f"{args.warmup:g} s warm-up discarded + {args.seconds:g} s measured per run, order "
            f"{'AB' * args.rounds}, {args.connections} keep-alive connections, {len(users):,} users in the store")
    result = {"benchmark": "feast_peer", "what": what, "machine": stamp(), "versions": info,
              "store": {"db": str(args.db) if args.db else "built from the Taobao slice (ingest + build)",
                        "users": len(users), "features": len(fields)},
              "load": {"rates": rates, "warmup_s": args.warmup, "seconds": args.seconds,
                       "connections": args.connections, "rounds": args.rounds, "seed": SEED,
                       "sequence": SEQUENCE, "workers": args.workers, "drain_s": args.drain,
                       "capacity_seconds": args.capacity_seconds, "capacity_warmup_s": 2.0,
                       "capacity_clients": args.capacity_clients, "matched_seconds": args.matched_seconds,
                       "probe": not args.no_probe},
              "feast": {"variants": {k: ["--no-access-log", *v] for k, v in VARIANTS.items()}, "headline_variant":
                        variant, "headline_form": form, "one_answer_bytes": feast_sizes},
              "huaxiang": {"one_answer_bytes": len(body), "key_rate": KEY_RATE},
              "setup": setup, "capacity": capacity, "matched": matched, "headline": headline, "runs": results,
              "total_s": round(time.monotonic() - began, 1)}
    result.update(report_fields(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print()
    print(HEADER)
    print("\n".join(table))
    print()
    print("pooled per rate (rounds together):")
    print(HEADER)
    for h in matched + headline:
        for system in systems:
            print(row(f"{system} w{h['workers']} @{h['rate']:g}{' (matched)' if h in matched else ''}", h[system]))
        if "feast_p99_over_huaxiang_p99" in h:
            print(f"  Feast p99 / huaxiang p99 = {h['feast_p99_over_huaxiang_p99']:.2f}, "
                  f"p50 ratio {h['feast_p50_over_huaxiang_p50']:.2f}")
    print(f"setup: huaxiang publish {setup['huaxiang_publish_wall_s']:.1f} s; feast apply "
          f"{setup['feast_apply_wall_s']:.1f} s + materialize-incremental "
          f"{setup['feast_materialize_incremental_wall_s']:.1f} s (wall, CLI start-up included)")
    print(f"{stamp()}; total {result['total_s']:.0f} s; wrote {args.out}")


def publish(url: str, db: Path) -> tuple[float, dict, str]:
    """`huaxiang publish --to URL --db STORE` timed (wall, CLI start-up included), its --json report, and a read
    key made in Redis."""
    t = time.perf_counter()
    out = subprocess.run(CLI + ["publish", "--to", url, "--db", str(db), "--json"], check=True, capture_output=True,
                         text=True).stdout
    seconds = time.perf_counter() - t
    key = subprocess.run(CLI + ["keys", "create", "--online", url, "--scope", "read"], check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return seconds, json.loads(out[out.index("{"):]), key


def free_port() -> int:
    from huaxiang.ports import free_port as free
    return free()


if __name__ == "__main__":
    main()
