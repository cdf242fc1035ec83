"""Charts as self-contained SVG text and as mermaid blocks.

The dashboard and the session report must work with no internet and no
JavaScript, so charts are drawn here as plain SVG strings; GitHub renders
mermaid `xychart-beta` in comments, so PR results get that form instead.
Everything here is a pure function of its arguments.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#4b5563")
MERMAID_MAX_POINTS = 40


@dataclass(frozen=True)
class Series:
    """One named series; `step` draws a staircase (a running best holds until beaten)."""

    name: str
    points: list[tuple[float, float]]
    step: bool = False
    line: bool = True
    markers: bool = False
    dashed: bool = False
    color: str | None = None


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high], about `count` of them (1-2-5 steps)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high < low:
        low, high = high, low
    if high == low:
        high = low + 1.0
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks: list[float] = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def integer_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Whole-number ticks covering [low, high] (counts: experiments, seeds), about `count`.

    `nice_ticks` would put ticks at 0.5 and 1.5 on a short range; a count has
    no half, so the step is at least 1.
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high < low:
        low, high = high, low
    ticks = [t for t in nice_ticks(low, high, count) if float(t).is_integer()]
    if len(ticks) >= 2:
        return ticks
    first, last = math.ceil(low), math.floor(high)
    if last < first:
        return [float(round((low + high) / 2))]
    step = max(1, math.ceil((last - first) / max(count - 1, 1)))
    return [float(v) for v in range(first, last + 1, step)]


def format_tick(value: float) -> str:
    """A compact label: no trailing zeros, scientific only for extreme magnitudes."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e5 or magnitude < 1e-3:
        return f"{value:.1e}"
    return f"{value:.4f}".rstrip("0").rstrip(".")


def _padded_range(values: Sequence[float], pad: float = 0.05) -> tuple[float, float]:
    low, high = min(values), max(values)
    if low == high:
        spread = abs(low) * 0.05 or 1.0
        return low - spread, high + spread
    margin = (high - low) * pad
    return low - margin, high + margin


def _finite(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    return [
        (float(x), float(y))
        for x, y in points
        if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)
    ]


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    width: int = 720,
    height: int = 300,
    integer_x: bool = False,
) -> str:
    """A complete `<svg>` document: axes with ticks, labelled, with a legend.

    `integer_x`: the x axis counts something (experiments), so its ticks are whole numbers.
    """
    left, right, top, bottom = 64, 16, 40, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    cleaned = [(s, _finite(s.points)) for s in series]
    all_points = [p for _, pts in cleaned for p in pts]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
        'font-family="system-ui, -apple-system, Segoe UI, sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{left}" y="20" font-size="13" font-weight="600" fill="#111827">'
        f"{escape(title)}</text>",
    ]
    if not all_points:
        parts.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
            'fill="#6b7280">no data yet</text>'
        )
        parts.append(_axes_frame(left, top, plot_w, plot_h))
        parts.append("</svg>")
        return "".join(parts)

    x_low, x_high = _padded_range([x for x, _ in all_points], pad=0.02)
    y_low, y_high = _padded_range([y for _, y in all_points], pad=0.08)
    ticker = integer_ticks if integer_x else nice_ticks
    x_ticks = [t for t in ticker(x_low, x_high, 6) if x_low <= t <= x_high]
    y_ticks = [t for t in nice_ticks(y_low, y_high, 6) if y_low <= t <= y_high]

    def sx(x: float) -> float:
        return left + (x - x_low) / (x_high - x_low) * plot_w

    def sy(y: float) -> float:
        return top + plot_h - (y - y_low) / (y_high - y_low) * plot_h

    for tick in y_ticks:
        y = sy(tick)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e5e7eb"/>'
            f'<text x="{left - 6}" y="{y + 3.5:.1f}" text-anchor="end" fill="#4b5563">'
            f"{format_tick(tick)}</text>"
        )
    for tick in x_ticks:
        x = sx(tick)
        parts.append(
            f'<line x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" y2="{top + plot_h + 4}" '
            'stroke="#9ca3af"/>'
            f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle" fill="#4b5563">'
            f"{format_tick(tick)}</text>"
        )
    parts.append(_axes_frame(left, top, plot_w, plot_h))
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 8}" text-anchor="middle" '
        f'fill="#374151">{escape(x_label)}</text>'
        f'<text transform="translate(14 {top + plot_h / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle" fill="#374151">{escape(y_label)}</text>'
    )
    for index, (item, points) in enumerate(cleaned):
        color = item.color or PALETTE[index % len(PALETTE)]
        parts.append(_series_svg(item, points, color, sx, sy))
    parts.append(_legend(series, width - right, top))
    parts.append("</svg>")
    return "".join(parts)


def _axes_frame(left: float, top: float, plot_w: float, plot_h: float) -> str:
    return (
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#6b7280"/>'
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#6b7280"/>'
    )


def _series_svg(item: Series, points: list[tuple[float, float]], color: str, sx, sy) -> str:
    if not points:
        return ""
    ordered = sorted(points, key=lambda p: p[0])
    out = [f'<g class="series" data-name="{escape(item.name)}">']
    if item.line and len(ordered) > 1:
        coords: list[tuple[float, float]] = []
        for i, (x, y) in enumerate(ordered):
            if item.step and i:
                coords.append((sx(x), sy(ordered[i - 1][1])))
            coords.append((sx(x), sy(y)))
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        dash = ' stroke-dasharray="5 4"' if item.dashed else ""
        out.append(
            f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>'
        )
    if item.markers or len(ordered) == 1:
        for x, y in ordered:
            out.append(
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="{color}" '
                'fill-opacity="0.8"/>'
            )
    out.append("</g>")
    return "".join(out)


def _legend(series: Sequence[Series], right_edge: float, top: float) -> str:
    entries = []
    x = right_edge
    for index in range(len(series) - 1, -1, -1):
        item = series[index]
        color = item.color or PALETTE[index % len(PALETTE)]
        label = escape(item.name)
        x -= 7 * len(item.name) + 26
        swatch = (
            f'<circle cx="{x + 6}" cy="{top - 14}" r="4" fill="{color}"/>'
            if item.markers and not item.line
            else f'<line x1="{x}" y1="{top - 14}" x2="{x + 12}" y2="{top - 14}" '
            f'stroke="{color}" stroke-width="2.5"'
            + (' stroke-dasharray="3 2"' if item.dashed else "")
            + "/>"
        )
        entries.append(f'{swatch}<text x="{x + 16}" y="{top - 10}" fill="#374151">{label}</text>')
    return '<g class="legend">' + "".join(reversed(entries)) + "</g>"


def _mermaid_text(text: str) -> str:
    """Mermaid has no escape for quotes inside a quoted string."""
    return " ".join(text.replace('"', "'").split())


def _downsample(xs: Sequence[float], ys: Sequence[float], limit: int) -> tuple[list, list]:
    if len(xs) <= limit:
        return list(xs), list(ys)
    indices = sorted({round(i * (len(xs) - 1) / (limit - 1)) for i in range(limit)})
    return [xs[i] for i in indices], [ys[i] for i in indices]


def mermaid_xychart(
    title: str,
    xs: Sequence[float],
    ys: Sequence[float],
    y_label: str,
    *,
    x_label: str = "step",
) -> str:
    """A fenced ```mermaid `xychart-beta` line chart, at most 40 points (evenly thinned)."""
    pairs = [
        (x, y)
        for x, y in zip(xs, ys, strict=False)
        if y is not None and math.isfinite(float(y)) and x is not None
    ]
    thinned_x, thinned_y = _downsample(
        [p[0] for p in pairs], [p[1] for p in pairs], MERMAID_MAX_POINTS
    )
    lines = ["```mermaid", "xychart-beta", f'    title "{_mermaid_text(title)}"']
    if thinned_y:
        low, high = _padded_range([float(y) for y in thinned_y])
        categories = ", ".join(f'"{format_tick(float(x))}"' for x in thinned_x)
        values = ", ".join(f"{float(y):.6g}" for y in thinned_y)
        lines.append(f'    x-axis "{_mermaid_text(x_label)}" [{categories}]')
        lines.append(f'    y-axis "{_mermaid_text(y_label)}" {low:.6g} --> {high:.6g}')
        lines.append(f"    line [{values}]")
    else:
        lines.append(f'    x-axis "{_mermaid_text(x_label)}" ["0"]')
        lines.append(f'    y-axis "{_mermaid_text(y_label)}" 0 --> 1')
        lines.append("    line [0]")
    lines.append("```")
    return "\n".join(lines)


@dataclass(frozen=True)
class Curve:
    """One line of a mermaid chart: its name in the legend, its colour, its points."""

    name: str
    color: str
    points: list[tuple[float, float]]


def _value_at(points: Sequence[tuple[float, float]], x: float) -> float | None:
    """The curve's value at step `x`: its last point at or before it (None before the first)."""
    found = None
    for px, py in points:
        if px > x:
            break
        found = py
    return found


def mermaid_lines(
    title: str,
    curves: Sequence[Curve],
    y_label: str,
    *,
    x_label: str = "step",
) -> str:
    """Several named curves as one mermaid `xychart-beta`, followed by their legend.

    Mermaid's xychart draws no legend, so the chart's colours are fixed (its
    `plotColorPalette`, in the order of `curves`) and the line below the chart
    names each colour. The curves share one x axis: the union of their steps,
    thinned to at most 40; each curve holds its last value between its points.
    """
    drawn = [(c, sorted(_finite(c.points))) for c in curves]
    drawn = [(c, pts) for c, pts in drawn if pts]
    if not drawn:
        return ""
    steps = sorted({x for _, pts in drawn for x, _ in pts})
    steps, _ = _downsample(steps, steps, MERMAID_MAX_POINTS)
    rows = []
    for _curve, pts in drawn:
        first = pts[0][1]
        rows.append([v if (v := _value_at(pts, x)) is not None else first for x in steps])
    low, high = _padded_range([v for row in rows for v in row])
    palette = ", ".join(c.color for c, _ in drawn)
    init = '%%{init: {"themeVariables": {"xyChart": {"plotColorPalette": "' + palette + '"}}}}%%'
    categories = ", ".join(f'"{format_tick(float(x))}"' for x in steps)
    lines = ["```mermaid", init, "xychart-beta", f'    title "{_mermaid_text(title)}"']
    lines.append(f'    x-axis "{_mermaid_text(x_label)}" [{categories}]')
    lines.append(f'    y-axis "{_mermaid_text(y_label)}" {low:.6g} --> {high:.6g}')
    lines += ["    line [" + ", ".join(f"{v:.6g}" for v in row) + "]" for row in rows]
    lines.append("```")
    legend = " · ".join(f"{_SWATCH.get(c.color, '■')} {c.name}" for c, _ in drawn)
    return "\n".join(lines) + f"\n\n<sub>Lines: {legend}</sub>"


# The coloured squares GitHub shows in text, for the colours the mermaid charts use.
CANDIDATE_COLOR = "#2563eb"
BASELINE_COLOR = "#ea580c"
_SWATCH = {CANDIDATE_COLOR: "🟦", BASELINE_COLOR: "🟧"}


def mean_curve(curves: Sequence[Sequence[tuple[float, float]]]) -> list[tuple[float, float]]:
    """The mean of several curves at each step any of them has.

    A curve counts at a step from its first point to its last (between points it
    holds its last value); outside that range it has no value there, so a seed
    that logged fewer steps never drags the mean with a value it did not reach.
    """
    cleaned = [sorted(_finite(c)) for c in curves]
    cleaned = [c for c in cleaned if c]
    steps = sorted({x for c in cleaned for x, _ in c})
    out = []
    for x in steps:
        values = [v for c in cleaned if x <= c[-1][0] and (v := _value_at(c, x)) is not None]
        if values:
            out.append((x, sum(values) / len(values)))
    return out
