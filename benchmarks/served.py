"""A benchmark's store served for real: a key for it, and `huaxiang serve` in its own process on a free loopback
port (used by api_load.py, pages.py and body_limit.py)."""
from __future__ import annotations

import socket
import subprocess
import time
from contextlib import contextmanager

from huaxiang.ports import free_port


def create_key(cli: list[str], db: str, scope: str = "read") -> str:
    """A new API key of `scope` for the store (the last line `huaxiang keys create` prints)."""
    return subprocess.run(cli + ["keys", "create", "--scope", scope, "--db", db], check=True, capture_output=True,
                          text=True).stdout.strip().splitlines()[-1]


@contextmanager
def server(cli: list[str], db: str, *options: str):
    """`huaxiang serve --db db OPTIONS` until the block ends; yields (port, process) once it accepts connections."""
    port = free_port()
    proc = subprocess.Popen(cli + ["serve", "--db", db, "--port", str(port), *options], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"huaxiang serve exited with status {proc.returncode}") from None
                time.sleep(0.1)
        yield port, proc
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def serving(cli: list[str], db: str, *options: str):
    """`huaxiang serve --db db OPTIONS` until the block ends; yields its port once it accepts connections."""
    with server(cli, db, *options) as (port, _):
        yield port
