"""What the commands share: the two consoles, a spinner, and the options many commands take (defined once)."""
from __future__ import annotations

import typer
from rich.console import Console
from rich.progress import Progress

from .. import jobs

out = Console(soft_wrap=True)  # results
err = Console(stderr=True, soft_wrap=True)  # progress bars and errors

DB = typer.Option("huaxiang.duckdb", "--db", help="The DuckDB store file.")
CONFIG = typer.Option(None, "--config", help="A TOML file overriding the defaults.")


def json_option(help: str = "Print one JSON object."):
    """The `--json` flag; commands whose JSON is not one result object say what it holds."""
    return typer.Option(False, "--json", help=help)


JSON = json_option()


def spinner(label: str = "{task.description}") -> Progress:
    """`jobs.spinner` on the commands' stderr console."""
    return jobs.spinner(err, label)
