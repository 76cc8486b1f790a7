"""``audience-bridge schedule add|list|pause|resume|remove``: exports on a fixed interval or a cron expression.

Schedules are kept in Postgres (``export_schedule``) and fired by reconcile
(:mod:`services.reconcile.scheduler`); these commands only write and read the table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from services.cli.common import app, cli_requester, console, run_sync, with_db
from services.reconcile import schedules
from services.reconcile.schedule_slots import Cadence, check_cron, parse_every

schedule_app = typer.Typer(help="Export schedules (fired by reconcile).", no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at is not None else "-"


def cadence_of(every: str | None, cron: str | None) -> Cadence:
    """``--every`` or ``--cron``, exactly one, checked (a bad one is a BadCadence: exit 2 with why)."""
    return Cadence(
        every_s=parse_every(every) if every is not None else None, cron=check_cron(cron) if cron is not None else None
    )


@schedule_app.command("add")
def schedule_add(
    list_ref: Annotated[str, typer.Option("--list", help="Campaign list (name or id).")],
    audience: Annotated[str, typer.Option(help="Name of the shared audience on the platform.")],
    data_source: Annotated[str, typer.Option(help="Data source whose IDs identify the audience.")],
    mode: Annotated[str, typer.Option(help="append, mirror or full.")] = "append",
    every: Annotated[str | None, typer.Option(help="An interval: 15m, 1h, 1d (at least 1 minute).")] = None,
    cron: Annotated[str | None, typer.Option(help='A cron expression, UTC: "0 */3 * * *".')] = None,
) -> None:
    """Export a list on a schedule: each slot fires an ordinary export request, on behalf of whoever added it."""

    async def add(conn: Any) -> schedules.Schedule:
        new = schedules.NewSchedule(
            list_ref=list_ref,
            audience_name=audience,
            data_source=data_source,
            mode=mode,
            cadence=cadence_of(every, cron),
            created_by=cli_requester(),
            created_via="cli",
        )
        return await schedules.add_schedule(conn, new)

    added = run_sync(with_db(add))
    console.print(
        f"schedule {added.schedule_id}: {added.cadence.describe()}, next run {_when(added.next_run)}", highlight=False
    )


@schedule_app.command("list")
def schedule_list() -> None:
    """Every schedule, with its last and next run."""
    found = run_sync(with_db(schedules.list_schedules))
    table = Table("id", "list", "audience", "data source", "mode", "when", "state", "last run", "next run")
    for s in found:
        table.add_row(
            str(s.schedule_id),
            s.list_ref,
            s.audience_name,
            s.data_source,
            s.mode,
            s.cadence.describe(),
            "paused" if s.paused else "active",
            _when(s.last_fired_at),
            _when(s.next_run),
        )
    console.print(table)


@schedule_app.command("pause")
def schedule_pause(schedule_id: int) -> None:
    """Stop firing the schedule (until resume)."""
    run_sync(with_db(lambda conn: schedules.set_paused(conn, schedule_id, True)))
    console.print(f"schedule {schedule_id} paused")


@schedule_app.command("resume")
def schedule_resume(schedule_id: int) -> None:
    """Fire the schedule again from its next slot (the slots missed while paused are skipped)."""
    resumed = run_sync(with_db(lambda conn: schedules.set_paused(conn, schedule_id, False)))
    console.print(f"schedule {schedule_id} resumed: next run {_when(resumed.next_run)}", highlight=False)


@schedule_app.command("remove")
def schedule_remove(schedule_id: int) -> None:
    """Delete the schedule (the runs it fired stay)."""
    run_sync(with_db(lambda conn: schedules.remove_schedule(conn, schedule_id)))
    console.print(f"schedule {schedule_id} removed")
