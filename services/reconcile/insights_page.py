"""The status page's audience insights: per audience, size, match rate per ID type and unmatched IDs run by run
(``/insights?audience=ID``), and the exact overlap of two lists or of a list and an exported audience
(``/insights/overlap?a=LIST&b=LIST`` or ``?a=LIST&audience=ID``).

Rendering is pure (:func:`render_index`, :func:`render_audience`, :func:`render_overlap`); the handlers read
through the page's own read-only pool (:class:`~services.reconcile.status_reads.PageReads`), so insights take
nothing from imports and exports, and the service's credential check covers them like the rest of the page.
Everything from the database is escaped; the Content-Security-Policy forbids scripts and lets the overlap
form submit only to the page itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import asyncpg
from aiohttp import web

from services.reconcile.insights_chart import Series, line_chart
from services.reconcile.insights_queries import (
    AudienceRef,
    Overlap,
    RunPoint,
    UnknownInsightTarget,
    audiences,
    history,
    list_audience_overlap,
    list_overlap,
)
from services.reconcile.status_chart import esc, fmt_compact, fmt_int, fmt_rate, fmt_time
from services.reconcile.status_reads import PageReads, PageUnavailable
from shared.logging import get_logger

log = get_logger(__name__)

HISTORY_RUNS: Final = 100
MAX_REF: Final = 200
CSP: Final = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
_DATABASE_AWAY: Final = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
_CSS: Final = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;background:#f4f5f7}
header{background:#263238;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#b0bec5;font-size:13px}header a{color:#b0bec5}
main{padding:16px 24px;max-width:1400px}
section{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:12px 16px;margin:0 0 16px}
h2{font-size:16px;margin:0 0 10px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:5px 6px;border-bottom:1px solid #eee}th{background:#fafafa}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.chart text{font-size:11px;fill:#555}.empty-state{color:#78909c;font-style:italic}
.id{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;color:#546e7a}
form input{margin:0 8px 0 4px}
"""


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Audience Bridge · {esc(title)}</title><style>{_CSS}</style></head><body>"
        f'<header><h1>Audience Bridge · {esc(title)}</h1><p><a href="/">status</a> · '
        '<a href="/insights">insights</a> · read-only</p></header>'
        f"<main>{body}</main></body></html>\n"
    )


def _overlap_form(a: str = "", b: str = "", audience: str = "") -> str:
    return (
        '<section id="overlap-form"><h2>Overlap</h2><form method="get" action="/insights/overlap">'
        f'<label>list <input name="a" value="{esc(a)}" required></label>'
        f'<label>and list <input name="b" value="{esc(b)}"></label>'
        f'<label>or exported audience <input name="audience" value="{esc(audience)}"></label>'
        '<button type="submit">count</button></form>'
        '<p class="empty-state">Exact counts: recipients for two lists; for a list and an exported audience, the '
        "list's IDs for the audience's data source against the IDs the bridge shared.</p></section>"
    )


def render_index(refs: Sequence[AudienceRef]) -> str:
    rows = "".join(
        f'<tr data-audience="{esc(a.audience_id)}"><td><a href="/insights?audience={esc(a.audience_id)}">'
        f'{esc(a.name)}</a> <span class="id">{esc(a.audience_id)}</span></td><td>{esc(a.direction)}</td>'
        f"<td>{esc(a.list_name or '')}</td></tr>"
        for a in refs
    )
    table = (
        f"<table><tr><th>audience</th><th>direction</th><th>list</th></tr>{rows}</table>"
        if rows
        else '<p class="empty-state">No shared audience yet.</p>'
    )
    return _page("insights", f'<section id="audiences"><h2>Audiences</h2>{table}</section>{_overlap_form()}')


def _history_table(points: Sequence[RunPoint], id_types: Sequence[str]) -> str:
    heads = "".join(f'<th class="n">match rate {esc(t)}</th>' for t in id_types)
    rows = "".join(
        f'<tr data-run="{esc(p.run_id)}"><td>{esc(fmt_time(p.ended_at))}</td><td class="id">{esc(p.run_id)}</td>'
        f'<td class="n" data-size="{p.size}">{fmt_int(p.size)}</td><td class="n">{fmt_int(p.added)}</td>'
        f'<td class="n">{fmt_int(p.removed)}</td><td class="n" data-unmatched="{p.unmatched}">'
        f"{fmt_int(p.unmatched)}</td>"
        + "".join(
            f'<td class="n" data-rate="{esc(t)}" data-value="{p.match_rate[t]}">{fmt_rate(p.match_rate[t])}</td>'
            if t in p.match_rate
            else '<td class="n"></td>'
            for t in id_types
        )
        + "</tr>"
        for p in reversed(points)
    )
    return (
        '<table id="history"><tr><th>ended</th><th>run</th><th class="n">size after</th><th class="n">added</th>'
        f'<th class="n">removed</th><th class="n">unmatched IDs</th>{heads}</tr>{rows}</table>'
    )


def render_audience(ref: AudienceRef, points: Sequence[RunPoint]) -> str:
    """One audience's history: size, match rate per ID type and unmatched IDs per applied run."""
    times = [p.ended_at for p in points]
    id_types = sorted({t for p in points for t in p.match_rate})
    size = line_chart("size-chart", times, [Series("size", [p.size for p in points])], fmt_compact)
    rates = line_chart(
        "match-rate-chart",
        times,
        [Series(t, [p.match_rate.get(t) for p in points]) for t in id_types],
        fmt_rate,
        top=1.0,
    )
    unmatched = line_chart(
        "unmatched-chart", times, [Series("unmatched IDs", [p.unmatched for p in points])], fmt_compact
    )
    rate_section = (
        f'<section id="match-rate"><h2>Match rate per ID type</h2>{rates}</section>'
        if ref.direction == "import"
        else ""
    )
    unmatched_section = (
        f'<section id="unmatched"><h2>Unmatched IDs per run</h2>{unmatched}</section>'
        if ref.direction == "import"
        else ""
    )
    body = (
        f'<section id="audience" data-audience="{esc(ref.audience_id)}"><h2>{esc(ref.name)} '
        f'<span class="id">{esc(ref.audience_id)}</span></h2><p>{esc(ref.direction)} · list '
        f"{esc(ref.list_name or '')} · last {len(points)} applied runs</p></section>"
        f'<section id="size"><h2>Size after each run</h2>{size}</section>{rate_section}{unmatched_section}'
        f'<section id="runs"><h2>Runs</h2>{_history_table(points, id_types)}</section>'
        f"{_overlap_form(a=ref.list_name or '')}"
    )
    return _page(f"insights · {ref.name}", body)


def render_overlap(overlap: Overlap, a: str, b: str, audience: str) -> str:
    cells = (
        ("in " + overlap.a, overlap.a_size, "a"),
        ("in " + overlap.b, overlap.b_size, "b"),
        ("in both", overlap.both, "both"),
        ("only in " + overlap.a, overlap.only_a, "only-a"),
        ("only in " + overlap.b, overlap.only_b, "only-b"),
    )
    rows = "".join(
        f'<tr><td>{esc(label)}</td><td class="n" data-overlap="{key}" data-count="{n}">{fmt_int(n)}</td></tr>'
        for label, n, key in cells
    )
    body = (
        f'<section id="overlap"><h2>Overlap of {esc(overlap.a)} and {esc(overlap.b)} ({esc(overlap.unit)})</h2>'
        f"<table>{rows}</table></section>{_overlap_form(a, b, audience)}"
    )
    return _page("overlap", body)


def _html(body: str, status: int = 200) -> web.Response:
    return web.Response(
        text=body,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"},
    )


def _ref(request: web.Request, name: str) -> str:
    value = request.query.get(name, "").strip()
    if len(value) > MAX_REF or "\x00" in value:
        raise web.HTTPBadRequest(text=f"{name}: at most {MAX_REF} characters, no NUL\n")
    return value


class InsightsPage:
    def __init__(self, reads: PageReads) -> None:
        self._reads = reads

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/insights", self.insights)
        app.router.add_get("/insights/overlap", self.overlap)

    async def _read(self, work: Callable[[Any], Awaitable[str]]) -> str:
        try:
            async with self._reads.connection() as conn:
                return await work(conn)
        except PageUnavailable:
            raise web.HTTPServiceUnavailable(text="starting: the database is not connected yet\n") from None
        except UnknownInsightTarget as exc:
            raise web.HTTPNotFound(text=f"{exc}\n") from None
        except _DATABASE_AWAY as exc:
            log.warning("insights_database_unavailable", error=type(exc).__name__)
            raise web.HTTPServiceUnavailable(text="the database is not answering; try again shortly\n") from exc

    async def insights(self, request: web.Request) -> web.Response:
        audience_id = _ref(request, "audience")

        async def work(conn: Any) -> str:
            refs = await audiences(conn)
            if not audience_id:
                return render_index(refs)
            ref = next((r for r in refs if r.audience_id == audience_id), None)
            if ref is None:
                raise UnknownInsightTarget("unknown audience", audience_id=audience_id)
            return render_audience(ref, await history(conn, audience_id, limit=HISTORY_RUNS))

        return _html(await self._read(work))

    async def overlap(self, request: web.Request) -> web.Response:
        a, b, audience = _ref(request, "a"), _ref(request, "b"), _ref(request, "audience")
        if not a or bool(b) == bool(audience):
            raise web.HTTPBadRequest(text="give a list as a, and either another list as b or an exported audience\n")

        async def work(conn: Any) -> str:
            found = await (list_overlap(conn, a, b) if b else list_audience_overlap(conn, a, audience))
            return render_overlap(found, a, b, audience)

        return _html(await self._read(work))
