"""Reading the profiles and what is computed on them: `profile`, `score`, `segments`, `graph`, `clv`."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..config import load_config
from ..errors import HuaxiangError
from ..jobs import run_score
from ..store import connect
from .options import CONFIG, DB, JSON, err, json_option, out, spinner


def profile(
    user_id: str = typer.Argument(..., help="The user's id (as stored, e.g. taobao:1000251)."),
    db: str = DB,
    as_json: bool = json_option("Print the profile as one JSON object."),
):
    """Show the whole profile of one user."""
    from ..profile.render import profile_record, render_text, to_json
    con = connect(db, read_only=True)
    record = profile_record(con, user_id)
    if as_json:
        print(to_json(record))
    else:
        out.print(render_text(record), markup=False, highlight=False)


def score(
    kinds: list[str] = typer.Argument(..., help="One or more of: churn, propensity, clv, risk (or all); behaviour "
                                      "with --model."),
    db: str = DB,
    config: Optional[str] = CONFIG,
    model: Optional[str] = typer.Option(None, "--model", help="behaviour: a folder of `huaxiang train behaviour`; "
                                        "its target (e.g. buy_next_day) becomes the kind written."),
    text_only: bool = typer.Option(False, "--text-only", help="behaviour: the language model alone, not its blend "
                                   "with LightGBM."),
    as_json: bool = json_option("Print what was written as one JSON object."),
):
    """Write lifecycle scores into the store (table `scores`), each with its reasons: churn and purchase
    propensity (LightGBM + TreeSHAP), CLV (BG/NBD + Gamma-Gamma, with value tiers) and risk flags. Each kind's
    models are kept as a version in the store's model registry (`huaxiang models list`), with their validation.
    `behaviour --model DIR` scores with a behaviour model (`huaxiang train behaviour`): blended with LightGBM by the
    weight chosen on validation, or alone (--text-only)."""
    if ("behaviour" in kinds) != (model is not None):
        raise HuaxiangError("the behaviour score needs --model (a `huaxiang train behaviour` folder), and --model "
                            "needs the kind behaviour")
    con, cfg = connect(db), load_config(config)
    written, notes = run_score(con, cfg, [k for k in kinds if k != "behaviour"], err, db)
    if model is not None:
        from ..models.behaviour import score_behaviour
        from ..profile.scores import replace_scores
        with spinner() as bar:
            bar.add_task("scoring with the behaviour model", total=None)
            rows = score_behaviour(con, cfg, model, text_only)
        kind = rows["kind"].iloc[0] if len(rows) else "behaviour"
        replace_scores(con, kind, rows)
        written[kind] = len(rows)
    if as_json:
        print(json.dumps({"written": written, "notes": notes}, ensure_ascii=False))
        return
    for msg in notes:
        out.print(f"  {msg}", markup=False, highlight=False)
    out.print("scores written: " + ", ".join(f"{k} {n:,} users" for k, n in written.items()))


def segments(db: str = DB, as_json: bool = json_option("Print as JSON."),
             epsilon: Optional[float] = typer.Option(None, "--epsilon", help="Add differential-privacy noise with "
                                                     "this budget (e.g. 1.0); see the README's privacy section."),
             clv_cap: float = typer.Option(1_000.0, "--clv-cap", help="With --epsilon: each user's CLV is clipped "
                                           "to this bound before summing (choose it without looking at the data)."),
             seed: Optional[int] = typer.Option(None, "--seed", help="With --epsilon: seed the noise (for tests)."),
             tenant: Optional[list[str]] = typer.Option(None, "--tenant", help="Only this tenant (repeat for "
                                                        "several; '' is the ids without a prefix). Default: all.")):
    """Summarise the segments of each tenant: size, share and what defines each (with the tenant's own thresholds),
    value tiers, drift and clusters."""
    from ..profile.segment_report import segment_report
    report = segment_report(connect(db, read_only=True), epsilon, clv_cap, seed, tenant or None)
    if as_json:
        print(json.dumps(report, ensure_ascii=False))
        return
    if "privacy" in report:
        out.print(f"[bold]Differentially private report[/]: ε = {epsilon:g} (CLV clipped to {clv_cap:,g}; each "
                  "tenant's users are its own, so ε holds for the whole report); counts and means below are noisy.")
    if not report["tenants"]:
        out.print("no segments for these tenants")
    for part in report["tenants"]:
        _print_tenant_segments(part)


def _print_tenant_segments(part: dict) -> None:
    from ..profile.segment_report import latest_changes, tenant_label
    name = tenant_label(part["tenant"])
    total = sum(r["size"] for r in part["segments"])
    out.rule(f"Tenant: {name}", style="bold")
    t = Table(title=f"Segments of {name} ({total:,} users; a user's segment is the first rule it matches)")
    for col in ("segment", "users", "share", "definition"):
        t.add_column(col, justify="right" if col in ("users", "share") else "left")
    for r in part["segments"]:
        t.add_row(r["segment"], f"{r['size']:,}", f"{r['share']:.1%}", r.get("definition", "(withheld: private)"))
    out.print(t)
    if part["value_tiers"]:
        v = Table("value tier", "segment", "users", "mean CLV",
                  title=f"CLV value tiers × segments of {name} (`huaxiang score clv`)")
        for r in part["value_tiers"]:
            v.add_row(r["value_tier"], r["segment"], f"{r['users']:,}", f"{r['mean_clv']:,.2f}")
        out.print(v)
    changes = latest_changes(part.get("drift", {}))
    if changes:
        d = Table("segment", "previous build", "latest build", "change",
                  title=f"Drift of {name} since the previous build ({len(part['drift']['builds'])} builds recorded)")
        for seg, a, b in changes:
            d.add_row(seg, f"{a:,}", f"{b:,}", f"{b - a:+,}")
        out.print(d)
    clusters = part.get("clusters", [])
    if clusters:
        c = Table(*map(str, clusters[0]), title=f"k-means clusters of {name} (mean features)")
        for row in clusters:
            c.add_row(*[f"{v:,.1f}" if isinstance(v, float) else f"{v}" for v in row.values()])
        out.print(c)


def graph(
    node: Optional[str] = typer.Argument(None, help="A user id (or any node: item:ID, brand:NAME, category:NAME)."),
    db: str = DB,
    build_: bool = typer.Option(False, "--build", help="(Re)build the triples from the store first."),
    depth: int = typer.Option(1, "--depth", min=1, max=2, help="1: the node's edges; 2: also its items' brands and categories."),
    limit: int = typer.Option(20, "--limit", min=1, help="Edges shown per predicate."),
    export_: Optional[str] = typer.Option(None, "--export", help="Write the whole graph to this file."),
    fmt: str = typer.Option("csv", "--export-format", help="csv or graphml."),
    as_json: bool = json_option("Print the neighbourhood as JSON."),
):
    """The user–item–brand–category knowledge graph: build it, show a user's neighbourhood, export it."""
    from ..graph.triples import build_triples, export, neighbourhood
    con = connect(db)
    if build_:
        counts = build_triples(con)
        out.print(f"built {sum(counts.values()):,} triples: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    if export_:
        n = export(con, export_, fmt)
        out.print(f"wrote {n:,} edges to {export_} ({fmt})")
    if node:
        node = node if ":" in node and node.split(":", 1)[0] in ("user", "item", "brand", "category", "segment", "query") \
            else f"user:{node}"
        edges = neighbourhood(con, node, depth, limit)
        if as_json:
            print(json.dumps([{"subject": s, "predicate": p, "object": o, "weight": w} for s, p, o, w in edges],
                             ensure_ascii=False))
        else:
            for s, p, o, w in edges:
                out.print(f"{s}  —{p}→  {o}  ({w:g})", markup=False, highlight=False)


def _date(text: str, option: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise HuaxiangError(f"{option}: {text!r} is not a date (YYYY-MM-DD)") from None


def clv(
    path: str = typer.Argument(..., help="Transactions file (.gz ok)."),
    fmt: str = typer.Option("csv", "--format", help="cdnow, online-retail, or csv (columns customer_id,date,value)."),
    calibration_end: str = typer.Option(..., "--calibration-end", help="Last day (inclusive) the model sees, YYYY-MM-DD."),
    holdout_end: Optional[str] = typer.Option(None, "--holdout-end", help="Last day of the holdout to score against."),
    blend: bool = typer.Option(True, "--blend/--no-blend", help="Also fit the LightGBM correction of BG/NBD."),
    months: int = typer.Option(12, "--months", help="CLV horizon in months."),
    save: Optional[str] = typer.Option(None, "--save", help="Save the fitted models to this folder."),
    as_json: bool = JSON,
):
    """Fit BG/NBD + Gamma-Gamma on a transaction file (weeks; same-day purchases are one transaction) and,
    with --holdout-end, compare predicted and actual repeat transactions in the holdout per frequency bucket."""
    from ..ingest.transactions import read_transactions
    from ..models.clv import holdout_evaluation
    _date(calibration_end, "--calibration-end")
    if holdout_end:
        _date(holdout_end, "--holdout-end")
    with spinner() as bar:
        task = bar.add_task("reading transactions", total=None)
        tx = read_transactions(path, fmt)
        model, result = holdout_evaluation(tx, calibration_end, holdout_end, blend, months,
                                           lambda text: bar.update(task, description=text))
    if save:
        model.save(Path(save))
    if as_json:
        print(json.dumps(result))
        return
    spend = (f"Gamma-Gamma p {result['p']:.3f}, q {result['q']:.3f}, v {result['v']:.3f}; mean {months}-month CLV "
             f"{result['mean_clv']:,.2f}" if model.gg_ else "no spend model (too few priced repeat purchases)")
    out.print(f"BG/NBD r {result['r']:.4f}, α {result['alpha']:.4f}, a {result['a']:.4f}, b {result['b']:.4f}; "
              f"{spend} ({result['customers']:,} customers)")
    if holdout_end:
        preds = ["bgnbd", "blend"] if blend else ["bgnbd"]
        t = Table("calibration frequency", "customers", "actual", *preds)
        for b in result["buckets"]:
            t.add_row(b["bucket"], f"{b['customers']:,}", f"{b['actual']:,.0f}", *(f"{b[k]:,.1f}" for k in preds))
        out.print(t)
    for reason, n in tx.skipped.items():
        out.print(f"  skipped {n:,} rows: {reason}")
