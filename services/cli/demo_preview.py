"""The demo's dry run and schedule: before its real export the demo previews it (a dry run, which must match
what the export then does, and must leave no trace), and it schedules the export daily, as a campaign
workflow would."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import orjson

from services.reconcile import schedules
from services.reconcile.export_dry_run import DryRun, dry_run
from services.reconcile.export_guard import ExportGuards
from services.reconcile.schedule_slots import Cadence
from shared.messages import AudienceExportRequest

DAILY: Final = "0 6 * * *"  # every morning, UTC

Check = tuple[str, bool, str]


async def preview(conn: Any, request: AudienceExportRequest) -> DryRun:
    """The export's dry run, with the bridge's default guards; checks it recorded nothing."""
    before = await conn.fetchval("SELECT count(*) FROM export_request")
    result = await dry_run(conn, request, ExportGuards())
    if await conn.fetchval("SELECT count(*) FROM export_request") != before:  # cannot happen: read-only
        raise AssertionError("the dry run recorded a request")
    return result


async def schedule_daily(conn: Any, request: AudienceExportRequest) -> schedules.Schedule:
    """The demo's schedule of its export (replacing the one a previous demo left)."""
    await conn.execute(
        "DELETE FROM export_schedule WHERE data_source = $1 AND audience_name = $2",
        request.data_source,
        request.audience_name,
    )
    new = schedules.NewSchedule(
        list_ref=request.list_id,
        audience_name=request.audience_name,
        data_source=request.data_source,
        mode=request.mode,
        cadence=Cadence(cron=DAILY),
        created_by=request.requested_by,
        created_via=request.requested_via,
    )
    return await schedules.add_schedule(conn, new)


async def checks(
    conn: Any, preview_run: DryRun | None, schedule: schedules.Schedule | None, since: datetime
) -> list[Check]:
    """The dry run against the export that followed it, and the schedule as reconcile will fire it."""
    if preview_run is None or schedule is None:
        return [("the dry run showed the export before it ran", False, "the export step did not run")]
    counts = await conn.fetchval(
        """SELECT counts::text FROM run WHERE direction = 'export' AND audience_id = $1 AND started_at >= $2
            ORDER BY started_at DESC LIMIT 1""",
        preview_run.audience_id,
        since,
    )
    ran = orjson.loads(counts) if counts else {}
    added, removed = int(ran.get("added", -1)), int(ran.get("removed", -1))
    # would_wait: a run of the audience a former demo left under way; the export then waits for it.
    ran_as_shown = (preview_run.to_add, preview_run.to_remove) == (added, removed)
    matches = preview_run.verdict in ("would_run", "would_wait") and ran_as_shown
    fired = await conn.fetchval("SELECT last_slot FROM export_schedule WHERE schedule_id = $1", schedule.schedule_id)
    next_run = schedule.next_run
    return [
        (
            "the dry run showed the export before it ran",
            matches,
            f"dry run: {preview_run.to_add:,} to add, {preview_run.to_remove:,} to remove "
            f"({preview_run.verdict}); the export added {added:,}, removed {removed:,}",
        ),
        (
            "the export is scheduled daily",
            next_run is not None and fired is None,
            f"schedule {schedule.schedule_id}: cron {DAILY} (UTC), next run {next_run:%Y-%m-%d %H:%M} UTC"
            if next_run
            else "no next run",
        ),
    ]
