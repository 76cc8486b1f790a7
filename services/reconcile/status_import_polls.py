"""The status page's "Import polling" section: each import audience with a polling interval (catalog
``poll_every``), its last and next poll (pure HTML, escaped); audiences without one are read at every scan."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.reconcile.import_poll_reads import ImportPollRow
from services.reconcile.status_chart import esc, fmt_time

_UNSEEN = "once ingest has seen it"  # ingest counts the interval's slots from its next scan


def import_polls_section(polls: Sequence[ImportPollRow]) -> str:
    if not polls:
        return (
            '<section id="import-polls"><h2>Import polling</h2><p class="empty-state">Every import audience is '
            "fed at every scan of the drop zone (no <code>poll_every</code> in the catalog).</p></section>"
        )
    rows = []
    for p in polls:
        next_poll = p.next_poll
        rows.append(
            f'<tr class="import-poll" data-audience-id="{esc(p.audience_id)}">'
            f"<td>{esc(p.audience_id)}</td><td>{esc(p.name)}</td><td>{esc(p.data_source)}</td>"
            f'<td class="n">every {p.every_s} s</td>'
            f'<td class="t last-poll">{esc(fmt_time(p.last_polled_at)) if p.last_polled_at else "never"}</td>'
            f'<td class="t next-poll">{esc(fmt_time(next_poll)) if next_poll else _UNSEEN}</td></tr>'
        )
    head = ("audience", "name", "data source", "polled", "last poll (UTC)", "next poll (UTC)")
    head_html = "".join(f"<th>{esc(t)}</th>" for t in head)
    return (
        '<section id="import-polls"><h2>Import polling</h2>'
        f'<div class="scroll"><table id="import-polls-table"><thead><tr>{head_html}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div></section>"
    )


def import_poll_json(p: ImportPollRow) -> dict[str, Any]:
    next_poll = p.next_poll
    return {
        "audience_id": p.audience_id,
        "every_s": p.every_s,
        "last_poll_at": p.last_polled_at.isoformat() if p.last_polled_at else None,
        "last_slot": p.last_slot.isoformat() if p.last_slot else None,
        "next_poll_at": next_poll.isoformat() if next_poll else None,
    }
