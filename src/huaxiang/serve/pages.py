"""The HTML of the web pages of `huaxiang serve` (their routes, under /ui, are in `ui.py`): a profile page per user,
a segments overview, a user finder, item search personalised for the user on their page, and the sign-in form.

Rendered on the server: the core text needs no JavaScript; the charts are inline SVG (`charts.py`); one small
script (`static/page.js`) adds as-you-type suggestions to the user finder. Nothing is loaded from anywhere but
this server, and a strict Content-Security-Policy says so to the browser.
"""
from __future__ import annotations

import re
from html import escape
from urllib.parse import quote

from fastapi.responses import HTMLResponse

from ..experiments.stats import interval_text
from ..profile.render import WEEKDAYS, habit_zone
from ..profile.segment_report import latest_changes, tenant_label
from . import charts

HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
                                      "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "Cache-Control": "no-store"}
PSEUDONYM = re.compile(r"(?:.*:)?u_[0-9a-f]{20}")


# ---------------------------------------------------------------------------------------------------- the frame

def page(title: str, body: str, find: str = "", signed_in: bool = True, status: int = 200) -> HTMLResponse:
    nav = (f'<form class="find" action="/ui/users" method="get" role="search">'
           f'<input id="find-user" name="q" value="{escape(find)}" placeholder="find a user by id" '
           f'list="user-suggestions" autocomplete="off" aria-label="find a user by id" maxlength="256">'
           f'<datalist id="user-suggestions"></datalist><button>Find user</button></form>'
           f'<a href="/ui/segments">Segments</a>'
           f'<a href="/ui/experiments">Experiments</a>'
           f'<form action="/ui/signout" method="post"><button class="link">Sign out</button></form>'
           ) if signed_in else ""
    html = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{escape(title)} · huaxiang</title><link rel="stylesheet" href="/ui/static/page.css">'
            f'<link rel="icon" href="/ui/static/icon.svg">'
            f'<script src="/ui/static/page.js" defer></script></head><body>'
            f'<header><a class="brand" href="/ui">huaxiang 画像</a>{nav}</header><main>{body}</main></body></html>')
    return HTMLResponse(html, status, headers=HEADERS)


def section(title: str, body: str, cls: str = "") -> str:
    return f'<section class="{cls}"><h2>{escape(title)}</h2>{body}</section>'


def note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def table(head: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    """`rows` hold HTML already escaped by the caller."""
    th = "".join(f'<th{" class=num" if i in numeric else ""}>{escape(h)}</th>' for i, h in enumerate(head))
    tr = "".join("<tr>" + "".join(f'<td{" class=num" if i in numeric else ""}>{c}</td>' for i, c in enumerate(r))
                 + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{tr}</tbody></table>"


def user_link(user_id: str) -> str:
    return f'<a href="/ui/users/{quote(user_id, safe="")}">{escape(user_id)}</a>'


def _num(v, fmt: str = "{:,.2f}") -> str:
    return "–" if v is None else escape(fmt.format(v))


def _tags(values) -> str:
    return "".join(f'<li>{escape(str(v))}</li>' for v in values or []) or "<li class=none>–</li>"


# ---------------------------------------------------------------------------------------------------- profile page

def identity(user_id: str) -> str:
    if PSEUDONYM.fullmatch(user_id):
        return "pseudonymised at ingest (keyed HMAC of the platform's id; the raw id is not stored)"
    return "the platform's own id (not pseudonymised: set HUAXIANG_ID_KEY before ingesting to pseudonymise ids)"


def scores_html(sc: dict) -> str:
    if not sc:
        return note("No scores yet: run `huaxiang score all` on this store.")
    parts = []
    for kind, label in (("churn", "Churn risk"), ("propensity", "Buys")):
        if kind in sc:
            s = sc[kind]
            why = "".join(f'<li class="{escape(r.get("direction", ""))}">{escape(r["reason"])} '
                          f'<span class="dir">({escape(r.get("direction", ""))})</span></li>'
                          for r in s.get("reasons", []))
            days = s.get("horizon_days")
            parts.append(f'<div class="score" id="score-{kind}"><h3>{label} within {days} day{"s" * (days != 1)}: '
                         f'<b>{s["score"]:.0%}</b></h3><meter min="0" max="1" value="{s["score"]:.4f}"></meter>'
                         f'<ul class="reasons">{why}</ul></div>')
    if "clv" in sc:
        c = sc["clv"]
        worth = (f"{c['score']:,.2f} over {c['months']} months" if c.get("unit") == "money"
                 else "no prices known: ranked by purchases")
        parts.append(f'<div class="score" id="score-clv"><h3>Customer lifetime value: <b>{escape(worth)}</b> '
                     f'({escape(c["value_tier"])} tier)</h3><p>{escape(c["text"])}</p></div>')
    if "risk" in sc:
        r = sc["risk"]
        verdict = "flagged for review" if r.get("flagged") else "not flagged"
        reasons = "".join(f"<li>{escape(x)}</li>" for x in r.get("reasons", [])) if r.get("flagged") else ""
        parts.append(f'<div class="score{" flagged" if r.get("flagged") else ""}" id="score-risk">'
                     f'<h3>Fake-order / click-farming risk: <b>{verdict}</b></h3><ul class="reasons">{reasons}</ul></div>')
    missing = [k for k in ("churn", "propensity", "clv", "risk") if k not in sc]
    if missing:  # a kind is skipped for a tenant whose data cannot support it (say, too short a span for churn)
        parts.append(note(f"Not scored for this user: {', '.join(missing)}."))
    return "".join(parts)


def reviews_html(r: dict) -> str:
    if not r.get("n_written_reviews"):
        return note("No written reviews.")
    mood = ""
    if r.get("mean_sentiment") is not None:
        mood = (f'<p>Sentiment: {r["n_positive_reviews"]} positive, {r["n_negative_reviews"]} negative; mean '
                f'<meter min="0" max="1" value="{r["mean_sentiment"]:.3f}"></meter> {r["mean_sentiment"]:.2f}</p>')

    def counted(key):
        return "".join(f'<li>{escape(x["name"])} <span class="n">×{x["n"]}</span></li>'
                       for x in r.get(key) or []) or "<li class=none>–</li>"
    n = r["n_written_reviews"]
    return (f'<p>{n} review{"s" * (n != 1)} written, average rating {_num(r.get("avg_rating"), "{:.1f}")}</p>'
            f'{mood}<div class="cols"><div><h3>Praises</h3><ul class="tags good">{counted("aspects_praised")}</ul>'
            f'</div><div><h3>Complains about</h3><ul class="tags bad">{counted("aspects_criticised")}</ul></div>'
            f'<div><h3>Brands named</h3><ul class="tags">{counted("brands_mentioned")}</ul></div>'
            f'<div><h3>Colours named</h3><ul class="tags">{counted("colours_mentioned")}</ul></div></div>')


def affinity_html(r: dict) -> str:
    charts_ = [charts.hbars([(x["name"], x["share"]) for x in r.get(key) or []], f"{what} affinity (share of "
                            "weighted, time-decayed interactions)")
               for key, what in (("top_categories", "Category"), ("top_brands", "Brand"))]
    cells = [f'<figure><figcaption>{what}</figcaption>{c or note("none known")}</figure>'
             for what, c in zip(("Categories", "Brands"), charts_)]
    return f'<div class="cols">{"".join(cells)}</div>'


def habits_html(r: dict, grid: list[list[int]]) -> str:
    tz = habit_zone(r)
    day = WEEKDAYS[r["peak_weekday"]] if r.get("peak_weekday") is not None else "–"
    text = (f'<p>{escape(r.get("daypart") or "–")} shopper; peak hour {r.get("peak_hour", "–")}:00 {tz}, busiest '
            f'on {day}; night {_num(r.get("night_share"), "{:.0%}")}, weekend {_num(r.get("weekend_share"), "{:.0%}")}'
            '</p>')
    if not any(map(any, grid)):
        return text
    return text + charts.heatmap(grid, WEEKDAYS, [f"{h:02d}" for h in range(24)],
                                 f"Interactions by weekday and hour ({tz})")


def timeline_html(events: list[dict]) -> str:
    if not events:
        return note("No events.")
    rows = []
    for e in events:
        what = e.get("title") or (f'searched “{e["query"]}”' if e.get("query") else e.get("item_id", ""))
        price = f' <span class="n">{e["price"]:,.2f}</span>' if e.get("price") is not None else ""
        rows.append(f'<li><time>{escape(e["ts"][:16].replace("T", " "))}</time> '
                    f'<span class="ev {escape(e["type"])}">{escape(e["type"])}</span> {escape(str(what))}{price}</li>')
    return f'<ol class="timeline">{"".join(rows)}</ol>'


def items_html(items: list[dict], why_key: str | None, request_id: str | None = None) -> str:
    """The items of an answer, its `request_id` (what clicks on them are attributed to) on the list."""
    out = []
    for it in items:
        why = f'<span class="why">{escape(it[why_key])}</span>' if why_key and it.get(why_key) else ""
        name = (f'<span class="title">{escape(it["title"])}</span> <span class="id">{escape(it["item_id"])}</span>'
                if it.get("title") else f'<span class="title">{escape(it["item_id"])}</span>')
        out.append(f'<li>{name}{why}</li>')
    rid = f' data-request-id="{escape(request_id)}"' if request_id else ""
    return f'<ol class="items"{rid}>{"".join(out)}</ol>'


def search_html(user_id: str, q: str, result: dict | None) -> str:
    form = (f'<form class="item-search" action="/ui/users/{quote(user_id, safe="")}" method="get" role="search">'
            f'<input name="q" value="{escape(q)}" placeholder="search items for this user" maxlength="500" '
            f'aria-label="search items for this user"><button>Search items</button></form>')
    if result is None:
        return form
    how = ("re-ranked for this user's tastes" if result["personalised"] else
           "not personalised (no history for this user in the recommender)")
    found = (items_html(result["items"], None, result.get("request_id")) if result["items"]
             else note("No item title matches."))
    return form + f'<div id="search-results"><p>{len(result["items"])} items for “{escape(q)}”, {how}</p>{found}</div>'


def profile_html(r: dict, grid: list[list[int]], recs: dict | None, rec_note: str, q: str,
                 found: dict | None) -> str:
    clv = (r.get("scores") or {}).get("clv")
    tier = f' · value tier <b>{escape(clv["value_tier"])}</b>' if clv else ""
    cluster = f" · cluster {r['cluster']}" if r.get("cluster") is not None else ""
    head = (f'<h1>User <span class="uid">{escape(r["user_id"])}</span></h1>'
            f'<p class="identity">Identity: {escape(identity(r["user_id"]))}</p>'
            f'<p class="segment">Segment <b class="badge">{escape(r.get("segment") or "–")}</b> '
            f'(matches: {escape(", ".join(r.get("segments") or []) or "–")}){tier}{cluster}</p>'
            f'<p class="summary">{escape(r.get("summary") or "")}</p>')
    funnel = (f'<p>view {r["n_view"]:,} → cart {r["n_cart"]:,} → favourite {r["n_fav"]:,} → buy {r["n_buy"]:,}; '
              f'{r["n_events"]:,} events on {r["active_days"]:,} days in {r["n_sessions"]:,} sessions</p>'
              f'<p>Orders {r["frequency"]:,}, spend {_num(r.get("monetary"))} (average order '
              f'{_num(r.get("avg_order_value"))}), last purchase {_num(r.get("recency_days"), "{:.1f}")} days before '
              f'the data\'s end; returns {r.get("n_returns", 0)}; prices: {escape(r.get("price_band") or "–")} band '
              f'(median {_num(r.get("median_price"))})</p>')
    tags = (f'<h3>Interest tags</h3><ul class="tags">{_tags(r.get("tags"))}</ul>'
            + (f'<h3>Semantic interests</h3><ul class="tags">{_tags(r.get("semantic_tags"))}</ul>'
               if r.get("semantic_tags") else "")
            + f'<h3>Title keywords</h3><ul class="tags">{_tags(r.get("keywords"))}</ul>')
    recs_body = (f'<p>From {escape(recs["source"])}.</p>' + items_html(recs["items"], "reason", recs.get("request_id"))
                 if recs and recs["items"] else note(rec_note or "No recommendations."))
    return "".join([
        f'<div class="head">{head}</div>',
        section("Search items for this user", search_html(r["user_id"], q, found), "search"),
        '<div class="grid">',
        section("Scores", scores_html(r.get("scores") or {}), "scores"),
        section("Recommended for this user", recs_body, "recs"),
        section("Affinity", affinity_html(r), "affinity"),
        section("Time habits", habits_html(r, grid), "habits"),
        section("Interests", tags, "interests"),
        section("Reviews", reviews_html(r), "reviews"),
        section("Funnel and spend", funnel, "funnel"),
        section("Recent behaviour", timeline_html(r.get("recent_events") or []), "timeline"),
        "</div>",
    ])


# ---------------------------------------------------------------------------------------------------- segments page

def segments_html(rep: dict) -> str:
    """The segments report (`segment_report`): a part per tenant, each with its own thresholds and sizes."""
    parts = rep["tenants"]
    if not parts:
        return "<h1>Segments</h1>" + note("No segments to show: no tenant you can see has been built yet.")
    toc = ("<p>Tenants: " + " · ".join(f'<a href="#tenant-{i}">{escape(tenant_label(p["tenant"]))}</a>'
                                        for i, p in enumerate(parts)) + "</p>") if len(parts) > 1 else ""
    return "".join([
        "<h1>Segments</h1>",
        "<p>Every number here is per tenant: a tenant's thresholds, sizes and clusters come from its own users "
        "only.</p>", toc,
        *(tenant_segments_html(p, f"tenant-{i}") for i, p in enumerate(parts)),
    ])


def tenant_segments_html(rep: dict, anchor: str) -> str:
    """One tenant's part of the segments page (an entry of the report's `tenants`)."""
    segs = rep["segments"]
    sizes = charts.hbars([(s["segment"], s["size"]) for s in segs], "Users per segment", "{:,.0f}")
    rules = table(["segment", "users", "share", "definition"],
                  [[escape(s["segment"]), f'{s["size"]:,}', f'{s["share"]:.1%}', escape(s.get("definition", ""))]
                   for s in segs], {1, 2})
    feats = rep.get("features") or []
    cols = [c for c in (feats[0] if feats else {}) if c not in ("segment", "users")]
    means = table(["segment", "users", *cols], [[escape(f["segment"]), f'{f["users"]:,}',
                                                 *[_num(f[c], "{:,.1f}") for c in cols]] for f in feats],
                  set(range(1, len(cols) + 2)))
    tiers = rep.get("value_tiers") or []
    tiers_html = table(["value tier", "segment", "users", "mean CLV"],
                       [[escape(t["value_tier"]), escape(t["segment"]), f'{t["users"]:,}', _num(t["mean_clv"])]
                        for t in tiers], {2, 3}) if tiers else note("No CLV scores: run `huaxiang score clv`.")
    clusters = rep.get("clusters") or []
    clusters_html = table([str(c) for c in clusters[0]], [[_num(v, "{:,.1f}") if isinstance(v, float) else
                                                           escape(str(v)) for v in c.values()] for c in clusters],
                          set(range(len(clusters[0])))) if clusters else note("No k-means clusters (build with "
                                                                              "`kmeans` set in the config).")
    return "".join([
        f'<div class="tenant" id="{anchor}" data-tenant="{escape(rep["tenant"])}">',
        f'<h2>Tenant: {escape(tenant_label(rep["tenant"]))}</h2>',
        section("Sizes and definitions", sizes + rules
                + "<p>A user's segment is the first rule they match, in this order.</p>", "sizes"),
        section("Defining features (means per segment)", means, "features"),
        section("Drift across builds", drift_html(rep.get("drift") or {}), "drift"),
        section("Value tiers × segments", tiers_html, "tiers"),
        section("k-means clusters", clusters_html, "clusters"),
        "</div>",
    ])


def drift_html(d: dict) -> str:
    builds = d.get("builds") or []
    if not builds:
        return note("No builds recorded yet: each `huaxiang build` adds a point.")
    labels = [b[:16].replace("T", " ") for b in builds]
    chart = charts.lines(labels, d["sizes"], "Segment sizes per build") if len(builds) > 1 else note(
        f"One build recorded so far ({labels[0]}): the sizes over time show from the next build on.")
    changes = latest_changes(d)
    change_html = table(["segment", "previous build", "latest build", "change"],
                        [[escape(seg), f"{a:,}", f"{b:,}", f"{b - a:+,}"] for seg, a, b in changes],
                        {1, 2, 3}) if changes else ""
    moves = d.get("moves") or []
    moved = [m for m in moves if m["from"] != m["to"]]
    stayed = sum(m["users"] for m in moves if m["from"] == m["to"])
    rows = [[escape(m["from"] or "(new)"), escape(m["to"] or "(gone)"), f'{m["users"]:,}'] for m in moved[:30]]
    moves_html = (f"<h3>Moves in the latest build</h3><p>{stayed:,} users kept their segment.</p>"
                  + (table(["from", "to", "users"], rows, {2}) if rows else "")) if moves else ""
    return chart + change_html + moves_html


# ---------------------------------------------------------------------------------------------------- experiments

METRIC_NAMES = {"ctr": "click-through rate", "conversion": "conversion (buyers / exposed users)",
                "revenue_per_user": "revenue per exposed user"}


def experiments_html(found: list[dict]) -> str:
    """The list of experiments (`Experiment.listing()`), each linked to its page."""
    rows = [[f'<a href="/ui/experiments/{quote(e["name"], safe="")}">{escape(e["name"])}</a>', escape(e["status"]),
             escape("every tenant" if e["tenant"] is None else tenant_label(e["tenant"])),
             escape(", ".join(f'{v["name"]}={v["model"]} ({v["share"]:.0%})' for v in e["variants"])),
             escape(e["created_at"][:16].replace("T", " "))] for e in found]
    return "<h1>Experiments</h1>" + (table(["experiment", "status", "users", "variants", "started"], rows) if rows
                                     else note("No experiments yet: `huaxiang experiment create` starts one."))


def experiment_html(rep: dict) -> str:
    """An experiment's report (`catalog.report`): its variants' numbers with 95% intervals, each treatment's lift
    over the control drawn with its interval, the sample-ratio check and the latency guardrail."""
    e, control = rep["experiment"], rep["control"]
    head = (f'<h1>Experiment {escape(e["name"])}</h1><p>{escape(e["status"])} · '
            f'{escape("every tenant" if e["tenant"] is None else "tenant " + tenant_label(e["tenant"]))} · started '
            f'{escape(e["created_at"][:16].replace("T", " "))}'
            + (f' · stopped {escape(e["stopped_at"][:16].replace("T", " "))}' if e["stopped_at"] else "")
            + f' · control: {escape(control)} · clicks, carts and purchases count for the latest exposure of their '
              f'item to their user within {rep["window_hours"]:g} h</p>')
    variants = rep["variants"]
    rows = [[escape(v), escape(m.get("model", "")), f'{m["split"]:.0%}', f'{m["exposed_users"]:,}',
             f'{m["impressions"]:,}', escape(interval_text(m["ctr"], ".2%")), escape(interval_text(m["conversion"], ".2%")),
             escape(interval_text(m["revenue_per_user"], ",.2f")),
             "–" if m["latency"]["p99_ms"] is None else f'{m["latency"]["p99_ms"]:.1f} ms']
            for v, m in variants.items()]
    numbers = table(["variant", "model", "split", "exposed users", "impressions", "CTR", "conversion",
                     "revenue / user", "p99 latency"], rows, {2, 3, 4, 5, 6, 7, 8})
    lifts = []
    for v, comp in rep["comparisons"].items():
        chart = charts.intervals([(METRIC_NAMES[k], comp[k]["lift"], comp[k]["ci_low"], comp[k]["ci_high"])
                                  for k in METRIC_NAMES], f"Lift of {v} over {control} (95% intervals)")
        ps = table(["metric", "lift", "95% interval", "p-value"],
                   [[escape(METRIC_NAMES[k]), "–" if comp[k]["lift"] is None else f'{comp[k]["lift"]:+.1%}',
                     "–" if comp[k]["ci_low"] is None else f'{comp[k]["ci_low"]:+.1%} to {comp[k]["ci_high"]:+.1%}',
                     "–" if comp[k]["p_value"] is None else f'{comp[k]["p_value"]:.3g}'] for k in METRIC_NAMES],
                   {1, 2, 3})
        ratio = comp.get("p99_ratio")
        guard = note(f"p99 latency of {v}: {ratio:.2f}× the control's." if ratio else "No latency yet.")
        lifts.append(f'<div class="lift" data-variant="{escape(v)}"><h3>{escape(v)} vs {escape(control)}</h3>'
                     f'{chart}{ps}{guard}</div>')
    srm = rep["srm"]
    users = ", ".join(f"{v} {n:,}" for v, n in srm["observed"].items())
    srm_text = ("No exposed users yet." if srm["p_value"] is None else
                f'Sample ratio mismatch: users per variant ({users}) do not fit the split '
                f'(chi-square p = {srm["p_value"]:.2g} < {srm["threshold"]:g}): the assignment or the logging is '
                f'broken — do not trust the lifts.' if srm["flag"] else
                f'Users per variant ({users}) fit the split (chi-square p = {srm["p_value"]:.2g}).')
    return "".join([head, section("Variants", numbers, "variants"),
                    section("Lifts over the control", "".join(lifts), "lifts"),
                    f'<section class="srm" data-flag="{str(srm["flag"]).lower()}"><h2>Sample ratio check</h2>'
                    f'<p>{escape(srm_text)}</p></section>'])


# ---------------------------------------------------------------------------------------------------- sign-in

def signin_html(next_url: str, message: str) -> str:
    return (f'<h1>Sign in</h1>{note(message) if message else ""}'
            f'<p>These pages take the same API keys as the HTTP API (read scope or above; '
            f'<code>huaxiang keys create --scope read</code> makes one).</p>'
            f'<form class="signin" action="/ui/signin" method="post">'
            f'<input type="hidden" name="next" value="{escape(next_url)}">'
            f'<label>API key <input type="password" name="key" autocomplete="off" required maxlength="200"></label>'
            f'<button>Sign in</button></form>')

