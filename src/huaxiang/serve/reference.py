"""GET /docs: the API reference as one self-contained HTML page rendered from the OpenAPI document — no script,
no style sheet or font from another site (a reference page that loads a CDN's code would run it with access to
this origin). The document itself is at /openapi.json."""
from __future__ import annotations

import json
from html import escape

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
STYLE = ("body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
         "h2{margin-top:2rem;font-size:1.05rem}code,pre{font:13px ui-monospace,monospace;background:#f5f5f5}"
         "pre{padding:.6rem;overflow:auto}table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2rem .5rem;"
         "text-align:left;vertical-align:top}.m{font-weight:700;text-transform:uppercase}")


def _schema_text(schema: dict) -> str:
    return escape(json.dumps(schema, ensure_ascii=False, indent=1)[:4000])


def _operation(path: str, method: str, op: dict) -> str:
    ways = sorted({name for way in op.get("security", []) for name in way})
    who = f"needs a key ({' or '.join(ways)})" if ways else "no key needed"
    parts = [f'<h2 id="{escape(op.get("operationId", path))}"><span class="m">{method}</span> <code>{escape(path)}'
             f"</code></h2><p>{escape(op.get('summary', ''))} — {escape(who)}</p>"]
    params = op.get("parameters", [])
    if params:
        rows = "".join(f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p.get('in', ''))}</td>"
                       f"<td>{'yes' if p.get('required') else ''}</td><td><code>{_schema_text(p.get('schema', {}))}"
                       f"</code></td><td>{escape(p.get('description', '') or p.get('schema', {}).get('description', ''))}"
                       f"</td></tr>" for p in params)
        parts.append(f"<table><tr><th>parameter</th><th>in</th><th>required</th><th>schema</th><th></th></tr>"
                     f"{rows}</table>")
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if body:
        parts.append(f"<p>Body (JSON):</p><pre>{_schema_text(body)}</pre>")
    codes = ", ".join(f"{escape(c)} {escape(r.get('description', ''))}" for c, r in op.get("responses", {}).items())
    parts.append(f"<p>Answers: {codes}</p>")
    return "".join(parts)


def reference_page(app: FastAPI) -> HTMLResponse:
    doc = app.openapi()
    schemes = doc.get("components", {}).get("securitySchemes", {})
    ops = [_operation(path, method, op) for path, methods in doc.get("paths", {}).items()
           for method, op in methods.items()]
    auth = "".join(f"<li><code>{escape(name)}</code>: {escape(s.get('description', ''))} "
                   f"({escape(s.get('type', ''))} {escape(s.get('name', s.get('scheme', '')))})</li>"
                   for name, s in schemes.items())
    html = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(doc['info']['title'])} API"
            f"</title><style>{STYLE}</style></head><body><h1>{escape(doc['info']['title'])} "
            f"{escape(doc['info']['version'])} — HTTP API</h1><p>{escape(doc['info'].get('description', ''))} "
            f"The OpenAPI document: <a href='/openapi.json'>/openapi.json</a>.</p><p>Keys:</p><ul>{auth}</ul>"
            + "".join(ops) + "</body></html>")
    return HTMLResponse(html, headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"})
