"""The HTTP API's reads and its one write (recording an export request's id), kept apart from the handlers."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from services.reconcile.api_models import (
    AudienceView,
    ExportAccepted,
    RunFile,
    RunView,
    ScheduleList,
    ScheduleView,
)
from services.reconcile.api_problems import Conflict, NotFound
from services.reconcile.export_diff import export_audience_id, list_id_of, load_source
from services.reconcile.exporting import ExportBlocked
from services.reconcile.schedules import Schedule
from services.reconcile.status_files import RUN_FILES_SQL, file_json, file_row
from services.reconcile.status_queries import load_audiences
from shared.messages import AudienceExportRequest
from shared.platform.models import PII
from shared.runs import store
from shared.runs.outcome import int_map

Connection = Any  # asyncpg.Connection, or a pool's proxy of one

_RUN = """SELECT r.run_id, r.request_id, r.direction, r.audience_id, sa.name AS audience_name, r.mode, r.state,
                 r.counts::text AS counts, r.reason, r.started_at, r.finished_at, r.released_by
            FROM run r LEFT JOIN shared_audience sa ON sa.audience_id = r.audience_id"""


def _same_export(a: AudienceExportRequest, b: AudienceExportRequest) -> bool:
    return (a.list_id, a.audience_name, a.data_source, a.mode) == (b.list_id, b.audience_name, b.data_source, b.mode)


async def record_request(conn: Connection, export: AudienceExportRequest) -> None:
    """Check what the request names and record its id; the same id for another export is a :class:`Conflict`.

    The exporter finds the row and goes on as for any request (it records the request the same way)."""
    await list_id_of(conn, export.list_id)
    source = await load_source(conn, export.data_source)
    if PII in source.export_controls:
        raise ExportBlocked(
            f"data source {source.name!r} carries the PII export restriction: campaign recipients may not be "
            "shared into it",
            data_source=source.name,
        )
    stored = await conn.fetchval(
        """INSERT INTO export_request (request_id, audience_id, attempts, requested_by, request, requested_via)
           VALUES ($1, $2, 0, $3, $4::jsonb, $5)
           ON CONFLICT (request_id) DO UPDATE SET request = coalesce(export_request.request, EXCLUDED.request)
           RETURNING request""",
        export.request_id,
        export_audience_id(source.name, export.audience_name),
        export.requested_by,
        export.model_dump_json(),
        export.requested_via,
    )
    if stored is not None and not _same_export(AudienceExportRequest.model_validate_json(stored), export):
        raise Conflict("this request id was used for another export", request_id=str(export.request_id))


async def accepted(conn: Connection, request_id: uuid.UUID, url: str) -> ExportAccepted:
    latest = await store.latest_of_request(conn, request_id)
    if latest is None:
        return ExportAccepted(request_id=request_id, state="requested", run_url=url)
    return ExportAccepted(request_id=request_id, state=latest.state, run_id=latest.run_id, run_url=url)


async def run_view(conn: Connection, any_id: uuid.UUID) -> RunView:
    """A run by its id, or an export request's latest run by the request's id."""
    row = await conn.fetchrow(f"{_RUN} WHERE r.run_id = $1", any_id)
    if row is None:
        row = await conn.fetchrow(f"{_RUN} WHERE r.request_id = $1 ORDER BY r.started_at DESC LIMIT 1", any_id)
    if row is None:
        if await conn.fetchval("SELECT 1 FROM export_request WHERE request_id = $1", any_id):
            return RunView(
                run_id=None,
                request_id=any_id,
                direction="export",
                audience_id=None,
                audience_name=None,
                mode=None,
                state="requested",
                counts={},
                reason=None,
                started_at=None,
                finished_at=None,
                released_by=None,
            )
        raise NotFound("no run or export request with this id", id=str(any_id))
    files = []
    for f in await conn.fetch(RUN_FILES_SQL, row["run_id"]):
        shown = file_json(file_row(f))
        files.append(RunFile.model_validate({k: v for k, v in shown.items() if k not in ("run_id", "audience_id")}))
    values = dict(row)
    values["counts"] = int_map(values["counts"])
    return RunView(**values, files=files)


async def failed_export_request(conn: Connection, run_id: uuid.UUID) -> AudienceExportRequest:
    """The request of a failed export run (what a retry asks for again)."""
    row = await conn.fetchrow(
        """SELECT r.direction, r.state, er.request::text AS request
             FROM run r LEFT JOIN export_request er ON er.request_id = r.request_id
            WHERE r.run_id = $1""",
        run_id,
    )
    if row is None:
        raise store.UnknownRun("no run with this id", run_id=str(run_id))
    if row["direction"] != "export" or row["state"] != "failed":
        raise Conflict("only a failed export run can be retried", run_id=str(run_id), state=row["state"])
    if row["request"] is None:
        raise Conflict("the run's request was not recorded: request the export again", run_id=str(run_id))
    return AudienceExportRequest.model_validate_json(row["request"])


async def audiences(conn: Connection) -> list[AudienceView]:
    return [
        AudienceView(
            audience_id=a.audience_id,
            name=a.name,
            direction=a.direction,
            data_source=a.data_source,
            id_type=a.id_type,
            list_name=a.list_name,
            list_size=a.list_size,
            export_mode=a.export_mode,
            last_state=a.last_state,
            last_started_at=a.last_started_at,
        )
        for a in await load_audiences(conn)
    ]


def schedule_view(s: Schedule) -> ScheduleView:
    return ScheduleView(
        schedule_id=s.schedule_id,
        list=s.list_ref,
        audience=s.audience_name,
        data_source=s.data_source,
        mode=s.mode,
        every_s=s.cadence.every_s,
        cron=s.cadence.cron,
        paused=s.paused,
        created_by=s.created_by,
        last_run_at=s.last_fired_at,
        last_slot=s.last_slot,
        last_request_id=s.last_request_id,
        next_run_at=s.next_run,
    )


def schedule_list(found: Sequence[Schedule]) -> ScheduleList:
    return ScheduleList(schedules=[schedule_view(s) for s in found])
