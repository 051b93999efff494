"""Shared test helpers: where the real datasets are, and running the CLI as a user would."""
import subprocess
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared beside the repository


def cli(*args):
    proc = subprocess.run([sys.executable, "-m", "huaxiang.cli", *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout
