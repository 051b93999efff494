"""`report`: the HTML report over what the benchmarks wrote."""
from __future__ import annotations

from pathlib import Path

import typer

from ..errors import HuaxiangError
from .options import out, spinner


def report(
    out_dir: str = typer.Option(..., "--out", help="Folder for index.html and its PNG plots."),
    runs: str = typer.Option("benchmarks/out", "--runs", help="Where the evaluation runs wrote their results "
                             "(the scripts in benchmarks/ write to benchmarks/out)."),
):
    """An HTML report with PNG plots of the evaluation runs that exist: sequential recommendation vs published
    baselines, sentiment (accuracy, confusion matrices), churn ROC and calibration, CLV holdout buckets, and the
    ingest / scale / latency benchmarks."""
    from ..evaluate.report import write_report
    if not Path(runs).is_dir():
        raise HuaxiangError(f"no folder {runs!r} of evaluation runs: run the scripts in benchmarks/ first, or "
                            "give --runs")
    with spinner() as bar:
        task = bar.add_task("report", total=None)
        index = write_report(Path(runs), Path(out_dir), lambda text: bar.update(task, description=f"report: {text}"))
    out.print(f"report: {index}")
