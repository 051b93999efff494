"""`huaxiang demo`: the main job on the embedded default, over slices of real data bundled here."""
from __future__ import annotations

from importlib.resources import files
from urllib.parse import quote

from rich.console import Console

from .config import load_config
from .jobs import consoles, run_build, run_ingest, run_score
from .schema import tenant_sql
from .store import connect

# (bundled file, format, namespace) — see data/demo/SOURCE.md for where each slice comes from
DEMO_SOURCES = [
    ("taobao_UserBehavior_head.csv.gz", "taobao", "taobao"),
    ("online_retail_ii_10countries.csv.gz", "online-retail", "retail"),
    ("Beauty_head2000.txt.gz", "s3rec", "beauty"),
    ("All_Beauty_5_head1500.json.gz", "amazon-reviews", "amazon"),
    ("online_shopping_10_cats_2000.csv.gz", "shopping-reviews", "shop"),
    ("CDNOW_master.txt.gz", "cdnow", "cdnow"),
    ("diginetica_sample_train-item-views.csv.gz", "diginetica", "digi"),
]


def demo_path(name: str) -> str:
    return str(files("huaxiang") / "data" / "demo" / name)


def showcase_users(con, n: int) -> list[str]:
    """A few users worth reading: the most active non-regular user of each rich source."""
    picked = []
    for ns in ("taobao", "retail", "beauty", "amazon"):
        row = con.execute(f"""SELECT user_id FROM profiles WHERE {tenant_sql('user_id')} = ? AND segment <> 'regular'
            ORDER BY n_events DESC, user_id LIMIT 1""", [ns]).fetchone()
        if row:
            picked.append(row[0])
    return picked[:n]


def run_demo(db: str, show: int, out: Console | None = None, err: Console | None = None) -> None:
    """Ingests the bundled slices into `db`, builds, scores and trains, then prints `show` profiles with
    their recommendations to `out` (progress bars on `err`)."""
    out, err = consoles(out, err)
    con = connect(db)
    for name, fmt, ns in DEMO_SOURCES:
        run_ingest(con, demo_path(name), fmt, namespace=ns, out=out, err=err)
    cfg = load_config()
    run_build(con, cfg, out, err)
    written, _ = run_score(con, cfg, ["all"], err, db)
    out.print("scores written: " + ", ".join(f"{k} {n:,} users" for k, n in written.items()))
    from .profile.render import profile_record, render_text
    from .recommend.store_model import load_store_recommender, train_store_recommender
    from .recommend.top_k import recommend
    from .text.encoder import ENCODERS
    train_store_recommender(con, db, "itemknn", ENCODERS[cfg.encoder].name)
    rec = load_store_recommender(db)
    showcase = showcase_users(con, max(show, 1))
    for user in showcase[:show]:
        out.print()
        out.print(render_text(profile_record(con, user)), markup=False, highlight=False)
        result = recommend(con, rec, user, 5, True)
        out.print(f"  Recommended (item-KNN, from {result['source']}):", markup=False)
        for item in result["items"]:
            out.print(f"    - {(item['title'] or item['item_id'])[:60]} — {item['reason']}", markup=False, highlight=False)
    out.print()
    out.print(f"Store: {db} — plain SQL, e.g. from Python: duckdb.connect('{db}').sql("
              "'SELECT segment, count(*) FROM profiles GROUP BY 1').show()")
    out.print(f"More:  huaxiang profile taobao:1000251 --db {db}   ·   huaxiang segments --db {db}   ·   "
              f"huaxiang recommend beauty:1 --explain --db {db}")
    out.print(f"Pages: huaxiang keys create --scope read --db {db}; huaxiang serve --db {db}; then open "
              f"http://127.0.0.1:8000/ui/users/{quote(showcase[0], safe='')} and paste the key")
