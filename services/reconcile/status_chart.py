"""The status page's chart, drawn on the server as SVG, and the value formatting it shares with the page.

Pure functions of :class:`~services.reconcile.status_queries.RunRow` values. The chart is SVG markup rather
than a plotting script because the page runs no script (its Content-Security-Policy forbids them) and loads
no asset (the machines it runs on may have no internet). Everything taken from a run is escaped: audience
names are user input. The formatting helpers live here, not in the page, because the chart needs them and
the page already depends on the chart.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Final

from services.reconcile.status_queries import RunRow

NONE: Final = "\u2013"  # an en dash for "no value": a hyphen would read as a minus sign next to numbers

CHART_W: Final = 960
CHART_H: Final = 280
PAD_L: Final = 64
PAD_R: Final = 64
PAD_T: Final = 20
PAD_B: Final = 44
_PLOT_W: Final = CHART_W - PAD_L - PAD_R
_PLOT_H: Final = CHART_H - PAD_T - PAD_B
_BOTTOM: Final = PAD_T + _PLOT_H
_DIRECTION_FILL: Final = {"import": "#7aa7d9", "export": "#b39ddb"}
_STATE_STROKE: Final = {"failed": "#c62828", "blocked": "#ef6c00"}

_AXIS_TITLES: Final = (
    f'<text class="axis-title" x="14" y="{PAD_T + _PLOT_H / 2}" transform="rotate(-90 14 {PAD_T + _PLOT_H / 2})" '
    'text-anchor="middle">IDs received</text>'
    f'<text class="axis-title" x="{CHART_W - 10}" y="{PAD_T + _PLOT_H / 2}" '
    f'transform="rotate(90 {CHART_W - 10} {PAD_T + _PLOT_H / 2})" text-anchor="middle">match rate</text>'
)
_LEGEND: Final = (
    f'<g class="legend" transform="translate({PAD_L},{CHART_H - 10})">'
    '<rect width="10" height="10" y="-9" fill="#7aa7d9"/><text x="14">import volume</text>'
    '<rect x="110" width="10" height="10" y="-9" fill="#b39ddb"/><text x="124">export volume</text>'
    '<circle cx="225" cy="-4" r="4" fill="#2e7d32"/><text x="233">match rate (export: share with an ID)</text>'
    '<rect x="470" width="10" height="10" y="-9" fill="none" stroke="#c62828" stroke-width="2"/>'
    '<text x="484">failed</text>'
    '<rect x="530" width="10" height="10" y="-9" fill="none" stroke="#ef6c00" stroke-width="2"/>'
    '<text x="544">blocked</text></g>'
)


def esc(value: object) -> str:
    """Text or attribute content, escaped (quotes too: it is used inside attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def fmt_int(n: int | None) -> str:
    return NONE if n is None else f"{n:,}"


def fmt_compact(n: float) -> str:
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.3g}" if n != int(n) else str(int(n))


def fmt_rate(rate: float | None) -> str:
    return NONE if rate is None else f"{rate * 100:.1f} %"


def fmt_time(at: datetime | None) -> str:
    return NONE if at is None else at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def audience_label(run: RunRow) -> str:
    name = run.audience_name or run.audience_id
    return f"{name} ({run.audience_id})" if run.audience_name else name


def nice_ceiling(value: float) -> float:
    """The smallest round number >= value whose quarters are round too (the axis has four steps)."""
    if value <= 0:
        return 1.0
    scale: float = 10.0 ** math.floor(math.log10(value))
    for step in (1, 1.2, 1.6, 2, 2.4, 3, 4, 5, 6, 8, 10):
        # Rounded before comparing: 0.3 * 10 is not exactly 3 in binary floating point.
        if round(step * scale, 9) >= value:
            return round(step * scale, 9)
    return 10.0 * scale


def render_chart(runs: Sequence[RunRow]) -> str:
    """Volume (bars, left axis) and match rate (points, right axis) per run, oldest on the left.

    One ``rect.bar`` per run and one ``circle.point`` per run with a rate, each carrying ``data-run-id``.
    """
    frame = [
        f'<svg id="run-chart" class="chart" role="img" viewBox="0 0 {CHART_W} {CHART_H}" width="{CHART_W}" '
        f'height="{CHART_H}" style="max-width:100%;height:auto" xmlns="http://www.w3.org/2000/svg" '
        'aria-label="Match rate and volume per run">',
        f'<rect class="frame" x="{PAD_L}" y="{PAD_T}" width="{_PLOT_W}" height="{_PLOT_H}" fill="#fafafa" '
        'stroke="#ddd"/>',
    ]
    if not runs:
        empty = (
            f'<text class="empty" x="{CHART_W / 2}" y="{PAD_T + _PLOT_H / 2}" text-anchor="middle" '
            'fill="#888">No runs yet</text></svg>'
        )
        return "".join([*frame, empty])
    peak = nice_ceiling(max(r.received for r in runs))
    return "".join([*frame, *_grid(peak), _AXIS_TITLES, *_bars(runs, peak), *_rate_marks(runs), _LEGEND, "</svg>"])


def _grid(peak: float) -> Iterator[str]:
    """Four steps up from the bottom: volume on the left axis, rate (0 to 100 %) on the right."""
    for i in range(5):
        frac = i / 4
        y = _BOTTOM - frac * _PLOT_H
        yield f'<line x1="{PAD_L}" x2="{PAD_L + _PLOT_W}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
        yield (
            f'<text class="axis" x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{esc(fmt_compact(peak * frac))}</text>"
        )
        yield f'<text class="axis" x="{PAD_L + _PLOT_W + 6}" y="{y + 4:.1f}">{frac * 100:.0f} %</text>'


def _slot_x(i: int, count: int) -> float:
    """The centre of the ``i``-th of ``count`` equal slots across the plot."""
    return PAD_L + _PLOT_W / count * (i + 0.5)


def _bars(runs: Sequence[RunRow], peak: float) -> Iterator[str]:
    """One bar per run, and a time under it where the labels do not crowd each other."""
    bar_w = max(2.0, min(36.0, _PLOT_W / len(runs) * 0.7))
    for i, run in enumerate(runs):
        cx = _slot_x(i, len(runs))
        # A run with no IDs yet still gets a visible sliver: one bar per run, always.
        h = max(run.received / peak * _PLOT_H, 1.0)
        tip = (
            f"{audience_label(run)} · {run.direction} {run.mode} · {run.state}\n"
            f"started {fmt_time(run.started_at)} UTC · received {fmt_int(run.received)} · "
            f"rate {fmt_rate(run.rate)}"
        )
        stroke = _STATE_STROKE.get(run.state)
        stroke_attr = f' stroke="{stroke}" stroke-width="2"' if stroke else ""
        yield (
            f'<rect class="bar bar-{esc(run.direction)} state-{esc(run.state)}" data-run-id="{esc(run.run_id)}" '
            f'x="{cx - bar_w / 2:.1f}" y="{_BOTTOM - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
            f'fill="{_DIRECTION_FILL.get(run.direction, "#90a4ae")}"{stroke_attr}><title>{esc(tip)}</title></rect>'
        )
        if len(runs) <= 20 or i % max(1, len(runs) // 10) == 0:
            label = run.started_at.astimezone(UTC).strftime("%H:%M:%S")
            yield f'<text class="tick" x="{cx:.1f}" y="{_BOTTOM + 16}" text-anchor="middle">{label}</text>'


def _rate_marks(runs: Sequence[RunRow]) -> Iterator[str]:
    """A point per run that has a rate, joined by a line once there are two."""
    rated = [(i, run, rate) for i, run in enumerate(runs) if (rate := run.rate) is not None]
    # A rate outside 0..1 (a bad count) stays on the plot instead of drawing over the axes.
    points = [(_slot_x(i, len(runs)), _BOTTOM - min(max(rate, 0.0), 1.0) * _PLOT_H) for i, _, rate in rated]
    if len(points) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        yield f'<polyline class="rate-line" points="{path}" fill="none" stroke="#2e7d32" stroke-width="1.5"/>'
    for (_, run, rate), (x, y) in zip(rated, points, strict=True):
        yield (
            f'<circle class="point" data-run-id="{esc(run.run_id)}" cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#2e7d32">'
            f"<title>{esc(audience_label(run))}: {esc(fmt_rate(rate))}</title></circle>"
        )
