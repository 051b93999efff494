"""The evaluation report: one static HTML page with PNG plots of the benchmark runs that exist.

`write_report(runs, out)` reads the result files the scripts in benchmarks/ write under `runs` (benchmarks/out by
default) and writes `out/index.html` plus `out/*.png` (matplotlib, Agg). Sections, each shown only when its run
exists (otherwise one line naming the script that makes it):

1. sequential recommendation (seqrec/*.json): HR@10 and NDCG@10 per dataset, ours vs RecBole's SASRec vs the
   published baselines of `PUBLISHED_SEQREC` — one chart per protocol, full ranking and sample99 never mixed;
2. sentiment (sentiment/*.json): accuracy, macro-F1 and a confusion matrix per method;
3. churn and propensity (lifecycle/results.json): ROC curves and calibration (reliability) plots;
4. CLV holdout (lifecycle/clv_*.json, what `huaxiang clv … --json` prints): actual vs predicted repeat
   transactions per calibration-frequency bucket;
5. ingest, scale and serving (ingest_profile.json, scale*.json, latency/*.json): tables, throughput and latency;
6. experiments (experiments/*.json, what `huaxiang experiment report NAME --json` prints, plus the running and
   stopped experiments of a store given to `huaxiang report --db`): each variant's numbers with 95% intervals and
   each treatment's lift over the control with its interval, and the sample-ratio check.

Every section names the machine and date its runs recorded. The page is self-contained (inline CSS, no scripts,
nothing fetched); every value from a file is HTML-escaped; a missing, partial or malformed file gives a one-line
note naming it and what is wrong, never an exception.
"""
from __future__ import annotations

import html
import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

TIGER = ("Rajput et al., “Recommender Systems with Generative Retrieval” (TIGER), NeurIPS 2023 — its SASRec row "
         "is SASRec as reported there")
S3REC = ("Zhou et al., “S3-Rec: Self-Supervised Learning for Sequential Recommendation with Mutual Information "
         "Maximization”, CIKM 2020")
# Published sequential-recommendation figures quoted in README.md (Amazon Beauty and Sports_and_Outdoors, the S3-Rec
# leave-one-out split). The README records NDCG@10 only for the full-ranking baselines: no HR@10 is invented here.
PUBLISHED_SEQREC = [
    {"dataset": "Beauty", "model": "SASRec (published)", "protocol": "full", "ndcg@10": 0.0318, "source": TIGER},
    {"dataset": "Beauty", "model": "TIGER (published)", "protocol": "full", "ndcg@10": 0.0384, "source": TIGER},
    {"dataset": "Beauty", "model": "S3-Rec (published)", "protocol": "sample99", "hr@10": 0.5506, "ndcg@10": 0.3732,
     "source": S3REC},
    {"dataset": "Sports_and_Outdoors", "model": "SASRec (published)", "protocol": "full", "ndcg@10": 0.0192,
     "source": TIGER},
    {"dataset": "Sports_and_Outdoors", "model": "TIGER (published)", "protocol": "full", "ndcg@10": 0.0225,
     "source": TIGER},
]
PROTOCOLS = {"full": "full ranking: the target ranked among all items, the user's seen items excluded",
             "sample99": "sample99: the target ranked against the 99 fixed negatives per user of S3-Rec's "
                         "{dataset}_sample99 file"}
# Fader, Hardie & Lee (2005): BG/NBD on the CDNOW 1/10 sample, 39-week calibration
PUBLISHED_BGNBD = {"params": {"r": 0.2426, "alpha": 4.414, "a": 0.793, "b": 2.426}, "file": "CDNOW_sample.txt.gz",
                   "customers": 2357, "calibration_end": "1997-09-30",
                   "source": "Fader, Hardie & Lee (2005), “Counting Your Customers the Easy Way”, "
                             "CDNOW 1/10 sample"}
SENTIMENT_DATA = {"zh": "online_shopping_10_cats (Chinese reviews)", "en": "Amazon All_Beauty (English reviews)"}
PREDICTION_NAMES = {"bgnbd": "BG/NBD", "blend": "blend (BG/NBD + LightGBM correction)"}
BAD_CONTENT = (KeyError, TypeError, ValueError, IndexError, AttributeError)

CSS = """body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}h3{margin-bottom:.3em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #ddd;padding:.25em .6em}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;display:block;margin:.6em 0}.run{color:#555;font-size:.9em;margin:.2em 0}
.note{color:#8a5a00;background:#fff8e6;padding:.2em .5em;margin:.3em 0}.none{color:#666;font-style:italic}
code{background:#f4f4f4;padding:0 .2em}"""


class Malformed(ValueError):
    """A result file that cannot be used; the message says what is wrong with it."""


# ---------------------------------------------------------------- values and files

def esc(value) -> str:
    return html.escape(str(value), quote=True)


def num(value) -> float:
    """A finite number from a result file, else Malformed."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Malformed(f"{str(value)[:40]!r} is not a number")
    return float(value)


def opt(value) -> float | None:
    return None if value is None else num(value)


def fmt(value: float | None, spec: str = ".4f") -> str:
    return "–" if value is None else format(value, spec)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:60]


def load(path: Path) -> dict:
    """A result file's JSON object, or Malformed saying why not."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise Malformed("not UTF-8 text") from None
    except ValueError as exc:
        raise Malformed(f"not valid JSON ({exc})") from None
    except OSError as exc:
        raise Malformed(f"cannot be read ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise Malformed(f"expected a JSON object, found {type(data).__name__}")
    return data


def describe(exc: Exception) -> str:
    if isinstance(exc, Malformed):
        return str(exc)
    if isinstance(exc, KeyError):
        return f"unexpected content: {exc.args[0]!r} missing"
    return f"unexpected content ({type(exc).__name__}: {str(exc)[:120]})"


def recorded(machine, path: Path) -> str:
    """The machine and date a run recorded (a benchmark's stamp string or ingest_profile's dict), else the file's
    modification time."""
    if isinstance(machine, dict) and machine:
        bits = [machine.get("cpu"), machine.get("cores") and f"{machine['cores']} cores",
                machine.get("ram_gib") and f"{machine['ram_gib']} GiB RAM",
                machine.get("python") and f"Python {machine['python']}", machine.get("date")]
        return "; ".join(str(b) for b in bits if b)
    if isinstance(machine, str) and machine:
        return machine
    try:
        when = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
        return f"machine and date not recorded in the file (file last modified {when:%Y-%m-%d %H:%M} UTC)"
    except OSError:
        return "machine and date not recorded in the file"


# ---------------------------------------------------------------- HTML pieces

def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def none_yet(what: str, how: str) -> str:
    return f'<p class="none">No {esc(what)} run yet: {esc(how)}.</p>'


def para(text: str) -> str:
    return f"<p>{esc(text)}</p>"


def run_line(runs: Path, path: Path, machine, what: str = "Run") -> str:
    return f'<p class="run">{esc(what)}: <code>{esc(rel(runs, path))}</code> — {esc(recorded(machine, path))}</p>'


def rel(runs: Path, path: Path) -> str:
    try:
        return str(path.relative_to(runs))
    except ValueError:
        return str(path)


def table(header: list[str], rows: list[list], left: int = 1) -> str:
    """An HTML table; the first `left` columns are text, the rest right-aligned figures."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td{'' if i < left else ' class=n'}>{esc(c)}</td>" for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def image(name: str, alt: str) -> str:
    return f'<img src="{esc(name)}" alt="{esc(alt)}">'


def attempt(runs: Path, path: Path, make: Callable[[], list[str]]) -> list[str]:
    """`make()`, or one note naming the file and what is wrong with it."""
    try:
        return make()
    except BAD_CONTENT as exc:
        return [note(f"{rel(runs, path)}: {describe(exc)}; skipped")]


def guarded(runs: Path, path: Path, render: Callable[[dict], list[str]]) -> list[str]:
    """`render(the file's JSON)`, or one note naming the file and what is wrong with it."""
    return attempt(runs, path, lambda: render(load(path)))


def per_file_section(runs: Path, out: Path, pattern: str, render: Callable[[Path, Path, Path, dict], list[str]],
                     what: str, how: str, intro: str) -> list[str]:
    """A section with a part per result file matching `pattern` (`render(runs, out, path, data)`), or the line
    saying that no such run exists yet and how to make one."""
    files = sorted(runs.glob(pattern))
    if not files:
        return [none_yet(what, how)]
    return [para(intro), *(line for path in files
                           for line in guarded(runs, path, lambda data, path=path: render(runs, out, path, data)))]


# ---------------------------------------------------------------- plots (matplotlib's object API, Agg)

def new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    return path.name


def bar_chart(path: Path, labels: list[str], series: dict[str, list[float | None]], title: str, axis: str,
              horizontal: bool = False, log: bool = False, spec: str = ".4g", hatched: list[bool] | None = None) -> str:
    """Grouped bars: one group per label, one bar per series (a missing value leaves its bar out); the groups marked
    in `hatched` (e.g. published figures) are drawn hatched and paler."""
    from matplotlib.ticker import StrMethodFormatter
    n, width = len(series), 0.8 / max(len(series), 1)
    long_side = max(4.0, 0.28 * len(labels) * max(n, 1.5) + 1.5)
    fig = new_figure(9, long_side) if horizontal else new_figure(max(6.0, 0.9 * len(labels) * n ** 0.5 + 2), 4.2)
    ax = fig.add_subplot()
    for i, (name, values) in enumerate(series.items()):
        pos = [j + (i - (n - 1) / 2) * width for j in range(len(labels))]
        heights = [math.nan if v is None else v for v in values]
        bars = (ax.barh if horizontal else ax.bar)(pos, heights, width, label=name)
        for bar, marked in zip(bars, hatched or []):
            if marked:
                bar.set(hatch="///", alpha=0.55)
        ax.bar_label(bars, labels=["" if v is None else format(v, spec) for v in values], fontsize=7, padding=2)
    slanted = not horizontal and max(map(len, labels), default=0) > 8
    (ax.set_yticks if horizontal else ax.set_xticks)(range(len(labels)), labels, fontsize=8,
                                                     **({"rotation": 20, "ha": "right"} if slanted else {}))
    if horizontal:
        ax.invert_yaxis()
    (ax.set_xlabel if horizontal else ax.set_ylabel)(axis)
    value_axis = ax.xaxis if horizontal else ax.yaxis
    if log:
        (ax.set_xscale if horizontal else ax.set_yscale)("log")
    elif "," in spec:
        value_axis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.margins(**({"x": 0.15} if horizontal else {"y": 0.15}))
    ax.set_title(title, fontsize=10)
    if n > 1:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(axis="x" if horizontal else "y", alpha=0.3)
    return save(fig, path)


def roc_chart(path: Path, curves: dict[str, tuple[list, list, float]], title: str) -> str:
    fig = new_figure(5, 5)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="chance")
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC {auc:.3f})")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return save(fig, path)


def calibration_chart(path: Path, curves: dict[str, list[dict]], title: str) -> str:
    fig = new_figure(5, 5)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfectly calibrated")
    for name, bins in curves.items():
        ax.plot([b["mean_predicted"] for b in bins], [b["observed"] for b in bins], marker="o", ms=4, label=name)
    ax.set(xlabel="mean predicted probability (quantile bin)", ylabel="observed rate", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    return save(fig, path)


def confusion_chart(path: Path, matrices: dict[str, tuple[list[str], list[list[int]]]], title: str) -> str:
    fig = new_figure(3.6 * len(matrices) + 0.4, 3.8)
    for i, (method, (labels, matrix)) in enumerate(matrices.items()):
        ax = fig.add_subplot(1, len(matrices), i + 1)
        ax.imshow(matrix, cmap="Blues")
        top = max(max(row) for row in matrix) or 1
        for r, row in enumerate(matrix):
            for c, count in enumerate(row):
                ax.text(c, r, f"{count:,}", ha="center", va="center", fontsize=9,
                        color="white" if count > top / 2 else "black")
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set(xlabel="predicted", ylabel="true")
        ax.set_title(method, fontsize=9)
    fig.suptitle(title, fontsize=10)
    return save(fig, path)


# ---------------------------------------------------------------- 1. sequential recommendation

def seqrec_rows(path: Path, data: dict) -> list[dict]:
    """One row per (model, protocol) of a seqrec.py result file."""
    recbole = path.stem.endswith("_recbole")
    rows = []
    for r in data["results"]:
        by = "RecBole 1.2.1" if recbole or r["model"] == "recbole-sasrec" else "ours"
        rows.append({"model": str(r["model"]), "by": by, "protocol": "full", "hr@10": num(r["hr@10"]),
                     "ndcg@10": num(r["ndcg@10"]), "train_seconds": opt(r.get("train_seconds"))})
        if "sample99_hr@10" in r:
            rows.append({**rows[-1], "protocol": "sample99", "hr@10": num(r["sample99_hr@10"]),
                         "ndcg@10": opt(r.get("sample99_ndcg@10"))})
    return rows


def published_rows(dataset: str) -> list[dict]:
    return [{**p, "by": "published", "hr@10": p.get("hr@10"), "train_seconds": None}
            for p in PUBLISHED_SEQREC if p["dataset"] == dataset]


def seqrec_protocol(out: Path, dataset: str, protocol: str, rows: list[dict]) -> list[str]:
    """One protocol's chart and table for a dataset: the rows all use `protocol`."""
    meaning = PROTOCOLS[protocol].format(dataset=dataset)
    published = [r["by"] == "published" for r in rows]
    name = bar_chart(out / f"seqrec_{slug(dataset)}_{protocol}.png", [f"{r['model']} — {r['by']}" for r in rows],
                     {"HR@10": [r["hr@10"] for r in rows], "NDCG@10": [r["ndcg@10"] for r in rows]},
                     f"{dataset}: {meaning.split(':')[0]} (test, leave-one-out"
                     f"{'; hatched = published' if any(published) else ''})", "metric",
                     horizontal=True, spec=".4f", hatched=published)
    return [f"<p><b>Protocol</b>: {esc(meaning)}.</p>",
            image(name, f"{dataset}: HR@10 and NDCG@10 per model, {protocol} protocol"),
            table(["model", "by", "protocol", "HR@10", "NDCG@10", "train s"],
                  [[r["model"], r["by"], protocol, fmt(r["hr@10"]), fmt(r["ndcg@10"]), fmt(r["train_seconds"], ",.0f")]
                   for r in rows], left=3)]


def seqrec_dataset(runs: Path, out: Path, dataset: str, files: list[Path]) -> list[str]:
    parts, rows = [f"<h3>{esc(dataset)}</h3>"], []
    for path in files:
        def take(data: dict, path=path) -> list[str]:
            rows.extend(seqrec_rows(path, data))
            return [run_line(runs, path, data.get("machine"))]
        parts += guarded(runs, path, take)
    if not rows:
        return parts
    rows += published_rows(dataset)
    for protocol in PROTOCOLS:
        chosen = [r for r in rows if r["protocol"] == protocol]
        if any(r["by"] != "published" for r in chosen):
            parts += seqrec_protocol(out, dataset, protocol, chosen)
    sources = sorted({r["source"] for r in rows if r["by"] == "published"})
    if sources:
        parts.append("<p>Published figures (as quoted in README.md; only NDCG@10 is recorded for the full-ranking "
                     "baselines, so they have no HR@10 bar): " + "; ".join(esc(s) for s in sources) + ".</p>")
    return parts


def seqrec_section(runs: Path, out: Path) -> list[str]:
    files = [p for p in sorted((runs / "seqrec").glob("*.json")) if benchmark_of(p) not in FEEDBACK]
    if not files:
        return [none_yet("sequential-recommendation", "benchmarks/seqrec.py --dataset Beauty writes seqrec/Beauty.json "
                         "(ours) and, with --models \"\" --recbole PYTHON, seqrec/Beauty_recbole.json")]
    datasets: dict[str, list[Path]] = {}
    for path in files:
        datasets.setdefault(path.stem.removesuffix("_recbole"), []).append(path)
    parts = [para("Leave-one-out on the S3-Rec Amazon files: per user the last item is the test target. Ours and "
                  "RecBole's SASRec were run on the same split and machine; the published rows come from the papers. "
                  "Full-ranking and sample99 figures are never shown in one chart.")]
    for dataset, paths in datasets.items():
        parts += seqrec_dataset(runs, out, dataset, paths)
    return parts


# ---------------------------------------------------------------- 2. sentiment

def settings(args) -> str:
    if not isinstance(args, dict):
        return "–"
    return ", ".join(f"{k}={v}" if v is not True else k for k, v in args.items()
                     if k not in ("dataset", "methods") and v not in (None, False))


def confusion_of(row: dict) -> tuple[list[str], list[list[int]]] | None:
    c = row.get("confusion")
    if c is None:
        return None
    labels, matrix = [str(x) for x in c["labels"]], [[int(num(x)) for x in r] for r in c["matrix"]]
    if len(matrix) != len(labels) or any(len(r) != len(labels) for r in matrix):
        raise Malformed(f"{row['method']}: the confusion matrix is not {len(labels)}×{len(labels)}")
    return labels, matrix


def sentiment_file(runs: Path, out: Path, path: Path, data: dict) -> list[str]:
    dataset = path.stem
    rows = [{"method": str(r["method"]), "accuracy": num(r["accuracy"]), "macro_f1": num(r["macro_f1"]),
             "auc": opt(r.get("auc")), "n": opt(r.get("n")), "train_seconds": opt(r.get("train_seconds")),
             "confusion": confusion_of(r), "machine": r.get("machine", data.get("machine")),
             "args": r.get("args", data.get("args"))} for r in data["results"]]
    if not rows:
        raise Malformed("no results")
    parts = [f"<h3>{esc(SENTIMENT_DATA.get(dataset, dataset))}</h3>",
             *(run_line(runs, path, r["machine"], f"Run ({r['method']})") for r in rows)]
    methods = [r["method"] for r in rows]
    name = bar_chart(out / f"sentiment_{slug(dataset)}_scores.png", methods,
                     {"accuracy": [r["accuracy"] for r in rows], "macro-F1": [r["macro_f1"] for r in rows]},
                     f"Sentiment ({dataset}), held-out test split", "score")
    parts += [image(name, f"Sentiment {dataset}: accuracy and macro-F1 per method"),
              table(["method", "accuracy", "macro-F1", "AUC", "test rows", "train s", "settings"],
                    [[r["method"], fmt(r["accuracy"]), fmt(r["macro_f1"]), fmt(r["auc"]), fmt(r["n"], ",.0f"),
                      fmt(r["train_seconds"], ",.0f"), settings(r["args"])] for r in rows])]
    matrices = {r["method"]: r["confusion"] for r in rows if r["confusion"]}
    if matrices:
        name = confusion_chart(out / f"sentiment_{slug(dataset)}_confusion.png", matrices,
                               f"Confusion matrices ({dataset}; rows = true label)")
        parts.append(image(name, f"Sentiment {dataset}: confusion matrix per method (rows true, columns predicted)"))
    if missing := [m for m in methods if m not in matrices]:
        parts.append(note(f"{rel(runs, path)}: no confusion matrix for {', '.join(missing)} (written before "
                          f"benchmarks/sentiment.py recorded one; re-run with --methods {','.join(missing)})"))
    return parts


def sentiment_section(runs: Path, out: Path) -> list[str]:
    return per_file_section(
        runs, out, "sentiment/*.json", sentiment_file, "sentiment",
        "benchmarks/sentiment.py --dataset zh (or en) --methods frozen,lora,full writes sentiment/zh.json (en.json)",
        "Frozen encoder + logistic regression, LoRA and full fine-tuning, on a fixed seeded split; every figure is on "
        "the held-out test part (accuracy and macro-F1 from the same predictions as the confusion matrix). Methods "
        "may come from different runs: each row names its own.")


# ---------------------------------------------------------------- 3. churn and propensity

def score_entries(part: str, data: dict) -> dict[str, dict]:
    """Display name → binary_metrics dict for churn (per dataset) or propensity (per label and route)."""
    if part == "churn":
        return {f"churn 90 days — {name}": m for name, m in data.items()}
    return {f"{label} next day — {route}": m for label, routes in data.items() for route, m in routes.items()}


def curves_of(entries: dict[str, dict]) -> tuple[dict, dict, list[str]]:
    rocs, calibrations, missing = {}, {}, []
    for name, m in entries.items():
        if "roc" in m and "calibration" in m:
            fpr, tpr = [num(x) for x in m["roc"]["fpr"]], [num(x) for x in m["roc"]["tpr"]]
            if len(fpr) != len(tpr):
                raise Malformed(f"{name}: fpr and tpr differ in length")
            rocs[name] = (fpr, tpr, num(m["auc"]))
            calibrations[name] = [{k: num(b[k]) for k in ("mean_predicted", "observed", "n")} for b in m["calibration"]]
        else:
            missing.append(name)
    return rocs, calibrations, missing


def lifecycle_part(runs: Path, out: Path, path: Path, data: dict, part: str) -> list[str]:
    entries = score_entries(part, data[part])
    machine = (data.get("machines") or {}).get(part, data.get("machine"))
    parts = [f"<h3>{'Churn' if part == 'churn' else 'Purchase / cart propensity'}</h3>", run_line(runs, path, machine)]
    parts.append(table(["what", "test cases", "positive rate", "AUC", "PR-AUC", "Brier", "ECE"],
                       [[name, fmt(opt(m.get("n")), ",.0f"), fmt(num(m["positive_rate"]), ".1%"),
                         fmt(num(m["auc"]), ".3f"), fmt(num(m["pr_auc"]), ".3f"), fmt(opt(m.get("brier")), ".3f"),
                         fmt(opt(m.get("ece")), ".3f")] for name, m in entries.items()]))
    rocs, calibrations, missing = curves_of(entries)
    if rocs:
        parts += [image(roc_chart(out / f"{part}_roc.png", rocs, f"{part}: ROC on the test cut-off"),
                        f"ROC curves, {part}"),
                  image(calibration_chart(out / f"{part}_calibration.png", calibrations,
                                          f"{part}: calibration (10 quantile bins)"), f"Calibration plot, {part}")]
    if missing:
        parts.append(note(f"{rel(runs, path)}: no ROC points or calibration bins for {'; '.join(missing)} (written by "
                          f"an older benchmarks/lifecycle.py; re-run it with --parts {part})"))
    return parts


def lifecycle_section(runs: Path, out: Path) -> list[str]:
    path = runs / "lifecycle" / "results.json"
    how = "benchmarks/lifecycle.py --parts churn,propensity writes lifecycle/results.json"
    if not path.exists():
        return [none_yet("churn or propensity", how)]

    def render(data: dict) -> list[str]:
        present = [p for p in ("churn", "propensity") if p in data]
        parts = [para("Churn: no purchase in the next 90 days, rolling cut-offs 90 days apart, the last one the test. "
                      "Propensity: the Taobao slice, buy / add to cart on the next day, time split.")]
        for part in present:
            parts += attempt(runs, path, lambda part=part: lifecycle_part(runs, out, path, data, part))
        return parts if present else [none_yet("churn or propensity", f"{how} (this file has neither part)")]
    return guarded(runs, path, render)


# ---------------------------------------------------------------- 4. CLV holdout buckets

def clv_file(runs: Path, out: Path, path: Path, data: dict) -> list[str]:
    buckets = [{k: (str(v) if k == "bucket" else num(v)) for k, v in b.items()} for b in data["buckets"]]
    if not buckets or buckets[-1]["bucket"] != "total":
        raise Malformed("the bucket list does not end with its total")
    predictions = [k for k in buckets[0] if k not in ("bucket", "customers", "actual")]
    per_bucket = buckets[:-1]
    series = {"actual": [b["actual"] for b in per_bucket],
              **{PREDICTION_NAMES.get(k, k): [b.get(k) for b in per_bucket] for k in predictions}}
    name = bar_chart(out / f"{slug(path.stem)}.png", [b["bucket"] for b in per_bucket], series,
                     f"Holdout repeat transactions per calibration-frequency bucket ({data.get('file', path.stem)})",
                     "repeat transactions in the holdout", spec=",.0f")
    setup = (f"; calibration to {data['calibration_end']}, holdout to {data['holdout_end']} "
             f"({fmt(opt(data.get('holdout_weeks')), '.1f')} weeks), {num(data['customers']):,.0f} customers.")
    return [run_line(runs, path, data.get("machine")),
            f"<p>Command: <code>{esc(data.get('command', 'huaxiang clv FILE … --json'))}</code>{esc(setup)}</p>",
            image(name, "Actual vs predicted holdout repeat transactions per calibration-frequency bucket"),
            bucket_table(buckets, predictions), *bgnbd_params(data)]


def bucket_table(buckets: list[dict], predictions: list[str]) -> str:
    total = buckets[-1]
    error = [fmt(total[k] / total["actual"] - 1, "+.1%") if total["actual"] and k in total else "–"
             for k in predictions]
    return table(["calibration repeat purchases", "customers", "actual",
                  *(PREDICTION_NAMES.get(k, k) for k in predictions)],
                 [[b["bucket"], fmt(b["customers"], ",.0f"), fmt(b["actual"], ",.0f"),
                   *(fmt(b.get(k), ",.1f") for k in predictions)] for b in buckets]
                 + [["error of the total", "", "", *error]])


def bgnbd_params(data: dict) -> list[str]:
    keys = list(PUBLISHED_BGNBD["params"])
    rows = [["huaxiang (this run)", *(fmt(num(data[k]), ".4f") for k in keys)]]
    same_data = all(data.get(k) == PUBLISHED_BGNBD[k] for k in ("file", "customers", "calibration_end"))
    if same_data:
        rows.insert(0, [f"published: {PUBLISHED_BGNBD['source']}",
                        *(f"{v:g}" for v in PUBLISHED_BGNBD["params"].values())])
    parts = [table(["BG/NBD", "r", "α", "a", "b"], rows)]
    if not same_data:
        parts.append(para(f"The published parameters ({PUBLISHED_BGNBD['source']}) are for "
                          f"{PUBLISHED_BGNBD['file']}, {PUBLISHED_BGNBD['customers']:,} customers calibrated to "
                          f"{PUBLISHED_BGNBD['calibration_end']}; this run used other data, so they are not compared."))
    return parts


def clv_section(runs: Path, out: Path) -> list[str]:
    return per_file_section(
        runs, out, "lifecycle/clv_*.json", clv_file, "CLV holdout",
        "benchmarks/lifecycle.py --parts clv writes lifecycle/clv_cdnow.json (what huaxiang clv CDNOW_sample.txt.gz "
        "--format cdnow --calibration-end 1997-09-30 --holdout-end 1998-06-30 --json prints)",
        "BG/NBD + Gamma-Gamma fitted on the calibration period; repeat transactions in the holdout, actual vs "
        "predicted, per number of repeat purchases in calibration (the blend never sees the holdout).")


# ---------------------------------------------------------------- 5. ingest, scale, serving

def ingest_rows(data: dict) -> list[dict]:
    return [{"label": f"{r['phase']}, {int(num(r['size'])):,} events", "status": str(r.get("status", "ok")),
             "wall_s": opt(r.get("wall_s")), "events_per_s": opt(r.get("events_per_s")),
             "peak_mib": opt(r.get("peak_mib")), "note": str(r.get("note", "")), "phase": str(r["phase"])}
            for r in data["results"]]


def scale_rows(data: dict) -> list[dict]:
    return [{"label": f"{r['engine']}, {int(num(r['size'])):,} events", "status": "ok" if "wall_s" in r else "failed",
             "wall_s": opt(r.get("wall_s")), "events_per_s": opt(r.get("events_per_s")),
             "peak_mib": opt(r.get("peak_mib")), "note": str(r.get("note", "")), "phase": "build"}
            for r in data["rows"]]


def latency_row(name: str, data: dict) -> dict:
    return {"label": name, "what": str(data["what"]), "samples": num(data["samples"]),
            **{k: num(data[k]) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")},
            "rate": opt(data.get("achieved_per_s")), "errors": opt(data.get("errors"))}


def throughput_table(rows: list[dict]) -> str:
    return table(["run", "status", "wall s", "events/s", "peak MiB", "note"],
                 [[r["label"], r["status"], fmt(r["wall_s"], ",.1f"), fmt(r["events_per_s"], ",.0f"),
                   fmt(r["peak_mib"], ",.0f"), r["note"]] for r in rows], left=2)


def throughput_file(runs: Path, path: Path, reader: Callable[[dict], list[dict]], title: str,
                    setup: Callable[[dict], str], sink: list[dict]) -> list[str]:
    """A file of timed runs as a table; its runs with a throughput (other than data generation) go to `sink`."""
    def render(data: dict) -> list[str]:
        rows = reader(data)
        sink.extend({**r, "label": f"{title}: {r['label']}"} for r in rows
                    if r["events_per_s"] is not None and r["phase"] != "generate")
        return [f"<h3>{esc(title)}</h3>", run_line(runs, path, data.get("machine")), para(setup(data)),
                throughput_table(rows)]
    return guarded(runs, path, render)


def latency_file(runs: Path, path: Path, sink: list[dict]) -> list[str]:
    def render(data: dict) -> list[str]:
        sink.append(latency_row(path.stem, data))
        return [run_line(runs, path, data.get("machine"))]
    return guarded(runs, path, render)


def latency_part(out: Path, rows: list[dict]) -> list[str]:
    return [table(["run", "what", "samples", "p50 ms", "p90 ms", "p99 ms", "max ms", "achieved /s", "errors"],
                  [[r["label"], r["what"], fmt(r["samples"], ",.0f"), fmt(r["p50_ms"], ".2f"), fmt(r["p90_ms"], ".2f"),
                    fmt(r["p99_ms"], ".2f"), fmt(r["max_ms"], ".2f"), fmt(r["rate"], ",.0f"), fmt(r["errors"], ",.0f")]
                   for r in rows], left=2),
            image(bar_chart(out / "latency.png", [r["label"] for r in rows],
                            {q: [r[f"{q}_ms"] for r in rows] for q in ("p50", "p90", "p99")}, "Latency percentiles",
                            "milliseconds (log scale)", horizontal=True, log=True, spec=".3g"),
                  "Latency percentiles p50, p90, p99 per run")]


def systems_section(runs: Path, out: Path) -> list[str]:
    throughput, latency, parts = [], [], []
    ingest = runs / "ingest_profile.json"
    parts += (throughput_file(runs, ingest, ingest_rows, "Ingest and profile build (store)",
                              lambda d: f"Synthetic events from CSV; DuckDB memory limit "
                                        f"{d.get('memory_limit', '–')}; each phase in its own process, peak = its "
                                        "resident set.", throughput)
              if ingest.exists() else [none_yet("ingest", "benchmarks/ingest_profile.py writes ingest_profile.json")])
    scales = sorted(runs.glob("scale*.json"))
    for path in scales:
        parts += throughput_file(runs, path, scale_rows, f"Parquet build ({path.stem})",
                                 lambda d: f"huaxiang build --input PARQUET {d.get('build_args') or ''}; peak = the "
                                           "process tree's resident set.", throughput)
    if not scales:
        parts.append(none_yet("scale", "benchmarks/scale.py writes scale.json (--name NAME: NAME.json)"))
    latency_lines = [line for path in sorted((runs / "latency").glob("*.json")) if benchmark_of(path) not in FEEDBACK
                     for line in latency_file(runs, path, latency)]
    parts += (["<h3>Latency</h3>", *latency_lines, *(latency_part(out, latency) if latency else [])] if latency_lines
              else [none_yet("latency", "benchmarks/api_load.py, recommend_latency.py, freshness.py and pages.py write "
                             "latency/*.json")])
    if throughput:
        parts.insert(0, image(bar_chart(out / "throughput.png", [r["label"] for r in throughput],
                                        {"events/s": [r["events_per_s"] for r in throughput]}, "Throughput",
                                        "events per second", horizontal=True, spec=",.0f"),
                              "Throughput in events per second per run"))
    return parts


# ---------------------------------------------------------------- experiments

LIFT_METRICS = {"ctr": "CTR", "conversion": "conversion", "revenue_per_user": "revenue / user"}


def lift_chart(path: Path, rep: dict) -> str:
    """Each treatment's lift over the control per metric, a point with its 95% interval, zero marked."""
    rows = [(f"{v}: {LIFT_METRICS[k]}", comp[k]) for v, comp in rep["comparisons"].items() for k in LIFT_METRICS]
    fig = new_figure(7, max(3.2, 0.45 * len(rows) + 1.2))
    ax = fig.add_subplot()
    for y, (_, c) in enumerate(rows):
        if c.get("lift") is None:
            continue
        low = c["ci_low"] if c.get("ci_low") is not None else c["lift"]
        high = c["ci_high"] if c.get("ci_high") is not None else c["lift"]
        ax.errorbar([100 * c["lift"]], [y], xerr=[[100 * (c["lift"] - low)], [100 * (high - c["lift"])]], fmt="o",
                    capsize=4, color="#2f6db5")
    ax.axvline(0, color="#888", linewidth=1)
    ax.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"lift over {rep['control']} (%), 95% interval")
    ax.set_title(f"Experiment {rep['experiment']['name']}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return save(fig, path)


def experiment_part(out: Path, rep: dict, where: str) -> list[str]:
    from ..experiments.stats import interval_text
    e, srm = rep["experiment"], rep["srm"]
    rows = [[v, m.get("model", ""), fmt(m["exposed_users"], ",.0f"), fmt(m["impressions"], ",.0f"),
             interval_text(m["ctr"], ".2%"), interval_text(m["conversion"], ".2%"),
             interval_text(m["revenue_per_user"], ",.2f"), fmt(m["latency"]["p99_ms"], ".1f")]
            for v, m in rep["variants"].items()]
    lifts = [[f"{v} vs {rep['control']}", LIFT_METRICS[k], "–" if c["lift"] is None else f"{c['lift']:+.1%}",
              "–" if c["ci_low"] is None else f"{c['ci_low']:+.1%} to {c['ci_high']:+.1%}", fmt(c["p_value"], ".3g")]
             for v, comp in rep["comparisons"].items() for k, c in ((k, comp[k]) for k in LIFT_METRICS)]
    srm_line = ("no exposed users yet" if srm["p_value"] is None else
                f"sample ratio MISMATCH (chi-square p = {srm['p_value']:.3g}): do not trust the lifts" if srm["flag"]
                else f"users per variant fit the split (chi-square p = {srm['p_value']:.3g})")
    return [f"<h3>{esc(e['name'])} ({esc(e['status'])})</h3>", f'<p class="run">{esc(where)}</p>',
            table(["variant", "model", "exposed users", "impressions", "CTR", "conversion", "revenue / user",
                   "p99 ms"], rows, left=2),
            table(["comparison", "metric", "lift", "95% interval", "p-value"], lifts, left=2),
            para(srm_line), image(lift_chart(out / f"experiment-{slug(e['name'])}.png", rep),
                                  f"Lifts of experiment {e['name']} with 95% intervals")]


def _report_speed(d: dict) -> str:
    return (f"report over {d['exposures']:,} exposures: {d['report_seconds_median']:.2f} s (pandas attribution "
            f"alone {d['pandas_attribution_seconds_median']:.2f} s)")


def _exposure_cost(d: dict) -> str:
    ci = d.get("p99_added_ms_ci95")
    return (f"recording exposures adds {d['p99_added_ms']:+.2f} ms to the recommendation p99 at {d['rate_per_s']:.0f}/s"
            + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")
            + f" (median of {d['turns']} turns {d['p99_added_ms_median_of_turns']:+.2f} ms"
            + (f"; A/A {d['p99_aa_ms']:+.2f} ms)" if "p99_aa_ms" in d else ")"))


def _itemknn_update(d: dict) -> str:
    return "; ".join(f"{name}, {how}: update {r['update_ms_median']:.0f} ms per {d['args']['chunk']:,} events vs refit "
                     f"{r['refit_ms_median']:.0f} ms, equal to the refit: {'yes' if r['equal_to_refit'] else 'NO'}"
                     for name, parts in d["results"].items() for how, r in parts.items() if isinstance(r, dict))


def _sasrec_warm(d: dict) -> str:
    by_arm: dict[str, list[float]] = {}
    for r in d["results"]:
        if r.get("test_ndcg@10") is not None:
            by_arm.setdefault(r["arm"], []).append(r["test_ndcg@10"])
    return ("test NDCG@10 " + ", ".join(f"{arm} {sum(v) / len(v):.4f}" for arm, v in by_arm.items())
            + f" (epochs capped at {d['args']['epochs']}, {len(by_arm.get('warm start', []))} seeds)")


# the feedback loop's benchmarks: their files sit among others' (latency/, seqrec/) and are summarised in section 6
FEEDBACK = {"experiment_report": _report_speed, "exposure_cost": _exposure_cost,
            "itemknn_incremental": _itemknn_update, "sasrec_warm_start": _sasrec_warm}


def benchmark_of(path: Path) -> str | None:
    """The `benchmark` a result file names (None: none, or unreadable — its section says so)."""
    try:
        found = load(path).get("benchmark")
    except Malformed:
        return None
    return found if isinstance(found, str) else None


def feedback_line(path: Path) -> str:
    """A feedback benchmark's result in one line (or what is wrong with its file)."""
    data = load(path)
    try:
        return FEEDBACK[data["benchmark"]](data)
    except BAD_CONTENT as exc:
        return f"skipped: {describe(exc)}"


def experiments_section(runs: Path, out: Path, reports: list[dict] | None = None) -> list[str]:
    parts = [line for path in sorted(runs.glob("experiments/*.json"))
             for line in guarded(runs, path, lambda data, path=path: experiment_part(
                 out, data, f"Run: {rel(runs, path)} — {recorded(data.get('machine'), path)}"))]
    for rep in reports or []:
        parts += attempt(runs, Path(rep["experiment"]["name"]),
                         lambda rep=rep: experiment_part(out, rep, "From the store given with --db"))
    if not parts:
        parts.append(none_yet("experiment", "`huaxiang experiment report NAME --json > "
                                            "benchmarks/out/experiments/NAME.json`, or `huaxiang report --db STORE`"))
    rows = [[rel(runs, path), feedback_line(path), recorded(load(path).get("machine"), path)]
            for path in sorted(runs.rglob("*.json")) if benchmark_of(path) in FEEDBACK]
    if rows:
        parts += ["<h3>The feedback loop's benchmarks</h3>", table(["file", "result", "machine and date"], rows, 3)]
    return parts


# ---------------------------------------------------------------- the page

SECTIONS = [("seqrec", "1. Sequential recommendation", seqrec_section),
            ("sentiment", "2. Sentiment classification", sentiment_section),
            ("lifecycle", "3. Churn and propensity", lifecycle_section),
            ("clv", "4. Customer lifetime value: holdout by bucket", clv_section),
            ("systems", "5. Ingest, scale and serving", systems_section),
            ("experiments", "6. Experiments", experiments_section)]


def page(runs: Path, sections: list[tuple[str, str, list[str]]]) -> str:
    now = datetime.now(timezone.utc)
    toc = "".join(f'<li><a href="#{anchor}">{esc(title)}</a></li>' for anchor, title, _ in sections)
    body = "".join(f'<section id="{anchor}"><h2>{esc(title)}</h2>{"".join(parts)}</section>'
                   for anchor, title, parts in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>huaxiang evaluation report</title><style>{CSS}</style></head><body>"
            f"<h1>huaxiang evaluation report</h1><p class=run>Generated {now:%Y-%m-%d %H:%M} UTC from "
            f"<code>{esc(runs)}</code>. Each section names the machine and date its runs recorded.</p>"
            f"<ul>{toc}</ul>{body}</body></html>\n")


def write_report(runs: Path, out: Path, progress: Callable[[str], None] | None = None,
                 experiments: list[dict] | None = None) -> Path:
    """Reads the benchmark results under `runs` (and the `experiments` reports given, `catalog.report`'s), writes
    `out/index.html` and its PNG plots; returns the page's path."""
    from matplotlib import rc_context
    runs, out = Path(runs), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    with rc_context({"text.parse_math": False, "text.usetex": False}):  # labels from files are plain text
        for anchor, title, build in SECTIONS:
            if progress:
                progress(title)
            try:
                parts = build(runs, out, experiments) if build is experiments_section else build(runs, out)
            except (OSError, *BAD_CONTENT) as exc:  # a file system surprise: say so, keep the other sections
                parts = [note(f"this section failed: {describe(exc)}")]
            sections.append((anchor, title, parts))
    index = out / "index.html"
    index.write_text(page(runs, sections), encoding="utf-8")
    return index
