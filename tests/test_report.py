"""`huaxiang report`'s page (evaluate/report.py) over result files made the way the benchmarks make them: seqrec rows
from benchmarks/seqrec.py's own `run_ours` on the bundled Beauty slice, CLV from the function `huaxiang clv` runs on
the bundled CDNOW file, churn from benchmarks/lifecycle.py's `churn_result`, sentiment rows and latency files from
the benchmarks' own builders. Checks the plots, the published baselines and their protocols, escaping, and that a
missing or malformed file gives a line instead of an exception."""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the benchmarks import each other by module name, as when run as scripts

import lifecycle  # noqa: E402
import machine  # noqa: E402
import seqrec  # noqa: E402
import sentiment  # noqa: E402
from behaviour_text import metrics as propensity_metrics  # noqa: E402
from ingest_profile import machine as ingest_machine  # noqa: E402

from conftest import png_size  # noqa: E402
from huaxiang.demo import demo_path  # noqa: E402
from huaxiang.evaluate.report import write_report  # noqa: E402
from huaxiang.models.seqrec.data import read_sequences  # noqa: E402
from huaxiang.models.scores import roc_points  # noqa: E402

HOSTILE = '<script>alert("x")</script>'
SECTION_PNGS = ["seqrec_Beauty_full.png", "seqrec_Beauty_sample99.png", "sentiment_en_scores.png",
                "sentiment_en_confusion.png", "churn_roc.png", "churn_calibration.png", "propensity_roc.png",
                "propensity_calibration.png", "clv_cdnow.png", "throughput.png", "latency.png", "experiment-ab1.png"]


def write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def seqrec_runs(runs: Path) -> None:
    data = read_sequences(str(demo_path("Beauty_head2000.txt.gz")))
    rng = np.random.default_rng(0)
    negatives = [rng.integers(1, data.n_items + 1, 99) for _ in data.users]
    rows = [r for name in ("popularity", "itemknn") for r in seqrec.run_ours(name, data, None, negatives, {})]
    write(runs / "seqrec" / "Beauty.json", {"args": {"dataset": "Beauty", "models": "popularity,itemknn"},
                                            "machine": machine.stamp(), "results": rows})
    write(runs / "seqrec" / "Beauty_recbole.json",  # run_recbole's row (RecBole itself is not installed here)
          {"args": {"dataset": "Beauty", "models": ""}, "machine": machine.stamp(),
           "results": [{"model": "recbole-sasrec", "hr@5": 0.0541, "hr@10": 0.0825, "ndcg@5": 0.0323, "ndcg@10": 0.0414,
                        "mrr": 0.0288, "train_seconds": 2965.1, "valid_ndcg@10": 0.0514,
                        "note": "RecBole's MRR is MRR@10"}]})


def sentiment_runs(runs: Path) -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    p1 = np.clip(0.7 * y + rng.normal(0.15, 0.2, 300), 0.01, 0.99)
    proba = np.column_stack([1 - p1, p1])
    rows = [sentiment.result_row(method, y, proba, machine.stamp(), {"dataset": "en", "epochs": 4},
                                 train_seconds=1.0) for method in ("frozen", HOSTILE)]
    write(runs / "sentiment" / "en.json", sentiment.merge_results(None, rows))


def lifecycle_runs(runs: Path) -> None:
    small = pd.read_csv(demo_path("CDNOW_master.txt.gz"), sep=r"\s+", dtype=str)  # every 10th customer
    tenth = runs / "cdnow_tenth.txt"
    small[small["customer_id"].astype(int) % 10 == 0].to_csv(tenth, sep=" ", index=False)
    with threadpool_limits(1):  # LightGBM's OpenMP threads spin-wait when another process shares the cores
        churn = {"CDNOW, a tenth": lifecycle.churn_result(tenth, "cdnow", 3)}
    rng = np.random.default_rng(2)  # propensity: seeded scores through behaviour_text's own metrics (the Taobao
    y = rng.integers(0, 2, 400)     # store build behind the real ones is too slow for a unit test)
    p = 1 / (1 + np.exp(-(1.5 * y - 0.75 + rng.normal(0, 1, 400))))
    propensity = {"buy": {"gbdt": propensity_metrics(y, p)}}
    results = lifecycle.merge_parts({}, {"churn": churn}, machine.stamp())
    write(runs / "lifecycle" / "results.json", lifecycle.merge_parts(results, {"propensity": propensity}, "M2"))
    write(runs / "lifecycle" / "clv_cdnow.json",
          lifecycle.clv_result(tenth, "cdnow", *lifecycle.CLV_DATES, machine.stamp(), blend=False))


def systems_runs(runs: Path) -> None:
    write(runs / "ingest_profile.json",  # benchmarks/ingest_profile.py's file
          {"machine": {**ingest_machine(), "date": "2026-11-24 16:23 UTC"}, "memory_limit": "3GiB",
           "results": [{"phase": "ingest events", "wall_s": 7.3, "rows": 1_000_000, "events_per_s": 136_535.0,
                        "peak_mib": 579.3, "note": "store 57 MiB", "status": "ok", "size": 1_000_000,
                        "process_wall_s": 8.2},
                       {"phase": "build profiles", "status": "timed out after 3600 s", "wall_s": 3600.0,
                        "size": 10_000_000, "process_wall_s": 3600.0}]})
    write(runs / "scale.json", {"machine": machine.stamp(), "build_args": "", "rows": [  # benchmarks/scale.py's file
        {"size": 1_000_000, "engine": "duckdb", "wall_s": 7.2, "events_per_s": 139_812.0, "peak_mib": 1272.0,
         "note": "duckdb: wrote 9,859 profiles"},
        {"size": 1_000_000, "engine": "spark", "note": "exit 1: out of memory"}]})
    rng = np.random.default_rng(3)
    for benchmark, name, ms in (("api_load", "api_load_profile_1000", rng.gamma(2, 0.3, 2000)),
                                ("freshness", "freshness", rng.gamma(5, 25, 500))):
        machine.save_latency(machine.latency_result(benchmark, f"{name} run", ms, errors=0), name, runs / "latency")


def experiment_runs(runs: Path) -> None:
    """What `huaxiang experiment report ab1 --json` prints, for a seeded experiment (a variant's name hostile)."""
    from huaxiang.experiments.stats import experiment_report
    rng = np.random.default_rng(5)
    data = {}
    for v, p in (("control", 0.03), (HOSTILE, 0.036)):
        imp = rng.integers(1, 20, 3000)
        data[v] = {"impressions": imp, "clicks": rng.binomial(imp, p), "buyer": rng.binomial(1, 0.02, 3000),
                   "revenue": rng.gamma(1, 10, 3000) * rng.binomial(1, 0.02, 3000),
                   "latency_ms": rng.gamma(2, 2, 6000)}
    rep = experiment_report(data, {"control": 1, HOSTILE: 1}, "control")
    rep["experiment"] = {"name": "ab1", "tenant": None, "status": "running", "control": "control", "variants": [],
                         "created_at": "2026-11-30T10:00:00", "stopped_at": None}
    rep["window_hours"] = 24.0
    write(runs / "experiments" / "ab1.json", rep)
    # a feedback-loop benchmark's file among the latency files: summarised in section 6, not a latency run
    write(runs / "latency" / "experiment_report.json", {
        "benchmark": "experiment_report", "machine": machine.stamp(), "exposures": 1_000_000,
        "report_seconds_median": 0.76, "pandas_attribution_seconds_median": 0.88})


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    for make in (seqrec_runs, sentiment_runs, lifecycle_runs, systems_runs, experiment_runs):
        make(runs)
    seen = []
    index = write_report(runs, tmp_path_factory.mktemp("report"), progress=seen.append)
    return index, index.read_text(encoding="utf-8"), seen, runs


def test_every_section_has_its_plots(report):
    index, page, seen, _ = report
    assert index.name == "index.html" and len(seen) == 6
    for name in SECTION_PNGS:
        width, height = png_size(index.parent / name)
        assert width >= 300 and height >= 300 and (index.parent / name).stat().st_size > 2000, name
        assert f'src="{name}"' in page
    assert "run yet" not in page  # every section found its run
    assert "report over 1,000,000 exposures: 0.76 s" in page
    assert "not valid JSON" not in page and "skipped" not in page


def test_page_is_self_contained_and_names_its_sources(report):
    _, page, _, _ = report
    assert '<meta charset="utf-8">' in page
    assert "<script" not in page and "http://" not in page and "https://" not in page
    for name in ("SASRec (published)", "TIGER (published)", "S3-Rec (published)", "Rajput et al.", "Zhou et al.",
                 "recbole-sasrec", "Fader, Hardie &amp; Lee"):
        assert name in page, name
    assert "full ranking: the target ranked among all items" in page and "sample99: the target ranked" in page
    # the published full-ranking baselines sit in the full-ranking table, S3-Rec only in the sample99 one
    full, sample99 = page.split("<b>Protocol</b>: sample99")[0], page.split("<b>Protocol</b>: sample99")[1]
    assert "TIGER (published)" in full and "S3-Rec (published)" not in full
    assert "S3-Rec (published)" in sample99.split("<h2>")[0] and "TIGER (published)" not in sample99.split("<h2>")[0]
    assert page.count("Python 3") >= 6 and "results.json</code> — M2" in page  # each run's machine and date
    assert "this run used other data" in page  # a tenth of CDNOW is not the published sample


def test_hostile_strings_are_escaped(report):
    _, page, _, _ = report
    assert HOSTILE not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


def test_clv_file_holds_what_huaxiang_clv_prints(report):
    from typer.testing import CliRunner
    from huaxiang.cli import app
    runs = report[3]
    saved = json.loads((runs / "lifecycle" / "clv_cdnow.json").read_text())
    done = CliRunner().invoke(app, ["clv", str(runs / "cdnow_tenth.txt"), "--format", "cdnow", "--calibration-end",
                                    "1997-09-30", "--holdout-end", "1998-06-30", "--no-blend", "--json"])
    assert done.exit_code == 0, done.output
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert {k: saved[k] for k in printed} == printed and saved["command"].startswith("huaxiang clv cdnow_tenth.txt")


def test_missing_runs_say_which_benchmark_makes_them(tmp_path):
    page = write_report(tmp_path / "nothing", tmp_path / "out").read_text()
    for what, script in (("sequential-recommendation", "seqrec.py"), ("sentiment", "sentiment.py"),
                         ("churn or propensity", "lifecycle.py"), ("CLV holdout", "lifecycle.py --parts clv"),
                         ("ingest", "ingest_profile.py"), ("scale", "scale.py"), ("latency", "api_load.py"),
                         ("experiment", "huaxiang experiment report")):
        assert f"No {what} run yet" in page and script in page, what
    assert not list((tmp_path / "out").glob("*.png"))


def test_malformed_files_get_a_note_naming_them(tmp_path):
    runs = tmp_path / "runs"
    (runs / "seqrec").mkdir(parents=True)
    (runs / "seqrec" / "Beauty.json").write_text('{"results": [{"model": "x", "hr@10"')  # cut short
    write(runs / "sentiment" / "zh.json", ["not", "an", "object"])
    write(runs / "lifecycle" / "results.json", {"churn": {"CDNOW": {"auc": "high", "pr_auc": 0.5, "positive_rate": 0.5}},
                                                 "machine": "M"})
    write(runs / "lifecycle" / "clv_cdnow.json", {"buckets": [{"bucket": "0", "actual": 1.0}]})
    write(runs / "scale.json", {"machine": "M", "rows": [{"size": "big", "engine": "duckdb"}]})
    write(runs / "latency" / "freshness.json", {"what": "x"})
    (runs / "ingest_profile.json").write_bytes(b"\xff\xfe\x00")
    page = write_report(runs, tmp_path / "out").read_text()
    for name, why in (("seqrec/Beauty.json", "not valid JSON"), ("sentiment/zh.json", "expected a JSON object"),
                      ("lifecycle/results.json", "'high' is not a number"),
                      ("lifecycle/clv_cdnow.json", "does not end with its total"),
                      ("scale.json", "'big' is not a number"), ("latency/freshness.json", "'samples' missing"),
                      ("ingest_profile.json", "not UTF-8")):
        assert f"{name}: " in page and why.replace("'", "&#x27;") in page, name


def test_an_old_file_without_curves_or_confusion_says_how_to_refresh_it(tmp_path):
    runs = tmp_path / "runs"
    write(runs / "lifecycle" / "results.json", {"machine": "M", "propensity": {"buy": {"gbdt": {
        "auc": 0.6, "pr_auc": 0.28, "brier": 0.147, "ece": 0.034, "positive_rate": 0.18, "n": 814}}}})
    write(runs / "sentiment" / "zh.json", {"args": {"epochs": 2}, "results": [
        {"method": "lora", "accuracy": 0.91, "macro_f1": 0.91, "n": 2000, "auc": 0.97, "train_seconds": 240}]})
    page = write_report(runs, tmp_path / "out").read_text()
    assert "no ROC points or calibration bins for buy next day — gbdt" in page and "--parts propensity" in page
    assert "no confusion matrix for lora" in page and "--methods lora" in page
    assert "machine and date not recorded" in page


def test_sentiment_results_merge_by_method():
    y, proba = np.array([0, 0, 1, 1, 1]), np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7], [0.8, 0.2]])
    row = sentiment.result_row("frozen", y, proba, "M", {"epochs": 2})
    assert row["confusion"] == {"labels": ["negative", "positive"], "matrix": [[1, 1], [1, 2]]}
    assert row["accuracy"] == pytest.approx(3 / 5)
    old = {"args": {"epochs": 4}, "results": [{"method": "full", "accuracy": 0.99}, {"method": "frozen", "accuracy": 0}]}
    merged = sentiment.merge_results(old, [row], "2026-11-24 20:09 UTC")["results"]
    assert [r["method"] for r in merged] == ["frozen", "full"]
    assert merged[0] is row and merged[1]["args"] == {"epochs": 4} and "2026-11-24 20:09" in merged[1]["machine"]


def test_lifecycle_parts_merge_and_roc_points_are_thinned():
    merged = lifecycle.merge_parts({"machine": "old", "churn": {"a": 1}}, {"clv": {"b": 2}}, "new")
    assert merged["churn"] == {"a": 1} and merged["machines"] == {"churn": "old", "clv": "new"}
    rng = np.random.default_rng(4)
    y, p = rng.integers(0, 2, 5000), rng.random(5000)
    roc = roc_points(y, p)
    assert len(roc["fpr"]) == len(roc["tpr"]) <= 200
    assert (roc["fpr"][0], roc["tpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (0, 0, 1, 1)
