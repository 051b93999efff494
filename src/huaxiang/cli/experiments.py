"""Experiments and feedback: `ope` (what a policy would have achieved, estimated from another policy's log)."""
from __future__ import annotations

import json
from typing import Optional

import typer
from rich.table import Table

from ..errors import HuaxiangError
from .options import JSON, out, spinner


def ope(
    log: str = typer.Option(..., "--log", help="The logged traffic: one row per shown item, with the probability "
                            "the logging policy had of showing it (CSV, .gz ok; exposures: CSV or Parquet)."),
    fmt: str = typer.Option(..., "--format", help="obd (Open Bandit Dataset CSV) or exposures (our exposures "
                            "export: user_id, item_id, position, propensity, click)."),
    target_log: Optional[str] = typer.Option(None, "--target-log", help=(
        "Evaluate the policy that wrote this log (same format): its share of each item per position; its own "
        "CTR is shown beside the estimates.")),
    target_model: Optional[str] = typer.Option(None, "--target-model", help=(
        "Evaluate one of our models instead: popularity or ctr, fitted on the first half of --log (by time) and "
        "evaluated on the second.")),
    as_json: bool = JSON,
):
    """Off-policy evaluation: the click-through rate a target policy would have had on the traffic of --log,
    by inverse propensity scoring (IPS), self-normalised IPS and doubly robust, each with a 95% interval.
    Give exactly one of --target-log and --target-model."""
    from ..evaluate.ope import evaluate, read_log
    if (target_log is None) == (target_model is None):
        raise HuaxiangError("give exactly one of --target-log FILE and --target-model NAME")
    with spinner("ope: {task.description}") as bar:
        task = bar.add_task(f"reading {log}", total=None)
        logged = read_log(log, fmt)
        target = None
        if target_log is not None:
            bar.update(task, description=f"reading {target_log}")
            target = read_log(target_log, fmt)
        bar.update(task, description="estimating")
        result = evaluate(logged, target_log=target, target_model=target_model)
    if as_json:
        print(json.dumps(result))
        return
    on = result["on_policy"]
    table = Table(title=f"{result['target']}: estimated CTR (95% interval)", title_justify="left")
    for name in ("", "CTR", "low", "high", "se") + (("vs on-policy", "covers it") if on is not None else ()):
        table.add_column(name, justify="right" if name not in ("", "covers it") else "left")
    for name in ("ips", "snips", "dr"):
        e = result["estimates"][name]
        row = [name.upper(), f"{e['value']:.5f}", f"{e['ci_low']:.5f}", f"{e['ci_high']:.5f}", f"{e['se']:.5f}"]
        if on is not None:
            row += [f"{(e['value'] - on) / on:+.1%}" if on > 0 else "–",
                    "yes" if e["ci_low"] <= on <= e["ci_high"] else "no"]
        table.add_row(*row)
    out.print(table)
    out.print(f"log: {log}; target policy: {result['target_policy']}", markup=False, highlight=False)
    out.print(f"evaluated on: {result['evaluated_on']}; {result['n']:,} rows, {result['rows_with_weight']:,} with "
              f"weight, effective sample size {result['effective_sample_size']:,.0f}, largest weight "
              f"{result['max_weight']:.1f}", markup=False, highlight=False)
    out.print(f"the logging policy's own CTR on these rows: {result['log_ctr']:.5f} ({result['log_clicks']:,} clicks)",
              markup=False, highlight=False)
    if on is not None:
        low, high = result["on_policy_ci"]
        out.print(f"the target log's own (on-policy) CTR: {on:.5f} [{low:.5f}, {high:.5f}]", markup=False,
                  highlight=False)
    if result["support_gap"]:
        out.print(f"warning: {result['support_gap']:.1%} of the target's choices are items the log never shows at "
                  "that position (no overlap: IPS counts them as no click)", markup=False, highlight=False)
