"""Experiments and feedback: `experiment create|list|stop|report` (A/B tests between recommenders, on the store file
or, with --server, through a running server's API) and `ope` (what a policy would have achieved, estimated from
another policy's log)."""
from __future__ import annotations

import json
from typing import Optional
from urllib.parse import quote

import typer
from rich.table import Table

from ..errors import HuaxiangError
from ..config import load_config
from .options import CONFIG, DB, JSON, json_option, out, spinner

SERVER = typer.Option(None, "--server", help="A running `huaxiang serve` (e.g. http://127.0.0.1:8000) to ask "
                      "instead of opening --db, which it holds; the key comes from --key or HUAXIANG_API_KEY.")
KEY = typer.Option(None, "--key", envvar="HUAXIANG_API_KEY", help="With --server: an API key (admin scope to "
                   "create or stop, read to list or report).")


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


def exposures_export(
    path: str = typer.Argument(..., help="The file to write: Parquet when it ends in .parquet, else CSV."),
    until: Optional[str] = typer.Option(None, "--until", help="Only exposures shown before this time (ISO 8601, "
                                        "UTC): leave out those that may still be clicked."),
    db: str = DB,
    server: Optional[str] = SERVER,
    key: Optional[str] = KEY,
    config: Optional[str] = CONFIG,
):
    """Write the exposures served while exploring (`huaxiang serve --explore`), each with its propensity and
    whether a click is attributed to it: the log `huaxiang ope --format exposures` reads. Through --server the
    key needs the admin scope."""
    from datetime import datetime
    from urllib.parse import urlencode
    try:
        until_at = datetime.fromisoformat(until) if until else None
    except ValueError:
        raise HuaxiangError(f"--until {until!r}: not an ISO 8601 time (e.g. 2026-11-30T12:00:00)") from None
    fmt = "parquet" if path.lower().endswith(".parquet") else "csv"
    if server:
        query = urlencode({"format": fmt, **({"until": until_at.isoformat()} if until_at else {})})
        body, headers = _remote(server, key, "GET", f"/v1/exposures/log?{query}", raw=True)
        with open(path, "wb") as f:
            f.write(body)
        got = {"rows": int(headers.get("X-Rows", 0)), "clicks": int(headers.get("X-Clicks", 0))}
    else:
        from ..experiments.attribution import export_log
        from ..store import connect
        got = export_log(connect(db, read_only=True), path, load_config(config).attribution_window_hours, until_at)
    out.print(f"wrote {path}: {got['rows']:,} exposures with propensities, {got['clicks']:,} clicked"
              + ("" if got["rows"] else " (none: serve with --explore to record propensities)"),
              markup=False, highlight=False)


def _remote(server: str, key: str | None, method: str, path: str, body: dict | None = None, raw: bool = False):
    """The JSON answer of a route of the server at `server` (`raw`: its bytes and headers; an error: one line with
    its status and detail)."""
    import urllib.error
    import urllib.request
    if not key:
        raise HuaxiangError("--server needs an API key: --key KEY or HUAXIANG_API_KEY")
    req = urllib.request.Request(server.rstrip("/") + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"X-API-Key": key, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=600 if raw else 60) as resp:
            return (resp.read(), resp.headers) if raw else json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail")
        except ValueError:
            detail = exc.reason
        raise HuaxiangError(f"{server}{path}: {exc.code} {detail}") from None
    except urllib.error.URLError as exc:
        raise HuaxiangError(f"cannot reach {server}: {exc.reason}") from None


def _print_experiment(e: dict) -> None:
    variants = ", ".join(f"{v['name']}={v['model']} ({v['share']:.0%})" for v in e["variants"])
    users = "every tenant" if e["tenant"] is None else f"tenant {e['tenant']!r}"
    out.print(f"{e['name']}: {e['status']}, {users}, {variants}; started {e['created_at'][:19]}"
              + (f", stopped {e['stopped_at'][:19]}" if e["stopped_at"] else ""), markup=False, highlight=False)


def experiment_create(
    name: str = typer.Argument(..., help="The experiment's name (letters, digits, '_', '.', '-')."),
    variants: str = typer.Option(..., "--variants", help="NAME=MODEL pairs, the control first, e.g. "
                                 "control=itemknn,treatment=hybrid; MODEL is a trained recommender (`huaxiang models "
                                 "list`): its name (the promoted or newest version) or name@version."),
    split: Optional[str] = typer.Option(None, "--split", help="The variants' weights, e.g. 50,50 or 90,10 "
                                        "(default: equal)."),
    tenant: Optional[str] = typer.Option(None, "--tenant", help="Only this tenant's users (NS of ids NS:…; '' for "
                                         "ids without one); default: every tenant."),
    db: str = DB,
    server: Optional[str] = SERVER,
    key: Optional[str] = KEY,
    as_json: bool = JSON,
):
    """Start an A/B test between recommenders: each user is assigned a variant by a hash of the experiment's salt and
    their id (sticky, the same on every worker) and gets that variant's recommendations; what they are shown and
    what they click and buy then feed `huaxiang experiment report`."""
    from ..experiments.catalog import create, parse_variants
    parsed = parse_variants(variants, split)
    if server:
        made = _remote(server, key, "POST", "/v1/experiments",
                       {"name": name, "variants": variants, "split": split, "tenant": tenant})
    else:
        from ..store import connect
        made = create(connect(db), db, name, parsed, tenant).listing()
    if as_json:
        print(json.dumps(made))
    else:
        _print_experiment(made)


def experiment_list(db: str = DB, server: Optional[str] = SERVER, key: Optional[str] = KEY,
                    as_json: bool = json_option("Print a JSON list.")):
    """The experiments, newest first, running and stopped."""
    from ..experiments.catalog import all_experiments
    from ..store import connect
    found = _remote(server, key, "GET", "/v1/experiments") if server else \
        [e.listing() for e in all_experiments(connect(db, read_only=True))]
    if as_json:
        print(json.dumps(found))
    elif not found:
        out.print("No experiments yet: `huaxiang experiment create` starts one.")
    for e in [] if as_json else found:
        _print_experiment(e)


def experiment_stop(name: str = typer.Argument(..., help="The experiment to stop."), db: str = DB,
                    server: Optional[str] = SERVER, key: Optional[str] = KEY, as_json: bool = JSON):
    """Stop a running experiment: its users get the promoted recommender again; its report stays readable."""
    from ..experiments.catalog import stop
    from ..store import connect
    done = _remote(server, key, "POST", f"/v1/experiments/{quote(name, safe='')}/stop") if server else \
        stop(connect(db), name).listing()
    if as_json:
        print(json.dumps(done))
    else:
        _print_experiment(done)


def experiment_report(name: str = typer.Argument(..., help="The experiment."), db: str = DB,
                      server: Optional[str] = SERVER, key: Optional[str] = KEY, config: Optional[str] = CONFIG,
                      as_json: bool = JSON):
    """Per variant: exposed users, impressions, CTR, conversion and revenue per exposed user with 95% intervals;
    each variant's lift over the control with its interval and p-value; the sample-ratio check; p99 latency."""
    from ..experiments.catalog import report
    from ..experiments.stats import interval_text
    from ..store import connect
    if server:
        rep = _remote(server, key, "GET", f"/v1/experiments/{quote(name, safe='')}/report")
    else:
        rep = report(connect(db, read_only=True), name, load_config(config).attribution_window_hours)
    if as_json:
        print(json.dumps(rep))
        return
    _print_experiment(rep["experiment"])
    table = Table(title="variants (95% intervals)", title_justify="left")
    for col in ("variant", "model", "users", "impressions", "CTR", "conversion", "revenue/user", "p99 ms"):
        table.add_column(col, justify="left" if col in ("variant", "model") else "right")
    for v, m in rep["variants"].items():
        table.add_row(v, m.get("model", ""), f"{m['exposed_users']:,}", f"{m['impressions']:,}",
                      interval_text(m["ctr"], ".2%"), interval_text(m["conversion"], ".2%"),
                      interval_text(m["revenue_per_user"], ",.2f"),
                      "–" if m["latency"]["p99_ms"] is None else f"{m['latency']['p99_ms']:.1f}")
    out.print(table)
    for v, comp in rep["comparisons"].items():
        for metric in ("ctr", "conversion", "revenue_per_user"):
            c = comp[metric]
            lift = "–" if c["lift"] is None else f"{c['lift']:+.1%}"
            ci = "" if c["ci_low"] is None else f" [{c['ci_low']:+.1%}, {c['ci_high']:+.1%}]"
            p = "" if c["p_value"] is None else f", p = {c['p_value']:.3g}"
            out.print(f"{v} vs {rep['control']}: {metric} lift {lift}{ci}{p}", markup=False, highlight=False)
    srm = rep["srm"]
    if srm["p_value"] is not None:
        out.print(("SAMPLE RATIO MISMATCH: " if srm["flag"] else "sample ratio fits the split: ")
                  + ", ".join(f"{v} {n:,}" for v, n in srm["observed"].items())
                  + f" users, chi-square p = {srm['p_value']:.3g}", markup=False, highlight=False)
