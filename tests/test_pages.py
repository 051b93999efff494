"""The web pages of `huaxiang serve`, seen in a real browser: Debian's headless Chromium driven by Playwright, over
a live server on the demo store (bundled slices of real data), plus a few Chinese-titled items and a Chinese review
so that the pages are seen with both scripts."""
import csv
import re
import gzip
import shutil
import urllib.parse
from pathlib import Path

import pytest

from conftest import call, cli, png_size, start_server

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"  # screenshots, for a person to look at
CN_ITEMS = [("cn:1", "华为 Mate 60 Pro 手机 12GB+512GB 雅川青", "华为", "手机", 6999.0),
            ("cn:2", "小米 Redmi Note 13 5G 手机 8GB+256GB", "小米", "手机", 1299.0),
            ("cn:3", "李宁 赤兔7 男子跑步鞋 轻量透气", "李宁", "运动鞋", 499.0)]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Debian's chromium is needed for the browser tests: apt-get install chromium (.ci/run does)"
    return path


def chinese_review() -> str:
    """A real Chinese review of a phone from the Chinese online-shopping dataset bundled for the demo."""
    src = Path(__file__).resolve().parents[1] / "src/huaxiang/data/demo/online_shopping_10_cats_2000.csv.gz"
    with gzip.open(src, "rt", encoding="utf-8") as f:
        return next(r["review"] for r in csv.DictReader(f) if r["cat"] == "手机" and len(r["review"]) > 20)


ADMIN = {}  # the site's admin and write keys


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The demo store, a Chinese-speaking shopper added, built twice (so segments have a drift), and served."""
    d = tmp_path_factory.mktemp("pages")
    db = str(d / "demo.duckdb")
    cli("demo", "--db", db, "--show", "0")
    (d / "items.csv").write_text("item_id,title,brand,category,price\n" + "".join(
        f"{i},{t},{b},{c},{p}\n" for i, t, b, c, p in CN_ITEMS), encoding="utf-8")
    events = [("cn:u1", item, kind, f"2017-12-0{day} {10 + day}:15:00")
              for day, (item, kind) in enumerate([("cn:1", "pv"), ("cn:1", "cart"), ("cn:1", "buy"),
                                                  ("cn:2", "pv"), ("cn:3", "pv"), ("cn:3", "fav")], 1)]
    (d / "events.csv").write_text("user_id,item_id,type,ts\n" + "".join(",".join(e) + "\n" for e in events))
    (d / "reviews.csv").write_text("user_id,item_id,ts,rating,text\n" + f'cn:u1,cn:1,2017-12-04 10:00:00,5,'
                                   f'"{chinese_review()}"\n', encoding="utf-8")
    for name in ("items", "events", "reviews"):
        cli("ingest", str(d / f"{name}.csv"), "--format", "csv", "--table", name, "--db", db)
    cli("build", "--db", db)
    key = cli("keys", "create", "--scope", "read", "--db", db).strip().splitlines()[-1]
    ADMIN.update({scope: cli("keys", "create", "--scope", scope, "--db", db).strip().splitlines()[-1]
                  for scope in ("admin", "write")})
    import duckdb
    from huaxiang.demo import showcase_users
    with duckdb.connect(db, read_only=True) as con:
        demo_user = showcase_users(con, 1)[0]
        n_categories = len(con.execute("SELECT top_categories FROM profiles WHERE user_id = ?",
                                       [demo_user]).fetchone()[0])
    with start_server(db) as base:
        yield base, key, demo_user, n_categories


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        yield b
        b.close()


def open_signed_in(browser, base, key, javascript=True):
    """A fresh browser tab signed in through the sign-in form; it records console errors, failed loads and any
    request to anywhere but this server."""
    page = browser.new_page(viewport={"width": 1280, "height": 900}, java_script_enabled=javascript)
    page.problems = []
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    page.on("requestfailed", lambda r: r.failure != "net::ERR_ABORTED" and  # aborted: the test moved on
            page.problems.append(f"failed: {r.url} ({r.failure})"))
    page.on("request", lambda r: r.url.startswith(base + "/") or page.problems.append(f"not this server: {r.url}"))
    page.goto(base + "/ui/signin")
    page.fill("input[name=key]", key)
    page.click("form.signin button")
    page.wait_for_url("**/ui/segments")
    return page


def user_url(base, user_id, **query):
    return f"{base}/ui/users/{urllib.parse.quote(user_id, safe='')}" + (
        "?" + urllib.parse.urlencode(query) if query else "")


def get_html(base, path, key=None, **kw) -> tuple[int, str]:
    status, body = call(base, "GET", path, key, **kw)
    return status, body if isinstance(body, str) else body["detail"]  # (`call` wraps a refusal's body)


def test_profile_page_of_a_demo_user(site, browser):
    base, key, user, n_categories = site
    page = open_signed_in(browser, base, key)
    page.goto(user_url(base, user))
    assert page.title() == f"User {user} · huaxiang"
    assert page.locator("h1 .uid").inner_text() == user
    assert page.locator(".segment .badge").inner_text()
    assert "Identity:" in page.locator(".identity").inner_text()
    # the charts: one bar per top category, a 7 × 24 heatmap whose cells add up to the user's events
    bars = page.locator("section.affinity svg.chart").first
    assert bars.locator("g.bar").count() == n_categories
    assert bars.bounding_box()["width"] > 200
    cells = page.locator("section.habits svg.chart rect.cell")
    assert cells.count() == 7 * 24
    counts = [int(t.rsplit(": ", 1)[1]) for t in page.locator("section.habits svg.chart rect.cell title").all_text_contents()]
    n_events = int(page.locator("section.funnel").inner_text().split(" events on ")[0].rsplit("; ", 1)[1].replace(",", ""))
    assert sum(counts) == n_events
    # recommendations, each with a reason; scores with theirs
    recs = page.locator("section.recs ol.items li")
    assert recs.count() == 10
    assert all(w.startswith(("because", "popular")) for w in page.locator("section.recs .why").all_inner_texts())
    assert page.locator("#score-propensity meter").count() == 1
    assert page.locator("#score-propensity ul.reasons li").count() >= 1
    assert page.locator("#score-clv").inner_text().startswith("Customer lifetime value")
    assert page.locator("section.timeline ol.timeline li").count() == 10
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "profile-page.png"
    page.screenshot(path=str(shot), full_page=True)
    width, height = png_size(shot)
    assert width == 1280 and height > 900
    assert page.problems == []  # no console errors, no failed loads, nothing asked of another server
    page.close()


def test_chinese_titles_and_review_aspects(site, browser):
    base, key, _, _ = site
    page = open_signed_in(browser, base, key)
    page.goto(user_url(base, "cn:u1"))
    timeline = page.locator("section.timeline").inner_text()
    assert CN_ITEMS[0][1] in timeline and CN_ITEMS[2][1] in timeline
    brands = page.locator("section.affinity svg.chart").nth(1)
    assert {t.split(":")[0] for t in brands.locator("g.bar title").all_text_contents()} == {"华为", "小米", "李宁"}
    assert "1 review written" in page.locator("section.reviews").inner_text()
    page.screenshot(path=str(ARTIFACTS / "profile-page-zh.png"), full_page=True)
    assert page.problems == []
    page.close()


def test_search_box_finds_users_and_items(site, browser):
    base, key, user, _ = site
    page = open_signed_in(browser, base, key)
    # the finder suggests ids as you type (page.js), and the plain form lists matches
    part = user[:-2]
    page.fill("#find-user", part)
    options = page.locator("#user-suggestions option")
    options.first.wait_for(state="attached")
    suggested = [o.get_attribute("value") for o in options.all()]
    assert suggested and all(part in s for s in suggested) and user in suggested
    page.press("#find-user", "Enter")
    page.wait_for_url("**/ui/users?q=*")
    assert user in page.locator("main table").inner_text()
    # an exact id goes straight to the profile
    page.fill("#find-user", user)
    page.press("#find-user", "Enter")
    page.wait_for_url(user_url(base, user))
    # items searched for that user: the retail shopper's own words find retail items, re-ranked for them
    page.goto(user_url(base, "retail:14646"))
    page.fill("form.item-search input[name=q]", "lunch bag")
    page.click("form.item-search button")
    page.wait_for_selector("#search-results")
    found = page.locator("#search-results ol.items li .title").all_inner_texts()
    assert len(found) == 10 and all("LUNCH" in t or "BAG" in t for t in found[:3])
    assert "re-ranked for this user's tastes" in page.locator("#search-results p").first.inner_text()
    # and a Chinese query over Chinese titles
    page.goto(user_url(base, "cn:u1", q="手机"))
    found = page.locator("#search-results ol.items li .title").all_inner_texts()
    assert set(found[:2]) == {CN_ITEMS[0][1], CN_ITEMS[1][1]}
    assert page.problems == []
    page.close()


def test_core_text_works_without_javascript(site, browser):
    base, key, user, _ = site
    page = open_signed_in(browser, base, key, javascript=False)
    page.goto(user_url(base, user))
    assert page.locator("section.recs ol.items li").count() == 10
    assert page.locator("section.habits svg.chart").count() == 1  # server-drawn: no script needed
    page.goto(base + "/ui/segments")
    assert page.locator("section.sizes svg.chart g.bar").count() == page.locator("section.sizes tbody tr").count()
    page.close()


def test_segments_page_shows_sizes_features_and_drift(site, browser):
    """A part per tenant, each with its own thresholds, sizes, feature means and drift."""
    base, key, _, _ = site
    page = open_signed_in(browser, base, key)
    status, report = call(base, "GET", "/v1/segments", key)
    assert status == 200 and {"taobao", "retail", "cdnow", "cn"} <= {p["tenant"] for p in report["tenants"]}
    assert page.locator("div.tenant").count() == len(report["tenants"])
    assert page.locator("a[href^='#tenant-']").count() == len(report["tenants"])
    for part in report["tenants"]:
        div = page.locator(f'div.tenant[data-tenant="{part["tenant"]}"]')
        sizes = div.locator("section.sizes tbody tr")
        assert sizes.count() == len(part["segments"]) == 7
        total = sum(int(t.replace(",", "")) for t in div.locator("section.sizes tbody tr td:nth-child(2)")
                    .all_inner_texts())
        assert total == sum(s["size"] for s in part["segments"]) > 0
        assert div.locator("section.features tbody tr").count() == sum(s["size"] > 0 for s in part["segments"])
        # two builds so far (the demo's and the fixture's): one line per segment, two points each
        drift = div.locator("section.drift svg.chart")
        assert drift.locator("polyline").count() == len(part["drift"]["sizes"]) > 0
        assert drift.locator("circle").count() == 2 * len(part["drift"]["sizes"])
    # each tenant's own thresholds: Online Retail's pounds and CDNOW's dollars give different net-spend rules
    rule = {p["tenant"]: next(s["definition"] for s in p["segments"] if s["segment"] == "high-value")
            for p in report["tenants"]}
    assert rule["retail"] != rule["cdnow"] and rule["retail"].startswith("net spend ≥")
    assert rule["retail"] in page.locator('div.tenant[data-tenant="retail"] section.sizes').inner_text()
    # the Chinese shopper joined in build 2, as a new customer of a new tenant
    cn = page.locator('div.tenant[data-tenant="cn"] section.drift table')
    changes = cn.first.inner_text()
    assert "new\t" in changes and "+1" in changes
    assert "(new)" in cn.nth(1).inner_text()
    page.screenshot(path=str(ARTIFACTS / "segments-page.png"), full_page=True)
    assert page.problems == []
    page.close()


def test_pages_refuse_a_request_without_a_valid_key(site, browser):
    base, key, user, _ = site
    for headers in ({}, {"X-API-Key": "hx_not-a-key"}, {"Cookie": "huaxiang_session=hx_not-a-key"}):
        for path in (user_url(base, user)[len(base):], "/ui/segments", "/ui/users?q=taobao", "/ui/users.json?q=ta"):
            status, text = get_html(base, path, headers=headers)
            assert status == 401, (path, headers)
            assert 'action="/ui/signin"' in text and "Recommended for this user" not in text
    # the header key works for pages as for the API; the page cookie does not open the JSON API
    assert call(base, "GET", "/ui/segments", key)[0] == 200
    assert call(base, "GET", f"/v1/users/{user}/profile", headers={"Cookie": f"huaxiang_session={key}"})[0] == 401
    # in the browser: refused before signing in, let in after, refused again after signing out
    page = browser.new_page()
    response = page.goto(user_url(base, user))
    assert response.status == 401 and page.locator("form.signin").count() == 1
    page.fill("input[name=key]", "hx_wrong")
    page.click("form.signin button")
    assert "not valid" in page.locator("main").inner_text()
    page.fill("input[name=key]", key)
    page.click("form.signin button")
    page.wait_for_url(user_url(base, user))  # back to the page first asked for
    page.click("header form button.link")  # sign out
    assert page.goto(user_url(base, user)).status == 401
    page.close()


def test_hostile_input_is_escaped_and_unknown_users_get_404(site):
    base, key, _, _ = site
    evil = "<script>alert(1)</script>"
    status, body = get_html(base, "/ui/users/" + urllib.parse.quote(evil, safe=""), key)
    assert status == 404 and evil not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    status, body = get_html(base, "/ui/users?q=" + urllib.parse.quote(evil), key)
    assert status == 200 and evil not in body and "No user id contains that text" in body
    status, body = get_html(base, "/ui/users/retail:14646?q=" + urllib.parse.quote(evil), key)
    assert status == 200 and evil not in body and "&lt;script&gt;" in body
    # after signing in, only a page of this site is a place to go next
    status, body = call(base, "POST", "/ui/signin", body=b"key=x&next=https://evil.example/",
                        headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": base})
    assert status == 401 and "evil.example" not in body["detail"]
    assert call(base, "GET", "/ui/static/..%2Fapp.py", key)[0] == 404
    assert call(base, "GET", "/ui/static/page.css")[0] == 200  # (holds no data: no key needed)


def test_pseudonymised_ids_are_found_by_the_platforms_id(tmp_path, monkeypatch):
    """With HUAXIANG_ID_KEY set, ids are pseudonymised at ingest; the finder takes the platform's raw id and the
    page says the id shown is a pseudonym."""
    monkeypatch.setenv("HUAXIANG_ID_KEY", "a test key, not a secret")
    db = str(tmp_path / "p.duckdb")
    (tmp_path / "events.csv").write_text("user_id,item_id,type,ts\n" + "".join(
        f"{u},i{n},pv,2024-01-0{n} 10:00:00\n" for u in ("alice", "bob") for n in range(1, 4)))
    cli("ingest", str(tmp_path / "events.csv"), "--format", "csv", "--namespace", "shop", "--db", db)
    cli("build", "--db", db)
    key = cli("keys", "create", "--scope", "read", "--db", db).strip().splitlines()[-1]
    with start_server(db) as base:
        status, body = get_html(base, "/ui/users?q=shop:alice", key)  # follows the redirect to the pseudonym's page
        assert status == 200 and "alice" not in body.split("<main>")[1]
        assert "pseudonymised at ingest" in body and re.search(r'class="uid">shop:u_[0-9a-f]{20}<', body)


def test_experiment_page_draws_each_lift_with_its_interval(site, browser):
    """An experiment started over the API, its users served and clicking: its page lists the variants with their
    intervals and draws each lift as a point on its interval around zero; the list of experiments links to it."""
    from datetime import datetime, timedelta, timezone
    base, key, _, _ = site
    status, made = call(base, "POST", "/v1/experiments", ADMIN["admin"],
                        {"name": "page-ab", "variants": "control=itemknn@1,treatment=itemknn", "tenant": "taobao"})
    assert status == 201, made
    events = []
    for n in range(80):
        user = f"taobao:pg{n}"
        answer = call(base, "GET", f"/v1/users/{user}/recommendations?k=5", key)[1]
        ts = (datetime.now(timezone.utc) + timedelta(seconds=1)).isoformat()
        events += [{"user_id": user, "item_id": item["item_id"], "type": "click", "ts": ts,
                    "request_id": answer["request_id"]} for item in answer["items"][:1 + n % 2]]
    status, done = call(base, "POST", "/v1/events", ADMIN["write"], {"events": events})
    assert status == 200 and done["added"] == len(events) > 0, done
    page = open_signed_in(browser, base, key)
    page.goto(base + "/ui/experiments")
    page.click("a[href='/ui/experiments/page-ab']")
    page.wait_for_url("**/ui/experiments/page-ab")
    rows = page.locator("section.variants tbody tr")
    assert rows.count() == 2 and "control" in rows.first.inner_text() and "[" in rows.first.inner_text()
    lift = page.locator('div.lift[data-variant="treatment"]')
    assert lift.locator("svg.chart g.interval").count() == 1  # the CTR lift (no purchases: the others are empty)
    assert lift.locator("svg.chart text").filter(has_text="no data yet").count() == 2
    assert page.locator('section.srm[data-flag="false"]').count() == 1
    page.screenshot(path=str(ARTIFACTS / "experiment-page.png"), full_page=True)
    assert page.problems == []
    page.close()
    assert call(base, "POST", "/v1/experiments/page-ab/stop", ADMIN["admin"])[0] == 200
