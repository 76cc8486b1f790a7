"""The status page for people: audiences, recent runs, blocked runs, unmatched IDs, a chart; and its HTTP
handlers, the JSON API's included (its bodies: :mod:`services.reconcile.status_json`).

:func:`render_page` is a pure function of a :class:`~services.reconcile.status_queries.StatusSnapshot`
(read by :func:`~services.reconcile.status_queries.load_snapshot`), so it is tested without a database; the
chart is :mod:`services.reconcile.status_chart`. The page is self-contained (inline CSS and a server-side
SVG chart, no script, no external asset: the machines it runs on may have no internet) and everything that
comes from the database is escaped: audience names and reasons are user input. The HTTP handlers also send
a Content-Security-Policy that forbids scripts, so a missed escape still could not run anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import asyncpg
import orjson
from aiohttp import web

from services.reconcile.status_chart import audience_label, esc, fmt_int, fmt_rate, fmt_time, render_chart
from services.reconcile.status_dead_letters import (
    DeadLetterSummary,
    DeadLetterTally,
    dead_letters_json,
    dead_letters_section,
)
from services.reconcile.status_files import files_section
from services.reconcile.status_import_polls import import_polls_section
from services.reconcile.status_json import RELEASE_COMMAND, run_json, snapshot_json
from services.reconcile.status_queries import RECENT_RUNS, StatusSnapshot, load_runs
from services.reconcile.status_reads import PageReads, PageUnavailable, RenderMemo
from services.reconcile.status_schedules import schedules_section
from shared.logging import get_logger

log = get_logger(__name__)

CHART_RUNS: Final = 40
MAX_API_RUNS: Final = 500
REFRESH_S: Final = 30
COUNT_COLUMNS: Final = ("received", "matched", "unmatched", "invalid", "excluded", "added", "removed")
CSP: Final = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
STARTING: Final = "starting: the database is not connected yet\n"
# What a database that is away raises: a 503 that says so, where anything else is a bug worth its stack trace.
_DATABASE_AWAY: Final = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def fmt_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        minutes, secs = divmod(int(seconds), 60)
        return f"{minutes} min {secs:02d} s"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours} h {rest // 60:02d} min"


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
            f"<td>{esc(audience_label(run))}</td><td>{esc(run.mode)}</td>"
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
        cells = "".join(f'<td class="n">{fmt_int(run.counts.get(k))}</td>' for k in COUNT_COLUMNS)
        released = f'<br><span class="muted">released by {esc(run.released_by)}</span>' if run.released_by else ""
        if run.requested_by:  # the export's audit trail: who asked, through what
            released += (
                f'<br><span class="muted requested">asked by {esc(run.requested_via)}:{esc(run.requested_by)}</span>'
            )
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


_OUTCOMES: Final = {"rejected": "rejected", "processed": "filed, not imported"}


def _deliveries_section(snapshot: StatusSnapshot) -> str:
    """Delivered batches that fed no list: rejected ones, and those delivered for a data source (DPID) that
    no import audience takes (filed in processed/ unread)."""
    rows = [
        f'<tr class="delivery" data-batch="{esc(d.batch_root)}"><td class="t">{esc(fmt_time(d.finished_at))}</td>'
        f'<td class="id">{esc(d.batch_root)}</td><td>{esc(_OUTCOMES.get(d.state, d.state))}</td>'
        f'<td class="reason">{esc(d.reason)}</td></tr>'
        for d in snapshot.deliveries
    ]
    headers = [("when (UTC)", False), ("batch", False), ("outcome", False), ("reason", False)]
    table = _table(headers, rows, "Every delivered batch fed its lists.", "deliveries")
    return (
        '<section id="deliveries-section"><h2>Deliveries not imported</h2>'
        "<p class=muted>A batch delivered for a data source no import audience takes (its master DPID) is "
        "filed in processed/ unread: configure the audience, then move its files back into the drop zone.</p>"
        f"{table}</section>"
    )


def render_page(snapshot: StatusSnapshot, dead_letters: DeadLetterSummary | None = None) -> str:
    """The whole page as HTML, a pure function of the snapshot (and of the dead letters' figures)."""
    chart_runs = list(reversed(snapshot.runs[:CHART_RUNS]))  # the chart reads left to right in time
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
        '<a style="color:#b0bec5" href="api/runs">api/runs</a> · '
        '<a style="color:#b0bec5" href="insights">audience insights</a></p></header>'
        f'<main><div class="cards">{cards_html}</div>'
        f"{_blocked_section(snapshot)}"
        f'<section id="chart-section"><h2>Match rate and volume per run{chart_scope}</h2>'
        f"{render_chart(chart_runs)}</section>"
        f"{_runs_section(snapshot)}{_audiences_section(snapshot)}{schedules_section(snapshot.schedules)}"
        f"{import_polls_section(snapshot.import_polls)}"
        f"{_unmatched_section(snapshot)}"
        f"{_deliveries_section(snapshot)}{files_section(tuple(snapshot.files))}"
        f"{dead_letters_section(dead_letters)}"
        "</main></body></html>\n"
    )


class StatusPage:
    """The page's HTTP handlers. The pool is asked for per request: the HTTP server answers before the
    service has connected to Postgres (and between reconnects), and then the page says so with a 503."""

    def __init__(self, reads: PageReads, dead_letters: DeadLetterTally | None = None) -> None:
        # The page's own pool and its shared snapshot (status_reads): viewers never take the service's pool.
        self._reads = reads
        self._page_memo, self._api_memo = RenderMemo(), RenderMemo()
        self._dead_letters = dead_letters

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.page)
        app.router.add_get("/status", self.page)
        app.router.add_get("/api/status", self.api_status)
        app.router.add_get("/api/runs", self.api_runs)

    async def _snapshot(self) -> StatusSnapshot:
        try:
            return await self._reads.snapshot()
        except PageUnavailable:
            raise web.HTTPServiceUnavailable(text=STARTING) from None
        except _DATABASE_AWAY as exc:
            # The page is a window on the database: when it is away, say so instead of a stack trace.
            log.warning("status_page_database_unavailable", error=type(exc).__name__)
            raise web.HTTPServiceUnavailable(text="the database is not answering; try again shortly\n") from exc

    async def page(self, _: web.Request) -> web.Response:
        snapshot = await self._snapshot()
        dead_letters = await self._dead_letters.summary() if self._dead_letters is not None else None
        html = self._page_memo.get((snapshot, dead_letters), lambda: render_page(snapshot, dead_letters).encode())
        return web.Response(
            body=html,
            content_type="text/html",
            charset="utf-8",
            headers={
                "Content-Security-Policy": CSP,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-store",
            },
        )

    async def api_status(self, _: web.Request) -> web.Response:
        snapshot = await self._snapshot()
        dead_letters = await self._dead_letters.summary() if self._dead_letters is not None else None

        def render() -> bytes:
            body = snapshot_json(snapshot)
            if dead_letters is not None:
                body["dead_letters"] = dead_letters_json(dead_letters)
            return orjson.dumps(body)

        body = self._api_memo.get((snapshot, dead_letters), render)
        return web.Response(body=body, content_type="application/json", headers={"Cache-Control": "no-store"})

    async def api_runs(self, request: web.Request) -> web.Response:
        raw = request.query.get("limit", str(RECENT_RUNS))
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_API_RUNS:
            raise web.HTTPBadRequest(text=f"limit must be an integer from 1 to {MAX_API_RUNS}\n")
        try:
            async with self._reads.connection() as conn:
                runs = await load_runs(conn, int(raw))
                now = await conn.fetchval("SELECT now()")
        except PageUnavailable:
            raise web.HTTPServiceUnavailable(text=STARTING) from None
        except _DATABASE_AWAY as exc:
            log.warning("status_api_database_unavailable", error=type(exc).__name__)
            raise web.HTTPServiceUnavailable(text="the database is not answering; try again shortly\n") from exc
        return _json({"generated_at": now.isoformat(), "runs": [run_json(r, now) for r in runs]})


def _json(body: Mapping[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json", headers={"Cache-Control": "no-store"})
