"""The `huaxiang` command: one sub-command per job.

The commands live by area (data, profiles, text, recommend, service, report) as plain functions and are
registered here, in the order `huaxiang --help` lists them; the options they share are in `options.py`,
the jobs they run (with progress bars) in `huaxiang.jobs`. Nothing imports this package but the entry
points (`huaxiang`, `python -m huaxiang.cli`, `submit.py`).
"""
from __future__ import annotations

import sys

import duckdb
import typer

from .. import __version__
from ..errors import HuaxiangError
from . import data, experiments, models, online, profiles, recommend, report, service, text
from .options import err, out

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="huaxiang (画像): deep user profiles for e-commerce search and recommendation.")
train_app = typer.Typer(no_args_is_help=True, help="Fine-tune the pretrained encoder on your own data.")
eval_app = typer.Typer(no_args_is_help=True, help="Evaluate a trained model on labelled data.")
keys_app = typer.Typer(no_args_is_help=True, help="API keys for `huaxiang serve`.")
experiment_app = typer.Typer(no_args_is_help=True, help="A/B tests between recommenders: create, list, stop, report.")
exposures_app = typer.Typer(no_args_is_help=True, help="What the answers showed: export the explored traffic.")
models_app = typer.Typer(no_args_is_help=True, help="The store's model versions: list, promote, roll back.")
_state = {"debug": False}

for command in (data.ingest, data.build, data.export, profiles.profile, profiles.score, profiles.segments, text.embed,
                profiles.graph, text.sentiment, recommend.recommend, recommend.search, models.retrain, profiles.clv,
                report.report, experiments.ope, service.forget, service.consume, service.serve, online.publish,
                text.convert_encoder, text.pretrain, text.compress, data.demo):
    app.command()(command)
train_app.command("classifier")(text.train_classifier)
train_app.command("recommender")(recommend.train_recommender)
train_app.command("behaviour")(text.train_behaviour)
eval_app.command("classifier")(text.eval_classifier)
eval_app.command("seqrec")(recommend.eval_seqrec)
keys_app.command("create")(service.create_key)
keys_app.command("list")(service.list_keys)
keys_app.command("revoke")(service.revoke_key)
models_app.command("list")(models.list_versions)
models_app.command("promote")(models.promote_version)
models_app.command("rollback")(models.rollback_version)
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
app.add_typer(keys_app, name="keys")
for name in ("create", "list", "stop", "report"):
    experiment_app.command(name)(getattr(experiments, f"experiment_{name}"))
app.add_typer(experiment_app, name="experiment")
app.add_typer(models_app, name="models")
exposures_app.command("export")(experiments.exposures_export)
app.add_typer(exposures_app, name="exposures")


def _version(value: bool):
    if value:
        out.print(f"huaxiang {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
                 version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                              help="Print the version and exit.")):
    _state["debug"] = debug


def main() -> None:
    """Entry point: errors become one line (a traceback only with --debug)."""
    try:
        app()  # usage errors and Ctrl-C are handled (and exit) inside
    except (HuaxiangError, duckdb.Error, OSError, ValueError) as exc:
        if _state["debug"]:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        err.print(f"error: {msg}", markup=False, highlight=False)
        sys.exit(1)
