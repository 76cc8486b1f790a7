"""The status page's "Schedules" section: each export schedule with its last and next run (pure HTML, escaped)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.reconcile.schedules import Schedule
from services.reconcile.status_chart import esc, fmt_time


def _when(schedule: Schedule) -> str:
    return f"every {schedule.cadence.every_s} s" if schedule.cadence.every_s else f"cron {schedule.cadence.cron} (UTC)"


def schedules_section(schedules: Sequence[Schedule]) -> str:
    if not schedules:
        return (
            '<section id="schedules"><h2>Schedules</h2><p class="empty-state">No export schedule '
            "(<code>audience-bridge schedule add</code>).</p></section>"
        )
    rows = []
    for s in schedules:
        next_run = s.next_run
        rows.append(
            f'<tr class="schedule" data-schedule-id="{s.schedule_id}" data-paused="{str(s.paused).lower()}">'
            f'<td class="n">{s.schedule_id}</td><td>{esc(s.audience_name)}</td><td>{esc(s.list_ref)}</td>'
            f"<td>{esc(s.data_source)}</td><td>{esc(s.mode)}</td><td>{esc(_when(s))}</td>"
            f"<td>{'paused' if s.paused else 'active'}</td>"
            f'<td class="t last-run">{esc(fmt_time(s.last_fired_at)) if s.last_fired_at else "never"}</td>'
            f'<td class="t next-run">{esc(fmt_time(next_run)) if next_run else "-"}</td></tr>'
        )
    head = ("id", "audience", "list", "data source", "mode", "when", "state", "last run (UTC)", "next run (UTC)")
    head_html = "".join(f"<th>{esc(t)}</th>" for t in head)
    return (
        '<section id="schedules"><h2>Schedules</h2>'
        f'<div class="scroll"><table id="schedules-table"><thead><tr>{head_html}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div></section>"
    )


def schedule_json(s: Schedule) -> dict[str, Any]:
    next_run = s.next_run
    return {
        "schedule_id": s.schedule_id,
        "list": s.list_ref,
        "audience": s.audience_name,
        "data_source": s.data_source,
        "mode": s.mode,
        "every_s": s.cadence.every_s,
        "cron": s.cadence.cron,
        "paused": s.paused,
        "last_run_at": s.last_fired_at.isoformat() if s.last_fired_at else None,
        "next_run_at": next_run.isoformat() if next_run else None,
    }
