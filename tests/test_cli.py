"""The command line as a user meets it: --help everywhere, one-line errors, the demo end to end."""
import json
import os
import subprocess
import sys

import pytest

COMMANDS = ["ingest", "build", "profile", "segments", "embed", "sentiment", "graph", "demo", "score", "serve",
            "consume", "forget", "retrain"]
GROUPS = [("train", "classifier", "--text-col"), ("eval", "classifier", "--text-col"), ("eval", "seqrec", "--protocol"),
          ("keys", "create", "--scope"), ("keys", "list", "--json"), ("keys", "revoke", "key_id"),
          ("models", "list", "--json"), ("models", "promote", "--kind"), ("models", "rollback", "--kind")]


def run(*args, cwd=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "huaxiang.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "COLUMNS": "200"})
    if check and proc.returncode != 0:
        raise AssertionError(f"huaxiang {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    out = run(command, "--help").stdout
    assert "Usage" in out and "--db" in out


def test_top_level_help_lists_commands():
    out = run("--help").stdout
    assert all(c in out for c in COMMANDS)


def test_errors_are_one_line_without_traceback(tmp_path):
    proc = run("ingest", str(tmp_path / "missing.csv"), "--format", "taobao", "--db", str(tmp_path / "s.duckdb"),
               check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: file not found: {tmp_path / 'missing.csv'}"
    proc = run("ingest", "x", "--format", "nope", "--db", str(tmp_path / "s.duckdb"), check=False)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1 and "unknown format" in proc.stderr
    proc = run("profile", "nobody", "--db", str(tmp_path / "absent.duckdb"), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "store not found" in proc.stderr


def test_debug_shows_the_traceback(tmp_path):
    proc = run("--debug", "ingest", str(tmp_path / "missing.csv"), "--format", "taobao",
               "--db", str(tmp_path / "s.duckdb"), check=False)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_generic_csv_with_mapping(tmp_path):
    (tmp_path / "export.csv").write_text("customer,sku,time,action\nc1,s1,2024-03-01T10:00:00,purchase\n"
                                         "c1,s2,not-a-time,view\n")
    db = str(tmp_path / "s.duckdb")
    out = run("ingest", str(tmp_path / "export.csv"), "--format", "csv", "--db", db,
              "--map", "user_id=customer,item_id=sku,ts=time,type=action").stdout
    assert "added 1 events" in out and "1 quarantined" in out and "events.ts" in out
    run("build", "--db", db)
    record = json.loads(run("profile", "c1", "--db", db, "--json").stdout)
    assert record["user_id"] == "c1" and record["n_buy"] == 1


def test_demo_end_to_end(tmp_path):
    db = str(tmp_path / "demo.duckdb")
    out = run("demo", "--db", db, cwd=tmp_path).stdout
    assert "built" in out and "profiles" in out
    assert "User taobao:" in out and "User retail:" in out  # readable profiles are printed
    assert "funnel" in out and "categories" in out
    assert "Recommended (item-KNN" in out and "because you bought" in out  # and recommendations with reasons
    import duckdb
    con = duckdb.connect(db, read_only=True)
    assert con.execute("SELECT count(*) FROM profiles WHERE starts_with(user_id, 'taobao:')").fetchone()[0] == 814
    assert con.execute("SELECT count(*), count(DISTINCT user_id) FROM profiles").fetchone()[0] > 20_000
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"events", "items", "reviews", "orders", "quarantine", "features", "profiles"} <= tables
    con.close()
    segs = json.loads(run("segments", "--db", db, "--json").stdout)
    assert {s["segment"] for p in segs["tenants"] for s in p["segments"] if s["size"]} >= {
        "new", "high-value", "high-frequency", "high-potential", "at-risk", "dormant"}
    counts = "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM orders), (SELECT count(*) FROM reviews)"
    con = duckdb.connect(db, read_only=True)
    before = con.execute(counts).fetchone()
    con.close()
    again = run("demo", "--db", db, cwd=tmp_path).stdout  # re-running adds no duplicates
    assert "added 0 events; 84,287 already in the store" in again
    con = duckdb.connect(db, read_only=True)
    assert con.execute(counts).fetchone() == before


def test_config_file_changes_thresholds_and_bad_keys_fail(tmp_path):
    (tmp_path / "e.csv").write_text("user_id,item_id,type,ts\nu,i,view,2024-01-01\nu,i,buy,2024-01-20\n"
                                    "v,i,view,2024-01-20\n")
    db = str(tmp_path / "s.duckdb")
    run("ingest", str(tmp_path / "e.csv"), "--format", "csv", "--db", db)
    (tmp_path / "c.toml").write_text("new_days = 30\n")
    run("build", "--db", db, "--config", str(tmp_path / "c.toml"))
    segs = {s["segment"]: s for s in json.loads(run("segments", "--db", db, "--json").stdout)["tenants"][0]["segments"]}
    assert segs["new"]["size"] == 2 and "≤ 30 days" in segs["new"]["definition"]
    (tmp_path / "bad.toml").write_text("new_dayz = 30\n")
    proc = run("build", "--db", db, "--config", str(tmp_path / "bad.toml"), check=False)
    assert proc.returncode == 1 and "unknown keys ['new_dayz']" in proc.stderr


@pytest.mark.parametrize("group,command,option", GROUPS)
def test_sub_commands_have_help(group, command, option):
    out = run(group, command, "--help").stdout
    assert "Usage" in out and option in out and ("--data" in out or "--db" in out)


def test_keys_are_listed_and_revoked_by_id(tmp_path):
    db = str(tmp_path / "k.duckdb")
    made = run("keys", "create", "--scope", "read", "--tenant", "shop", "--expires-in", "90d", "--db", db)
    key, said = made.stdout.strip().splitlines()[-1], made.stdout
    listed = json.loads(run("keys", "list", "--json", "--db", db).stdout)
    assert len(listed) == 1 and listed[0]["tenants"] == ["shop"] and listed[0]["expires_at"]
    assert listed[0]["id"] in said and key not in json.dumps(listed) and listed[0]["revoked"] is False
    run("keys", "revoke", listed[0]["id"], "--db", db)
    assert json.loads(run("keys", "list", "--json", "--db", db).stdout)[0]["revoked"] is True
    proc = run("keys", "revoke", "k_nope", "--db", db, check=False)
    assert proc.returncode == 1 and "unknown key id 'k_nope'" in proc.stderr
    proc = run("keys", "create", "--scope", "read", "--tenant", "a:b", "--db", db, check=False)
    assert proc.returncode == 1 and "without ':'" in proc.stderr
