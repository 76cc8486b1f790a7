"""The status page for people: audiences, recent runs, blocked runs, unmatched IDs, a chart — from Postgres.

Read-only. :func:`load_snapshot` reads everything in one read-only REPEATABLE READ transaction (the
sections agree with each other); :func:`render_page` is a pure function of that snapshot, so it is
tested without a database. The page is self-contained — inline CSS and a server-side SVG chart, no
script, no external asset (the machines it runs on may have no internet) — and everything that comes
from the database is escaped: audience names and reasons are user input. The HTTP handlers also send a
Content-Security-Policy that forbids scripts, so a missed escape still could not run anything.
"""

from __future__ import annotations

import html
import math
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from shared.logging import get_logger

log = get_logger(__name__)

RECENT_RUNS = 50
CHART_RUNS = 40
MAX_API_RUNS = 500
REFRESH_S = 30
RELEASE_COMMAND = "audience-bridge release"
COUNT_COLUMNS = ("received", "matched", "unmatched", "invalid", "excluded", "added", "removed")
TERMINAL_STATES = ("succeeded", "failed", "blocked")
NONE = "\u2013"  # an en dash for "no value"
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


@dataclass(frozen=True, slots=True)
class AudienceRow:
    audience_id: str
    name: str
    direction: str
    data_source: str
    id_type: str
    list_id: int | None
    list_name: str | None
    list_size: int
    export_mode: str | None
    platform_segment_id: int | None
    last_state: str | None
    last_started_at: datetime | None


@dataclass(frozen=True, slots=True)
class RunRow:
    run_id: uuid.UUID
    direction: str
    audience_id: str
    audience_name: str | None
    mode: str
    state: str
    counts: Mapping[str, int]
    match_rate: float | None
    reason: str | None
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    released_by: str | None = None

    @property
    def received(self) -> int:
        return int(self.counts.get("received", 0))

    @property
    def rate(self) -> float | None:
        """Import: share of valid IDs matched to a recipient. Export: share of list members with an ID."""
        if self.match_rate is not None:
            return self.match_rate
        received = self.received
        if self.direction == "import":
            valid = received - int(self.counts.get("invalid", 0))
            return self.counts.get("matched", 0) / valid if valid > 0 and "matched" in self.counts else None
        return (received - int(self.counts.get("excluded", 0))) / received if received > 0 else None

    def duration_s(self, now: datetime) -> float:
        """How long it took; for a run that has not ended, how long it has been going."""
        if self.finished_at is not None:
            end = self.finished_at
        elif self.state in TERMINAL_STATES:
            end = self.updated_at  # blocked (or failed without an end time): when it stopped moving
        else:
            end = now
        return max(0.0, (end - self.started_at).total_seconds())


@dataclass(frozen=True, slots=True)
class UnmatchedRow:
    audience_id: str
    audience_name: str | None
    reason: str
    ids: int
    last_seen: datetime | None


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    generated_at: datetime
    audiences: Sequence[AudienceRow] = ()
    runs: Sequence[RunRow] = ()  # newest first
    blocked: Sequence[RunRow] = ()  # oldest first: the longest-waiting on top
    unmatched: Sequence[UnmatchedRow] = ()
    totals: Mapping[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- queries

_AUDIENCES = """
SELECT sa.audience_id, sa.name, sa.direction, ds.name AS data_source, ds.id_type, sa.list_id, l.name AS list_name,
       coalesce(m.size, 0) AS list_size, sa.export_mode, sa.platform_segment_id,
       lr.state AS last_state, lr.started_at AS last_started_at
  FROM shared_audience sa
  JOIN data_source ds ON ds.data_source_id = sa.data_source_id
  LEFT JOIN list l ON l.list_id = sa.list_id
  LEFT JOIN LATERAL (SELECT count(*) AS size FROM list_member lm WHERE lm.list_id = sa.list_id) m ON true
  LEFT JOIN LATERAL (SELECT r.state, r.started_at FROM run r WHERE r.audience_id = sa.audience_id
                      ORDER BY r.started_at DESC LIMIT 1) lr ON true
 ORDER BY sa.direction DESC, lower(sa.name), sa.audience_id
 LIMIT 500"""

_RUN_COLUMNS = """r.run_id, r.direction, r.audience_id, sa.name AS audience_name, r.mode, r.state,
       r.counts::text AS counts, r.match_rate::text AS match_rate, r.reason, r.started_at, r.updated_at,
       r.finished_at, r.released_by
  FROM run r LEFT JOIN shared_audience sa ON sa.audience_id = r.audience_id"""

_RECENT_RUNS = f"SELECT {_RUN_COLUMNS} ORDER BY r.started_at DESC, r.run_id LIMIT $1"
# Only import runs can be released (release_run); the partial index run_state_idx serves this.
_BLOCKED_RUNS = (
    f"SELECT {_RUN_COLUMNS} WHERE r.state = 'blocked' AND r.direction = 'import' "
    "ORDER BY r.started_at, r.run_id LIMIT 200"
)

_UNMATCHED = """
SELECT u.audience_id, sa.name AS audience_name, u.reason, count(*) AS ids, max(u.last_seen) AS last_seen
  FROM unmatched_id u LEFT JOIN shared_audience sa ON sa.audience_id = u.audience_id
 GROUP BY u.audience_id, sa.name, u.reason
 ORDER BY u.audience_id, u.reason"""

_TOTALS = """
SELECT (SELECT count(*) FROM run) AS runs,
       (SELECT count(*) FROM run WHERE state IN ('started', 'progress')) AS running,
       (SELECT count(*) FROM run WHERE state = 'failed') AS failed"""


def _rate_of(match_rate: str | None) -> float | None:
    """One number from the run's ``{id_type: rate}`` (a run has one ID type)."""
    if not match_rate:
        return None
    values = [float(v) for v in orjson.loads(match_rate).values()]
    return values[0] if values else None


def _run(row: asyncpg.Record) -> RunRow:
    counts = orjson.loads(row["counts"]) if row["counts"] else {}
    return RunRow(
        run_id=row["run_id"],
        direction=row["direction"],
        audience_id=row["audience_id"],
        audience_name=row["audience_name"],
        mode=row["mode"],
        state=row["state"],
        counts={str(k): int(v) for k, v in counts.items()},
        match_rate=_rate_of(row["match_rate"]),
        reason=row["reason"],
        started_at=row["started_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
        released_by=row["released_by"],
    )


async def load_runs(conn: Any, limit: int = RECENT_RUNS) -> list[RunRow]:
    return [_run(r) for r in await conn.fetch(_RECENT_RUNS, limit)]


async def load_snapshot(pool: asyncpg.Pool, *, runs: int = RECENT_RUNS) -> StatusSnapshot:
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        audiences = [AudienceRow(**dict(r)) for r in await conn.fetch(_AUDIENCES)]
        recent = await load_runs(conn, runs)
        blocked = [_run(r) for r in await conn.fetch(_BLOCKED_RUNS)]
        unmatched = [UnmatchedRow(**dict(r)) for r in await conn.fetch(_UNMATCHED)]
        totals_row = await conn.fetchrow(_TOTALS)
        generated_at = await conn.fetchval("SELECT now()")
    totals = {k: int(v) for k, v in dict(totals_row).items()} if totals_row is not None else {}
    return StatusSnapshot(
        generated_at=generated_at,
        audiences=audiences,
        runs=recent,
        blocked=blocked,
        unmatched=unmatched,
        totals=totals,
    )


# ------------------------------------------------------------------------------------------- formatting


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


def fmt_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        minutes, secs = divmod(int(seconds), 60)
        return f"{minutes} min {secs:02d} s"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours} h {rest // 60:02d} min"


def fmt_time(at: datetime | None) -> str:
    return NONE if at is None else at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _audience_label(run: RunRow) -> str:
    name = run.audience_name or run.audience_id
    return f"{name} ({run.audience_id})" if run.audience_name else name


# ------------------------------------------------------------------------------------------------ chart

CHART_W, CHART_H = 960, 280
PAD_L, PAD_R, PAD_T, PAD_B = 64, 64, 20, 44
_DIRECTION_FILL = {"import": "#7aa7d9", "export": "#b39ddb"}
_STATE_STROKE = {"failed": "#c62828", "blocked": "#ef6c00"}


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
    plot_w = CHART_W - PAD_L - PAD_R
    plot_h = CHART_H - PAD_T - PAD_B
    bottom = PAD_T + plot_h
    parts = [
        f'<svg id="run-chart" class="chart" role="img" viewBox="0 0 {CHART_W} {CHART_H}" width="{CHART_W}" '
        f'height="{CHART_H}" style="max-width:100%;height:auto" xmlns="http://www.w3.org/2000/svg" '
        'aria-label="Match rate and volume per run">',
        f'<rect class="frame" x="{PAD_L}" y="{PAD_T}" width="{plot_w}" height="{plot_h}" fill="#fafafa" '
        'stroke="#ddd"/>',
    ]
    if not runs:
        parts.append(
            f'<text class="empty" x="{CHART_W / 2}" y="{PAD_T + plot_h / 2}" text-anchor="middle" '
            'fill="#888">No runs yet</text></svg>'
        )
        return "".join(parts)
    peak = nice_ceiling(max(r.received for r in runs))
    # Grid and axes: volume on the left, rate (0 to 100 %) on the right.
    for i in range(5):
        frac = i / 4
        y = bottom - frac * plot_h
        parts.append(f'<line x1="{PAD_L}" x2="{PAD_L + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(
            f'<text class="axis" x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{esc(fmt_compact(peak * frac))}</text>"
        )
        parts.append(f'<text class="axis" x="{PAD_L + plot_w + 6}" y="{y + 4:.1f}">{frac * 100:.0f} %</text>')
    parts.append(
        f'<text class="axis-title" x="14" y="{PAD_T + plot_h / 2}" transform="rotate(-90 14 {PAD_T + plot_h / 2})" '
        'text-anchor="middle">IDs received</text>'
        f'<text class="axis-title" x="{CHART_W - 10}" y="{PAD_T + plot_h / 2}" '
        f'transform="rotate(90 {CHART_W - 10} {PAD_T + plot_h / 2})" text-anchor="middle">match rate</text>'
    )
    slot = plot_w / len(runs)
    bar_w = max(2.0, min(36.0, slot * 0.7))
    points: list[tuple[float, float]] = []
    for i, run in enumerate(runs):
        cx = PAD_L + slot * (i + 0.5)
        h = run.received / peak * plot_h
        # A run with no IDs yet still gets a visible sliver: one bar per run, always.
        h = max(h, 1.0)
        tip = (
            f"{_audience_label(run)} · {run.direction} {run.mode} · {run.state}\n"
            f"started {fmt_time(run.started_at)} UTC · received {fmt_int(run.received)} · "
            f"rate {fmt_rate(run.rate)}"
        )
        stroke = _STATE_STROKE.get(run.state)
        stroke_attr = f' stroke="{stroke}" stroke-width="2"' if stroke else ""
        parts.append(
            f'<rect class="bar bar-{esc(run.direction)} state-{esc(run.state)}" data-run-id="{esc(run.run_id)}" '
            f'x="{cx - bar_w / 2:.1f}" y="{bottom - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
            f'fill="{_DIRECTION_FILL.get(run.direction, "#90a4ae")}"{stroke_attr}><title>{esc(tip)}</title></rect>'
        )
        rate = run.rate
        if rate is not None:
            points.append((cx, bottom - min(max(rate, 0.0), 1.0) * plot_h))
        if len(runs) <= 20 or i % max(1, len(runs) // 10) == 0:
            label = run.started_at.astimezone(UTC).strftime("%H:%M:%S")
            parts.append(f'<text class="tick" x="{cx:.1f}" y="{bottom + 16}" text-anchor="middle">{label}</text>')
    if len(points) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(f'<polyline class="rate-line" points="{path}" fill="none" stroke="#2e7d32" stroke-width="1.5"/>')
    for run, (x, y) in zip((r for r in runs if r.rate is not None), points, strict=True):
        parts.append(
            f'<circle class="point" data-run-id="{esc(run.run_id)}" cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#2e7d32">'
            f"<title>{esc(_audience_label(run))}: {esc(fmt_rate(run.rate))}</title></circle>"
        )
    parts.append(
        f'<g class="legend" transform="translate({PAD_L},{CHART_H - 10})">'
        '<rect width="10" height="10" y="-9" fill="#7aa7d9"/><text x="14">import volume</text>'
        '<rect x="110" width="10" height="10" y="-9" fill="#b39ddb"/><text x="124">export volume</text>'
        '<circle cx="225" cy="-4" r="4" fill="#2e7d32"/><text x="233">match rate (export: share with an ID)</text>'
        '<rect x="470" width="10" height="10" y="-9" fill="none" stroke="#c62828" stroke-width="2"/>'
        '<text x="484">failed</text>'
        '<rect x="530" width="10" height="10" y="-9" fill="none" stroke="#ef6c00" stroke-width="2"/>'
        '<text x="544">blocked</text></g></svg>'
    )
    return "".join(parts)


# ------------------------------------------------------------------------------------------------- page

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;background:#f4f5f7}
header{background:#263238;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#b0bec5;font-size:13px}
main{padding:16px 24px;max-width:1400px}
section{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:12px 16px;margin:0 0 16px}
h2{font-size:16px;margin:0 0 10px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:5px 6px;border-bottom:1px solid #eee;vertical-align:top}
th{background:#fafafa;font-weight:600;white-space:nowrap}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.muted{color:#78909c}.id{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;color:#546e7a}
.reason{min-width:160px;max-width:420px;overflow-wrap:anywhere}.scroll{overflow-x:auto}.t{white-space:nowrap}
.state{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;background:#eceff1}
.state-succeeded{background:#e8f5e9;color:#1b5e20}.state-failed{background:#ffebee;color:#b71c1c}
.state-blocked{background:#fff3e0;color:#e65100}.state-progress,.state-started{background:#e3f2fd;color:#0d47a1}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:0 0 16px}
.card{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:20px}.card.alert{border-color:#ef6c00;background:#fff8e1}
code{background:#f5f5f5;padding:2px 6px;border-radius:4px;font-size:12px;user-select:all}
.blocked{border-color:#ef6c00}
.chart text{font-size:11px;fill:#555}.chart .axis-title{font-size:12px;fill:#333}
.empty-state{color:#78909c;font-style:italic}
"""


def _state_badge(state: str | None) -> str:
    if state is None:
        return '<span class="muted">never run</span>'
    return f'<span class="state state-{esc(state)}">{esc(state)}</span>'


def _table(headers: Iterable[tuple[str, bool]], rows: list[str], empty: str, table_id: str) -> str:
    if not rows:
        return f'<p class="empty-state" id="{esc(table_id)}-empty">{esc(empty)}</p>'
    head = "".join(f"<th{' class=n' if numeric else ''}>{esc(title)}</th>" for title, numeric in headers)
    return (
        f'<div class="scroll"><table id="{esc(table_id)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _blocked_section(snapshot: StatusSnapshot) -> str:
    if not snapshot.blocked:
        return ""
    rows = []
    for run in snapshot.blocked:
        rows.append(
            f'<tr class="blocked-run" data-run-id="{esc(run.run_id)}">'
            f"<td>{esc(_audience_label(run))}</td><td>{esc(run.mode)}</td>"
            f'<td class="n">{fmt_int(run.received)}</td>'
            f'<td class="t">{esc(fmt_time(run.started_at))}</td>'
            f'<td class="reason">{esc(run.reason)}</td>'
            f"<td><code>{esc(RELEASE_COMMAND)} {esc(run.run_id)}</code></td></tr>"
        )
    table = _table(
        [
            ("audience", False),
            ("mode", False),
            ("received", True),
            ("started (UTC)", False),
            ("reason", False),
            ("to apply it anyway", False),
        ],
        rows,
        "",
        "blocked-runs",
    )
    return (
        f'<section class="blocked" id="blocked"><h2>Blocked runs waiting for release ({len(snapshot.blocked)})</h2>'
        "<p>These full snapshots were held back by the import guards. Check the reason; to apply one, run the "
        f"command shown (on a machine with access to the database).</p>{table}</section>"
    )


def _runs_section(snapshot: StatusSnapshot) -> str:
    rows = []
    for run in snapshot.runs:
        cells = "".join(
            f'<td class="n">{fmt_int(run.counts.get(k)) if k in run.counts else NONE}</td>' for k in COUNT_COLUMNS
        )
        released = f'<br><span class="muted">released by {esc(run.released_by)}</span>' if run.released_by else ""
        rows.append(
            f'<tr class="run" data-run-id="{esc(run.run_id)}">'
            f'<td class="t">{esc(fmt_time(run.started_at))}</td>'
            f"<td>{esc(run.direction)}</td>"
            f'<td>{esc(run.audience_name or run.audience_id)}<br><span class="id">{esc(run.audience_id)}</span></td>'
            f"<td>{esc(run.mode)}</td><td>{_state_badge(run.state)}{released}</td>{cells}"
            f'<td class="n">{esc(fmt_rate(run.rate))}</td>'
            f'<td class="n">{esc(fmt_duration(run.duration_s(snapshot.generated_at)))}</td>'
            f'<td class="reason">{esc(run.reason) if run.reason else ""}</td></tr>'
        )
    headers = [
        ("started (UTC)", False),
        ("direction", False),
        ("audience", False),
        ("mode", False),
        ("state", False),
        *((k, True) for k in COUNT_COLUMNS),
        ("match rate", True),
        ("duration", True),
        ("reason", False),
    ]
    table = _table(headers, rows, "No runs yet.", "runs")
    return f'<section id="recent-runs"><h2>Recent runs</h2>{table}</section>'


def _audiences_section(snapshot: StatusSnapshot) -> str:
    rows = []
    for a in snapshot.audiences:
        detail = f"segment {a.platform_segment_id}" if a.platform_segment_id is not None else (a.export_mode or "")
        rows.append(
            f'<tr class="audience" data-audience-id="{esc(a.audience_id)}">'
            f'<td>{esc(a.name)}<br><span class="id">{esc(a.audience_id)}</span></td>'
            f"<td>{esc(a.direction)}</td><td>{esc(a.data_source)} <span class=muted>({esc(a.id_type)})</span></td>"
            f"<td>{esc(detail)}</td>"
            f"<td>{esc(a.list_name) if a.list_name else '<span class=muted>none</span>'}</td>"
            f'<td class="n">{fmt_int(a.list_size)}</td>'
            f"<td>{_state_badge(a.last_state)}"
            f"{'<br><span class=muted>' + esc(fmt_time(a.last_started_at)) + '</span>' if a.last_started_at else ''}"
            "</td></tr>"
        )
    table = _table(
        [
            ("audience", False),
            ("direction", False),
            ("data source", False),
            ("segment / mode", False),
            ("campaign list", False),
            ("list size", True),
            ("last run", False),
        ],
        rows,
        "No audiences yet: import audiences come from the catalog, export audiences from export requests.",
        "audiences",
    )
    return f'<section id="audiences-section"><h2>Audiences and their lists</h2>{table}</section>'


def _unmatched_section(snapshot: StatusSnapshot) -> str:
    by_reason: dict[str, int] = {}
    for u in snapshot.unmatched:
        by_reason[u.reason] = by_reason.get(u.reason, 0) + u.ids
    summary = " · ".join(f"{esc(reason)}: <b>{fmt_int(n)}</b>" for reason, n in sorted(by_reason.items()))
    rows = [
        f'<tr class="unmatched"><td>{esc(u.audience_name or u.audience_id)}<br><span class="id">'
        f"{esc(u.audience_id)}</span></td><td>{esc(u.reason)}</td>"
        f'<td class="n">{fmt_int(u.ids)}</td><td>{esc(fmt_time(u.last_seen))}</td></tr>'
        for u in snapshot.unmatched
    ]
    table = _table(
        [("audience", False), ("reason", False), ("IDs", True), ("last seen (UTC)", False)],
        rows,
        "No unmatched IDs.",
        "unmatched",
    )
    lead = f"<p>{summary}</p>" if summary else ""
    return (
        '<section id="unmatched-section"><h2>Unmatched IDs by reason</h2>'
        "<p class=muted>Kept and matched again when recipients or visitor links change.</p>"
        f"{lead}{table}</section>"
    )


def render_page(snapshot: StatusSnapshot) -> str:
    """The whole page as HTML, a pure function of the snapshot."""
    chart_runs = list(reversed(snapshot.runs[:CHART_RUNS]))  # oldest on the left
    chart_scope = f" (last {len(chart_runs)})" if chart_runs else ""
    unmatched_total = sum(u.ids for u in snapshot.unmatched)
    totals = snapshot.totals
    cards = [
        ("audiences", fmt_int(len(snapshot.audiences)), False),
        ("runs", fmt_int(totals.get("runs", len(snapshot.runs))), False),
        ("running", fmt_int(totals.get("running", 0)), False),
        ("failed", fmt_int(totals.get("failed", 0)), totals.get("failed", 0) > 0),
        ("blocked", fmt_int(len(snapshot.blocked)), bool(snapshot.blocked)),
        ("unmatched IDs", fmt_int(unmatched_total), False),
    ]
    cards_html = "".join(
        f'<div class="card{" alert" if alert else ""}" data-card="{esc(label)}">{esc(label)}<b>{value}</b></div>'
        for label, value, alert in cards
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_S}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>Audience Bridge · status</title>"
        f"<style>{_CSS}</style></head><body>"
        "<header><h1>Audience Bridge · status</h1>"
        f"<p>as of {esc(fmt_time(snapshot.generated_at))} UTC · refreshes every {REFRESH_S} s · "
        'read-only · JSON: <a style="color:#b0bec5" href="api/status">api/status</a>, '
        '<a style="color:#b0bec5" href="api/runs">api/runs</a></p></header>'
        f'<main><div class="cards">{cards_html}</div>'
        f"{_blocked_section(snapshot)}"
        f'<section id="chart-section"><h2>Match rate and volume per run{chart_scope}</h2>'
        f"{render_chart(chart_runs)}</section>"
        f"{_runs_section(snapshot)}{_audiences_section(snapshot)}{_unmatched_section(snapshot)}"
        "</main></body></html>\n"
    )


# -------------------------------------------------------------------------------------------------- JSON


def run_json(run: RunRow, now: datetime) -> dict[str, Any]:
    return {
        "run_id": str(run.run_id),
        "direction": run.direction,
        "audience_id": run.audience_id,
        "audience_name": run.audience_name,
        "mode": run.mode,
        "state": run.state,
        "counts": dict(run.counts),
        "match_rate": run.rate,
        "reason": run.reason,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "duration_s": round(run.duration_s(now), 3),
        "released_by": run.released_by,
    }


def snapshot_json(snapshot: StatusSnapshot) -> dict[str, Any]:
    now = snapshot.generated_at
    return {
        "generated_at": now.isoformat(),
        "totals": dict(snapshot.totals),
        "audiences": [
            {
                "audience_id": a.audience_id,
                "name": a.name,
                "direction": a.direction,
                "data_source": a.data_source,
                "id_type": a.id_type,
                "list_id": a.list_id,
                "list_name": a.list_name,
                "list_size": a.list_size,
                "export_mode": a.export_mode,
                "platform_segment_id": a.platform_segment_id,
                "last_state": a.last_state,
                "last_started_at": a.last_started_at.isoformat() if a.last_started_at else None,
            }
            for a in snapshot.audiences
        ],
        "runs": [run_json(r, now) for r in snapshot.runs],
        "blocked": [{**run_json(r, now), "release_command": f"{RELEASE_COMMAND} {r.run_id}"} for r in snapshot.blocked],
        "unmatched": [
            {
                "audience_id": u.audience_id,
                "reason": u.reason,
                "ids": u.ids,
                "last_seen": u.last_seen.isoformat() if u.last_seen else None,
            }
            for u in snapshot.unmatched
        ],
    }


# -------------------------------------------------------------------------------------------------- HTTP


PoolProvider = Callable[[], "asyncpg.Pool | None"]


class StatusPage:
    """The page's HTTP handlers. The pool is asked for per request: the HTTP server answers before the
    service has connected to Postgres (and between reconnects), and then the page says so with a 503."""

    def __init__(self, pool: PoolProvider) -> None:
        self._pool = pool

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.page)
        app.router.add_get("/status", self.page)
        app.router.add_get("/api/status", self.api_status)
        app.router.add_get("/api/runs", self.api_runs)

    def _current_pool(self) -> asyncpg.Pool:
        pool = self._pool()
        if pool is None:
            raise web.HTTPServiceUnavailable(text="starting: the database is not connected yet\n")
        return pool

    async def _snapshot(self) -> StatusSnapshot:
        try:
            return await load_snapshot(self._current_pool())
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # The page is a window on the database: when it is away, say so instead of a stack trace.
            log.warning("status_page_database_unavailable", error=type(exc).__name__)
            raise web.HTTPServiceUnavailable(text="the database is not answering; try again shortly\n") from exc

    async def page(self, _: web.Request) -> web.Response:
        snapshot = await self._snapshot()
        return web.Response(
            text=render_page(snapshot),
            content_type="text/html",
            charset="utf-8",
            headers={
                "Content-Security-Policy": CSP,
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-store",
            },
        )

    async def api_status(self, _: web.Request) -> web.Response:
        snapshot = await self._snapshot()
        return _json(snapshot_json(snapshot))

    async def api_runs(self, request: web.Request) -> web.Response:
        raw = request.query.get("limit", str(RECENT_RUNS))
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_API_RUNS:
            raise web.HTTPBadRequest(text=f"limit must be an integer from 1 to {MAX_API_RUNS}\n")
        try:
            async with self._current_pool().acquire() as conn:
                runs = await load_runs(conn, int(raw))
                now = await conn.fetchval("SELECT now()")
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("status_api_database_unavailable", error=type(exc).__name__)
            raise web.HTTPServiceUnavailable(text="the database is not answering; try again shortly\n") from exc
        return _json({"generated_at": now.isoformat(), "runs": [run_json(r, now) for r in runs]})


def _json(body: Mapping[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json", headers={"Cache-Control": "no-store"})
