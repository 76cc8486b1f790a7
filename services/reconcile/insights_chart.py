"""Line charts of an audience's runs for the insights page, drawn on the server as SVG (the page runs no script).

Pure functions: one point per applied run, left to right in time; each point carries its value in
``data-value`` and a ``<title>`` tooltip, so a reader (or a test) gets the exact figure, not a pixel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from services.reconcile.status_chart import esc, fmt_time, nice_ceiling

W: Final = 960
H: Final = 220
PAD_L: Final = 64
PAD_R: Final = 24
PAD_T: Final = 16
PAD_B: Final = 36
_PLOT_W: Final = W - PAD_L - PAD_R
_PLOT_H: Final = H - PAD_T - PAD_B
COLOURS: Final = ("#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f")


@dataclass(frozen=True, slots=True)
class Series:
    """One line: its name and a value per run (None: no value for that run, the line skips it)."""

    name: str
    values: Sequence[float | None]


def _x(i: int, count: int) -> float:
    return PAD_L + (_PLOT_W / 2 if count <= 1 else i * _PLOT_W / (count - 1))


def _y(value: float, top: float) -> float:
    return PAD_T + _PLOT_H - (value / top) * _PLOT_H if top else PAD_T + _PLOT_H


def line_chart(
    chart_id: str,
    times: Sequence[datetime],
    series: Sequence[Series],
    fmt: Callable[[float], str],
    *,
    top: float | None = None,
) -> str:
    """An SVG line chart of ``series`` over the runs at ``times`` (``top``: the y axis' end, else from the
    data). An empty chart says so rather than drawing axes over nothing."""
    if not times:
        return f'<p class="empty-state" id="{esc(chart_id)}">No applied run yet.</p>'
    peak = max((v for s in series for v in s.values if v is not None), default=0.0)
    top = top if top is not None else nice_ceiling(peak) if peak > 0 else 1.0
    parts = [
        f'<svg class="chart" id="{esc(chart_id)}" role="img" viewBox="0 0 {W} {H}" width="100%" '
        f'preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg">',
        f'<rect x="{PAD_L}" y="{PAD_T}" width="{_PLOT_W}" height="{_PLOT_H}" fill="#fafafa" stroke="#ddd"/>',
    ]
    for step in range(5):
        value = top * step / 4
        y = _y(value, top)
        parts.append(
            f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>'
            f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{esc(fmt(value))}</text>'
        )
    parts.append(f'<text x="{PAD_L}" y="{H - 8}">{esc(fmt_time(times[0]))}</text>')
    if len(times) > 1:
        parts.append(f'<text x="{W - PAD_R}" y="{H - 8}" text-anchor="end">{esc(fmt_time(times[-1]))}</text>')
    for n, line in enumerate(series):
        parts.append(_line(line, times, top, fmt, COLOURS[n % len(COLOURS)]))
    legend = "".join(
        f'<tspan fill="{COLOURS[n % len(COLOURS)]}" dx="{0 if n == 0 else 14}">\u25cf {esc(s.name)}</tspan>'
        for n, s in enumerate(series)
    )
    parts.append(f'<text x="{PAD_L + _PLOT_W / 2:.0f}" y="{H - 8}" text-anchor="middle">{legend}</text></svg>')
    return "".join(parts)


def _line(line: Series, times: Sequence[datetime], top: float, fmt: Callable[[float], str], colour: str) -> str:
    count = len(times)
    points = [(i, v) for i, v in enumerate(line.values) if v is not None]
    path = " ".join(f"{_x(i, count):.1f},{_y(v, top):.1f}" for i, v in points)
    marks = "".join(
        f'<circle cx="{_x(i, count):.1f}" cy="{_y(v, top):.1f}" r="3.5" fill="{colour}" '
        f'data-series="{esc(line.name)}" data-run="{i}" data-value="{v}">'
        f"<title>{esc(line.name)}: {esc(fmt(v))} ({esc(fmt_time(times[i]))})</title></circle>"
        for i, v in points
    )
    polyline = f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>'
    return f'<g data-line="{esc(line.name)}">{polyline}{marks}</g>'
