"""Shared test helpers: where the test data is (the slices bundled with the package and tests/data/), running the
CLI as a user would, and a live `huaxiang serve` (uvicorn in its own process on a free loopback port) over the
Taobao slice with one key per scope."""
import json
import os
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

import huaxiang
from huaxiang.ports import free_port

DEMO = Path(huaxiang.__file__).parent / "data" / "demo"  # slices bundled with the package (see its SOURCE.md)
DATA = Path(__file__).resolve().parent / "data"  # whole files kept for the tests (see tests/data/SOURCE.md)
TAOBAO = DEMO / "taobao_UserBehavior_head.csv.gz"  # 84,287 events of 814 users, 2017-11-25 .. 2017-12-03


def cli(*args):
    proc = subprocess.run([sys.executable, "-m", "huaxiang.cli", *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def write_events(path: Path, rows) -> str:
    """A CSV of events (user_id, item_id, type, ts, query) at `path`; returns its path."""
    path.write_text("user_id,item_id,type,ts,query\n" + "".join(",".join(r) + "\n" for r in rows))
    return str(path)


def png_size(path: Path) -> tuple[int, int]:
    """A PNG file's (width, height); fails when the file is not a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path.name} is not a PNG"
    return struct.unpack(">II", data[16:24])


def call(base, method, path, key=None, body=None, headers=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={**({"X-API-Key": key} if key else {}),
                                          **({"Content-Type": "application/json"} if data else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if r.headers.get("content-type", "").startswith("application/json")
                              else raw.decode())
    except urllib.error.HTTPError as e:
        raw = e.read() or b"{}"
        try:
            return e.code, json.loads(raw)
        except ValueError:  # refused by the HTTP layer before the app (e.g. a 100 kB URL): plain text
            return e.code, {"detail": raw.decode()}


SERVED: dict[str, tuple[subprocess.Popen, Path]] = {}  # base URL -> (the server process, its stderr file)


@contextmanager
def start_server(db: str, *args: str, online: str | None = None):
    """`huaxiang serve --db db *args` (with `online`: `huaxiang serve --online URL *args`, its log beside `db`) on a
    free port until the block ends; yields its base URL (its process and stderr file are in SERVED meanwhile)."""
    port = free_port()
    log = Path(db).with_name(f"serve-{port}.log")
    source = ["--online", online] if online else ["--db", db]
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "huaxiang.cli", "serve", *source, "--port", str(port),
                                 *args], stdout=subprocess.DEVNULL, stderr=err, env={**os.environ})
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if call(base, "GET", "/healthz")[0] == 200:
                    break
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
        else:
            proc.kill()
            raise AssertionError(log.read_text())
        if proc.poll() is not None:
            raise AssertionError(log.read_text())
        SERVED[base] = (proc, log)
        yield base
    finally:
        SERVED.pop(base, None)
        proc.terminate()
        proc.wait(10)


def taobao_store(folder: Path) -> str:
    """A store at `folder`/s.duckdb of the bundled Taobao slice (namespace taobao), built, with item-KNN trained."""
    db = str(folder / "s.duckdb")
    cli("ingest", str(TAOBAO), "--format", "taobao", "--namespace", "taobao", "--db", db)
    cli("build", "--db", db)
    cli("train", "recommender", "--model", "itemknn", "--db", db)
    return db


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    db = taobao_store(tmp_path_factory.mktemp("serve"))
    keys = {scope: cli("keys", "create", "--scope", scope, "--db", db).strip().splitlines()[-1]
            for scope in ("read", "write", "admin")}
    with start_server(db, "--max-body-bytes", "200000") as base:
        yield base, keys
