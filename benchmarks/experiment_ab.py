"""Benchmark: an A/B test between two recommenders, end to end, with simulated clients whose clicks follow a known
truth — does the online report rank the variants as the offline metric does?

    .venv/bin/python benchmarks/experiment_ab.py [--users 2000] [--seed 7]

Amazon Beauty (tests/data/Beauty.txt.gz): the last two items of the first `--users` users are held out (their
"future"); popularity and item-KNN are trained on the rest (registry versions 1 and 2) and measured offline (HR@10
of the future among each model's top 10). `huaxiang serve` runs the experiment `ab` (control = popularity,
treatment = item-KNN, 50/50, created through the CLI against the server); each simulated user asks for 10
recommendations and clicks a shown item with probability 0.8 if it is in their future, 0.002 otherwise, and buys
half of the future items they click (clicks carry the answer's request_id, purchases do not). The report comes from
`huaxiang experiment report ab --server … --json` and is written to benchmarks/out/experiments/beauty_ab.json
(section 6 of `huaxiang report`), with the offline figures and the machine beside it. tests/test_experiment_e2e.py
runs the same simulation and checks it.
"""
from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

BEAUTY = Path(__file__).resolve().parents[1] / "tests" / "data" / "Beauty.txt.gz"
OUT = Path(__file__).resolve().parent / "out" / "experiments" / "beauty_ab.json"
P_FUTURE, P_OTHER, P_BUY, PRICE = 0.8, 0.002, 0.5, 20.0  # click: future item / other; buy after a future click
MODELS = {"control": "popularity", "treatment": "itemknn"}


def huaxiang(*args: str) -> str:
    """A `huaxiang` command's standard output (its error when it fails)."""
    proc = subprocess.run([sys.executable, "-m", "huaxiang.cli", *args], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"huaxiang {args[0]}: {proc.stderr.strip()}")
    return proc.stdout


def beauty_store(folder: Path, users: int) -> tuple[str, dict[str, set[str]]]:
    """A store of Beauty less the last two items of its first `users` users, popularity then item-KNN trained on
    it; returns the store and those users' held-out items ("beauty:…" ids)."""
    futures, lines = {}, []
    for line in gzip.open(BEAUTY, "rt"):
        user, *items = line.split()
        if len(items) >= 5 and len(futures) < users:
            futures[f"beauty:{user}"] = {f"beauty:{i}" for i in items[-2:]}
            items = items[:-2]
        lines.append(" ".join([user, *items]))
    (folder / "Beauty_ab.txt").write_text("\n".join(lines) + "\n")
    db = str(folder / "ab.duckdb")
    huaxiang("ingest", str(folder / "Beauty_ab.txt"), "--format", "s3rec", "--namespace", "beauty", "--db", db)
    huaxiang("build", "--db", db)
    for model in MODELS.values():
        huaxiang("train", "recommender", "--model", model, "--db", db)
    return db, futures


def offline_hit_rate(db: str, model: str, futures: dict[str, set[str]]) -> float:
    """Share of the users with a held-out item among the model's top 10 (the offline metric)."""
    import duckdb

    from huaxiang.recommend.store_model import load_store_recommender
    from huaxiang.recommend.top_k import recommend
    con = duckdb.connect(db, read_only=True)
    try:
        rec = load_store_recommender(db, model=model)
        return float(np.mean([bool({i["item_id"] for i in recommend(con, rec, u, 10, False)["items"]} & f)
                              for u, f in futures.items()]))
    finally:
        con.close()


def request(base: str, method: str, path: str, key: str, body=None) -> dict:
    req = urllib.request.Request(base + path, method=method, headers={"X-API-Key": key, "Content-Type":
                                 "application/json"}, data=json.dumps(body).encode() if body is not None else None)
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def clients(base: str, read_key: str, write_key: str, futures: dict[str, set[str]], seed: int,
            k: int = 10, p_other: float = P_OTHER) -> dict[str, str]:
    """Each user asks for `k` recommendations once and clicks and buys as the module's docstring says (an item not
    in their future is clicked with probability `p_other`; events posted in batches); returns the variant each was
    served."""
    rng = np.random.default_rng(seed)
    seen, events = {}, []
    for n, (user, future) in enumerate(futures.items()):
        answer = request(base, "GET", f"/v1/users/{user}/recommendations?k={k}&explain=false", read_key)
        seen[user] = answer["experiment"]["variant"]
        if answer["model"]["name"] != MODELS[seen[user]]:
            raise AssertionError(f"{user} in {seen[user]} was served {answer['model']}")
        ts = (datetime.now(timezone.utc) + timedelta(seconds=1)).isoformat()
        for item in answer["items"]:
            hit = item["item_id"] in future
            if rng.random() < (P_FUTURE if hit else p_other):
                events.append({"user_id": user, "item_id": item["item_id"], "type": "click", "ts": ts,
                               "request_id": answer["request_id"]})
                if hit and rng.random() < P_BUY:
                    events.append({"user_id": user, "item_id": item["item_id"], "type": "buy", "ts": ts,
                                   "price": PRICE})
        if len(events) >= 200 or n == len(futures) - 1:
            done = request(base, "POST", "/v1/events", write_key, {"events": events})
            if done["rejected"]:
                raise AssertionError(f"events rejected: {done['rejected'][:3]}")
            events = []
    return seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=2_000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    from machine import stamp
    from served import create_key, serving
    cli = [sys.executable, "-m", "huaxiang.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        db, futures = beauty_store(Path(tmp), args.users)
        offline = {v: offline_hit_rate(db, m, futures) for v, m in MODELS.items()}
        keys = {s: create_key(cli, db, s) for s in ("read", "write", "admin")}
        with serving(cli, db) as port:
            base = f"http://127.0.0.1:{port}"
            huaxiang("experiment", "create", "ab", "--variants", ",".join(f"{v}={m}" for v, m in MODELS.items()),
                     "--tenant", "beauty", "--server", base, "--key", keys["admin"])
            clients(base, keys["read"], keys["write"], futures, args.seed)
            rep = json.loads(huaxiang("experiment", "report", "ab", "--server", base, "--key", keys["read"],
                                      "--json"))
    rep.update(machine=stamp(), offline_hr10=offline, users=args.users, seed=args.seed,
               clients={"p_click_future": P_FUTURE, "p_click_other": P_OTHER, "p_buy": P_BUY, "price": PRICE})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(rep, indent=1))
    for v, m in rep["variants"].items():
        ctr, conv = m["ctr"], m["conversion"]
        print(f"{v} ({MODELS[v]}): offline HR@10 {offline[v]:.4f}; {m['exposed_users']:,} users, CTR "
              f"{ctr['value']:.4%} [{ctr['ci_low']:.4%}, {ctr['ci_high']:.4%}], conversion {conv['value']:.3%} "
              f"[{conv['ci_low']:.3%}, {conv['ci_high']:.3%}], p99 {m['latency']['p99_ms']:.1f} ms")
    lift = rep["comparisons"]["treatment"]["ctr"]
    print(f"CTR lift {lift['lift']:+.1%} [{lift['ci_low']:+.1%}, {lift['ci_high']:+.1%}], p = {lift['p_value']:.2g}; "
          f"SRM p = {rep['srm']['p_value']:.2g} (flag: {rep['srm']['flag']}); {rep['machine']}; wrote {OUT}")


if __name__ == "__main__":
    main()
