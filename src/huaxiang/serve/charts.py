"""Charts as inline SVG, drawn on the server: they show without JavaScript, load nothing, and carry their
numbers in `<title>` tooltips and an `aria-label`. Colours are fill attributes (no inline styles), so a strict
Content-Security-Policy holds."""
from __future__ import annotations

from html import escape

BAR, TEXT, GRID = "#2f6db5", "#333", "#ddd"
SERIES = ["#2f6db5", "#d9822b", "#3a9b5c", "#c23b3b", "#7d5ba6", "#8c6d3f", "#d65fa0", "#6b7b8c", "#b5a12f"]


def _svg(width: int, height: int, label: str, body: list[str]) -> str:
    return (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" role="img" aria-label="{escape(label)}">'
            f'<title>{escape(label)}</title>{"".join(body)}</svg>')


def _text(x: float, y: float, text: str, anchor: str = "start", size: int = 12, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{TEXT}"{c}>'
            f'{escape(text)}</text>')


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def hbars(rows: list[tuple[str, float]], label: str, fmt: str = "{:.0%}", width: int = 460) -> str:
    """Horizontal bars, one per (name, value), longest first as given; the value printed at each bar's end."""
    if not rows:
        return ""
    top = max(v for _, v in rows) or 1
    left, right, step = 150, 60, 24
    span = width - left - right
    body = []
    for i, (name, value) in enumerate(rows):
        y = 6 + i * step
        w = max(1.0, span * value / top)
        shown = fmt.format(value)
        body.append(f'<g class="bar"><title>{escape(f"{name}: {shown}")}</title>'
                    f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{step - 8}" fill="{BAR}" rx="2"/></g>')
        body.append(_text(left - 6, y + step / 2, _clip(str(name), 20), "end"))
        body.append(_text(left + w + 4, y + step / 2, shown))
    return _svg(width, 6 + len(rows) * step, label, body)


def heatmap(grid: list[list[float]], rows: list[str], cols: list[str], label: str, cell: int = 20) -> str:
    """A grid of counts (rows × cols), darker for more; every cell's count in its tooltip."""
    top = max((v for r in grid for v in r), default=0) or 1
    left, head = 36, 18
    body = [_text(left + j * cell + cell / 2, 12, c, "middle", 9) for j, c in enumerate(cols) if j % 3 == 0]
    for i, (name, values) in enumerate(zip(rows, grid)):
        y = head + i * cell
        body.append(_text(left - 4, y + cell * 0.7, name, "end", 10))
        for j, v in enumerate(values):
            shade = 0.06 + 0.94 * v / top if v else 0.0
            fill = f"rgba(47,109,181,{shade:.2f})" if v else "#f2f2f2"
            body.append(f'<rect class="cell" x="{left + j * cell}" y="{y}" width="{cell - 1}" height="{cell - 1}" '
                        f'fill="{fill}"><title>{escape(f"{name} {cols[j]}: {v:g}")}</title></rect>')
    return _svg(left + len(cols) * cell + 4, head + len(rows) * cell + 4, label, body)


def lines(x: list[str], series: dict[str, list[float]], label: str, width: int = 560, height: int = 220) -> str:
    """One line per series over the points `x` (at least one), with a legend beneath."""
    top = max((v for vs in series.values() for v in vs), default=0) or 1
    left, right, pad, legend = 44, 48, 12, 18 * ((len(series) + 3) // 4)
    plot_h = height - pad - 24 - legend
    xs = [left + (width - left - right) * (i / max(1, len(x) - 1) if len(x) > 1 else 0.5) for i in range(len(x))]

    def y_of(v: float) -> float:
        return pad + plot_h * (1 - v / top)

    body = []
    for frac in (0, 0.5, 1):
        y = y_of(top * frac)
        body.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        body.append(_text(left - 4, y + 4, f"{top * frac:,.0f}", "end", 10))
    for i, xi in enumerate(xs):
        if len(x) <= 8 or i in (0, len(x) - 1):
            body.append(_text(xi, pad + plot_h + 14, x[i], "middle", 10))
    for k, (name, values) in enumerate(series.items()):
        colour = SERIES[k % len(SERIES)]
        pts = " ".join(f"{xi:.1f},{y_of(v):.1f}" for xi, v in zip(xs, values))
        body.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{pts}"/>')
        for xi, v, xl in zip(xs, values, x):
            body.append(f'<circle cx="{xi:.1f}" cy="{y_of(v):.1f}" r="3" fill="{colour}">'
                        f'<title>{escape(f"{name} at {xl}: {v:,.0f}")}</title></circle>')
        lx, ly = left + (k % 4) * ((width - left) / 4), height - legend + 12 + 18 * (k // 4)
        body.append(f'<rect x="{lx:.1f}" y="{ly - 9:.1f}" width="10" height="10" fill="{colour}"/>')
        body.append(_text(lx + 14, ly, _clip(name, 18), size=11))
    return _svg(width, height, label, body)


def intervals(rows: list[tuple[str, float | None, float | None, float | None]], label: str, fmt: str = "{:+.1%}",
              width: int = 560) -> str:
    """A point with its interval per row (name, value, low, high) on one horizontal axis with its zero marked: a
    lift and its 95% interval. A row without a value is named and left empty; an open end is drawn to the edge."""
    if not rows:
        return ""
    ends = [v for _, *vals in rows for v in vals if v is not None] + [0.0]
    lo, hi = min(ends), max(ends)
    pad = (hi - lo) * 0.08 or 0.05
    lo, hi = lo - pad, hi + pad
    left, right, step, top = 170, 70, 30, 22
    span = width - left - right

    def x_of(v: float) -> float:
        return left + span * (v - lo) / (hi - lo)

    zero = x_of(0.0)
    body = [f'<line x1="{zero:.1f}" x2="{zero:.1f}" y1="{top - 8}" y2="{top + len(rows) * step}" stroke="{GRID}" '
            f'stroke-width="2"/>', _text(zero, top - 10, "0", "middle", 10),
            _text(left, top + len(rows) * step + 14, fmt.format(lo), "start", 10),
            _text(width - right, top + len(rows) * step + 14, fmt.format(hi), "end", 10)]
    for i, (name, value, low, high) in enumerate(rows):
        y = top + i * step + step / 2
        body.append(_text(left - 8, y + 4, _clip(str(name), 24), "end"))
        if value is None:
            body.append(_text(left, y + 4, "no data yet", size=11))
            continue
        a, b = x_of(low if low is not None else lo), x_of(high if high is not None else hi)
        shown = fmt.format(value) + (f" [{fmt.format(low)}, {fmt.format(high)}]" if low is not None and high is not None
                                     else " (no interval yet)")
        colour = SERIES[3] if high is not None and high < 0 else SERIES[2] if low is not None and low > 0 else BAR
        body.append(f'<g class="interval"><title>{escape(f"{name}: {shown}")}</title>'
                    f'<line x1="{a:.1f}" x2="{b:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{colour}" stroke-width="3"/>'
                    f'<circle cx="{x_of(value):.1f}" cy="{y:.1f}" r="5" fill="{colour}"/></g>')
        body.append(_text(width - right + 6, y + 4, fmt.format(value), size=11))
    return _svg(width, top + len(rows) * step + 20, label, body)
