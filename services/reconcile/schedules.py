"""The ``export_schedule`` table: schedules as the CLI, the HTTP API and the status page see them.

Every write goes through here (add, pause, resume, remove; the scheduler records the slots it fired). A
schedule names its list, audience and data source as an export request does; they are checked when it is
added, so a typo is an error now rather than a failed run at three in the morning.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from services.reconcile.export_diff import list_id_of, load_source
from services.reconcile.schedule_slots import BadCadence, Cadence, next_run
from shared.errors import PermanentError
from shared.messages import AudienceExportRequest

Connection = Any  # asyncpg.Connection, or a pool's proxy of one

MODES = ("append", "mirror", "full")


class UnknownSchedule(PermanentError):
    """No schedule with this id."""


@dataclass(frozen=True, slots=True)
class NewSchedule:
    list_ref: str
    audience_name: str
    data_source: str
    mode: str
    cadence: Cadence
    created_by: str
    created_via: str = "cli"


@dataclass(frozen=True, slots=True)
class Schedule:
    schedule_id: int
    list_ref: str
    audience_name: str
    data_source: str
    mode: str
    cadence: Cadence
    paused: bool
    created_by: str
    created_via: str
    created_at: datetime
    anchor: datetime
    last_slot: datetime | None
    last_fired_at: datetime | None
    last_request_id: uuid.UUID | None

    @property
    def next_run(self) -> datetime | None:
        """When it fires next (None while paused)."""
        if self.paused:
            return None
        return next_run(self.cadence, created=self.created_at, anchor=self.anchor, last_slot=self.last_slot)

    def request(self, slot_request: uuid.UUID) -> AudienceExportRequest:
        """The ordinary export request a slot fires; it asks on behalf of whoever created the schedule."""
        return AudienceExportRequest(
            request_id=slot_request,
            list_id=self.list_ref,
            audience_name=self.audience_name,
            data_source=self.data_source,
            mode=self.mode,
            requested_by=self.created_by,
            requested_via=self.created_via,
        )


def _cadence(row: Any) -> Cadence:
    try:
        return Cadence(every_s=row["every_s"], cron=row["cron"])
    except BadCadence as exc:  # a row edited by hand: say which
        raise BadCadence(exc.message, schedule_id=row["schedule_id"], **exc.context) from None


def _schedule(row: Any) -> Schedule:
    return Schedule(
        schedule_id=row["schedule_id"],
        list_ref=row["list_ref"],
        audience_name=row["audience_name"],
        data_source=row["data_source"],
        mode=row["mode"],
        cadence=_cadence(row),
        paused=row["paused"],
        created_by=row["created_by"],
        created_via=row["created_via"],
        created_at=row["created_at"],
        anchor=row["anchor"],
        last_slot=row["last_slot"],
        last_fired_at=row["last_fired_at"],
        last_request_id=row["last_request_id"],
    )


async def add_schedule(conn: Connection, new: NewSchedule) -> Schedule:
    if new.mode not in MODES:
        raise PermanentError("mode must be append, mirror or full", mode=new.mode)
    await list_id_of(conn, new.list_ref)
    await load_source(conn, new.data_source)
    try:  # what each slot will send, checked now rather than at the first slot
        AudienceExportRequest(
            list_id=new.list_ref,
            audience_name=new.audience_name,
            data_source=new.data_source,
            mode=new.mode,
            requested_by=new.created_by,
            requested_via=new.created_via,
        )
    except ValidationError as exc:
        raise PermanentError("the schedule's export request would be invalid", problems=str(exc)) from None
    row = await conn.fetchrow(
        """INSERT INTO export_schedule (list_ref, audience_name, data_source, mode, every_s, cron,
                                        created_by, created_via)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (data_source, audience_name) DO NOTHING
           RETURNING *""",
        new.list_ref,
        new.audience_name,
        new.data_source,
        new.mode,
        new.cadence.every_s,
        new.cadence.cron,
        new.created_by,
        new.created_via,
    )
    if row is None:
        existing = await conn.fetchval(
            "SELECT schedule_id FROM export_schedule WHERE data_source = $1 AND audience_name = $2",
            new.data_source,
            new.audience_name,
        )
        raise PermanentError(
            "this audience has a schedule already: remove it first", schedule_id=existing, audience=new.audience_name
        )
    return _schedule(row)


async def list_schedules(conn: Connection) -> list[Schedule]:
    return [_schedule(r) for r in await conn.fetch("SELECT * FROM export_schedule ORDER BY schedule_id")]


async def get_schedule(conn: Connection, schedule_id: int) -> Schedule:
    row = await conn.fetchrow("SELECT * FROM export_schedule WHERE schedule_id = $1", schedule_id)
    if row is None:
        raise UnknownSchedule("no schedule with this id", schedule_id=schedule_id)
    return _schedule(row)


async def set_paused(conn: Connection, schedule_id: int, paused: bool) -> Schedule:
    """Pause or resume. Resuming moves the anchor to now: the slots that fell while it was paused are skipped."""
    row = await conn.fetchrow(
        """UPDATE export_schedule
              SET paused = $2, anchor = CASE WHEN paused AND NOT $2 THEN now() ELSE anchor END
            WHERE schedule_id = $1 RETURNING *""",
        schedule_id,
        paused,
    )
    if row is None:
        raise UnknownSchedule("no schedule with this id", schedule_id=schedule_id)
    return _schedule(row)


async def remove_schedule(conn: Connection, schedule_id: int) -> None:
    status = await conn.execute("DELETE FROM export_schedule WHERE schedule_id = $1", schedule_id)
    if status.endswith(" 0"):
        raise UnknownSchedule("no schedule with this id", schedule_id=schedule_id)


@dataclass(frozen=True, slots=True)
class BrokenSchedule:
    """A row that no longer makes a schedule (edited by hand: a cadence or request that cannot be used)."""

    schedule_id: int
    error: str


async def due_for_update(conn: Connection) -> list[Schedule | BrokenSchedule]:
    """The active schedules, locked for the caller's transaction (the scheduler decides which are due)."""
    rows = await conn.fetch("SELECT * FROM export_schedule WHERE NOT paused ORDER BY schedule_id FOR UPDATE")
    found: list[Schedule | BrokenSchedule] = []
    for row in rows:
        try:
            schedule = _schedule(row)
            schedule.request(uuid.uuid4())  # what its slots would send
        except (BadCadence, ValidationError) as exc:
            found.append(BrokenSchedule(row["schedule_id"], str(exc)))
            continue
        found.append(schedule)
    return found


async def record_fired(conn: Connection, schedule_id: int, slot: datetime, request_id: uuid.UUID) -> None:
    await conn.execute(
        """UPDATE export_schedule SET last_slot = $2, last_fired_at = now(), last_request_id = $3
            WHERE schedule_id = $1""",
        schedule_id,
        slot,
        request_id,
    )
