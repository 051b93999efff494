"""The main jobs with a progress bar: ingest a file, build the profiles, write the scores.

A plain library that the command line, the demo and the benchmarks call: results are printed to `out`,
the (transient) progress bar goes to `err`; both default to a console on stdout and stderr.
"""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from .ingest import ingest_file


def consoles(out: Console | None = None, err: Console | None = None) -> tuple[Console, Console]:
    """`out` and `err`, or the default console on stdout and on stderr for each one not given."""
    return out or Console(soft_wrap=True), err or Console(stderr=True, soft_wrap=True)


def spinner(err: Console, label: str = "{task.description}") -> Progress:
    """A transient spinner with the elapsed time on `err`; `label` formats the task's description."""
    return Progress(SpinnerColumn(), TextColumn(label), TimeElapsedColumn(), console=err, transient=True)


def print_ingest(report, out: Console | None = None) -> None:
    out = consoles(out)[0]
    added = ", ".join(f"{n:,} {t}" for t, n in report.added.items()) or "nothing"
    dups = sum(report.duplicates.values())
    out.print(f"[bold]{report.source}[/]: read {report.rows_read:,} rows → added {added}; "
              f"{dups:,} already in the store; {report.quarantined:,} quarantined"
              + (f" ({report.conflicts:,} conflicting with stored rows)" if report.conflicts else "")
              + (f"; {report.suppressed:,} of forgotten users refused" if report.suppressed else ""))
    for reason, n in sorted(report.reasons.items(), key=lambda x: -x[1]):
        out.print(f"  quarantined {n:,} × {reason}")
    if report.quarantined:
        out.print("  (see: SELECT * FROM quarantine WHERE source = '…' ORDER BY line)")


def run_ingest(con, path: str, fmt: str, table: str = "events", mapping=None, namespace=None,
               out: Console | None = None, err: Console | None = None, future_tolerance_s: float = 300.0):
    """Ingests one file (see `ingest.ingest_file`) and prints what was added and quarantined."""
    out, err = consoles(out, err)
    with Progress(TextColumn("ingest {task.description}"), BarColumn(), DownloadColumn(),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task(Path(path).name, total=None)
        report = ingest_file(con, path, fmt, table=table, mapping=mapping, namespace=namespace,
                             future_tolerance_s=future_tolerance_s,
                             progress=lambda done, total: bar.update(task, completed=done, total=total))
    print_ingest(report, out)
    return report


def run_build(con, cfg, out: Console | None = None, err: Console | None = None):
    """Builds every profile in the store and prints how many, the reference times and the segments."""
    from .profile.build import build_profiles
    out, err = consoles(out, err)
    with Progress(SpinnerColumn(), TextColumn("build: {task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task("starting", total=None)
        report = build_profiles(con, cfg, step=lambda name: bar.update(task, description=name, total=None, completed=0),
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
    secs = sum(report.seconds.values())
    refs = ", ".join(f"{t or 'all'} {ts:%Y-%m-%d %H:%M}" for t, ts in report.as_of.items() if ts)
    out.print(f"built {report.users:,} profiles in {secs:.1f} s (reference time: {refs})")
    out.print("segments: " + ", ".join(f"{k} {v:,}" for k, v in sorted(report.segments.items(), key=lambda x: -x[1])))
    return report


def run_score(con, cfg, kinds, err: Console | None = None, db: str | None = None) -> tuple[dict, list[str]]:
    """Scores written with a spinner showing the step (with `db`, the store's file: their models kept in its
    registry); returns rows per kind and the notes of each step."""
    from .profile.scores import write_scores
    err = consoles(err=err)[1]
    notes = []
    with spinner(err) as bar:
        task = bar.add_task("scoring", total=None)

        def note(msg):
            notes.append(msg)
            bar.update(task, description=msg)
        written = write_scores(con, cfg, kinds, note, db)
    return written, notes
