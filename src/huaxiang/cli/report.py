"""`report`: the HTML report over what the benchmarks wrote."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import HuaxiangError
from .options import out, spinner


def report(
    out_dir: str = typer.Option(..., "--out", help="Folder for index.html and its PNG plots."),
    runs: str = typer.Option("benchmarks/out", "--runs", help="Where the evaluation runs wrote their results "
                             "(the scripts in benchmarks/ write to benchmarks/out)."),
    db: Optional[str] = typer.Option(None, "--db", help="Also report this store's experiments (running and "
                                     "stopped)."),
):
    """An HTML report with PNG plots of the evaluation runs that exist: sequential recommendation vs published
    baselines, sentiment (accuracy, confusion matrices), churn ROC and calibration, CLV holdout buckets, and the
    ingest / scale / latency benchmarks, and experiments (their files under --runs, and the store's with --db)."""
    from ..evaluate.report import write_report
    if not Path(runs).is_dir():
        raise HuaxiangError(f"no folder {runs!r} of evaluation runs: run the scripts in benchmarks/ first, or "
                            "give --runs")
    with spinner() as bar:
        task = bar.add_task("report", total=None)
        experiments = None
        if db:
            from ..config import load_config
            from ..experiments.catalog import all_experiments
            from ..experiments.catalog import report as experiment_report
            from ..store import connect
            bar.update(task, description=f"report: the experiments of {db}")
            con, window = connect(db, read_only=True), load_config().attribution_window_hours
            experiments = [experiment_report(con, e.name, window) for e in all_experiments(con)]
        index = write_report(Path(runs), Path(out_dir), lambda text: bar.update(task, description=f"report: {text}"),
                             experiments)
    out.print(f"report: {index}")
