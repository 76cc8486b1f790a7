"""What the status page shows, read from Postgres: the SQL, the rows it returns, and :func:`load_snapshot`.

Read-only. :func:`load_snapshot` reads everything in one read-only REPEATABLE READ transaction, so the
page's sections agree with each other (a run counted as blocked is also the one listed as blocked). The
rows are plain frozen dataclasses: the renderer (:mod:`services.reconcile.status_page`) is tested with
hand-made rows and no database.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Final

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from services.reconcile.import_poll_reads import ImportPollRow, load_import_polls
from services.reconcile.schedules import Schedule, list_schedules
from shared.db import acquire
from shared.logging import redact_text
from shared.runs.states import ENDED_STATES, LIVE_STATES

if TYPE_CHECKING:  # status_files renders with status_chart, which reads this module's rows
    from services.reconcile.status_files import FileRow

RECENT_RUNS: Final = 50
RECENT_DELIVERIES: Final = 50

# A pool's connection inside ``async with pool.acquire()``, or a bare one (both answer the same calls).
Connection = asyncpg.Connection | PoolConnectionProxy


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
    requested_by: str | None = None  # an export's requester and channel (api, cli, kafka): the audit trail
    requested_via: str | None = None

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
        elif self.state in ENDED_STATES:
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
class DeliveryRow:
    """A delivered batch of outbound files that fed no list: rejected, or filed unread (``processed`` with
    a reason: delivered for a data source no import audience takes)."""

    batch_root: str
    state: str
    reason: str
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    generated_at: datetime
    audiences: Sequence[AudienceRow] = ()
    runs: Sequence[RunRow] = ()  # newest first
    blocked: Sequence[RunRow] = ()  # oldest first: the longest-waiting on top
    unmatched: Sequence[UnmatchedRow] = ()
    totals: Mapping[str, int] = field(default_factory=dict)
    deliveries: Sequence[DeliveryRow] = ()  # not imported, newest first
    files: Sequence[FileRow] = ()  # export files, newest first: uploaded vs applied (status_files)
    schedules: Sequence[Schedule] = ()  # export schedules, by id (status_schedules)
    import_polls: Sequence[ImportPollRow] = ()  # import audiences' polling intervals (status_import_polls)


_AUDIENCES = """
SELECT sa.audience_id, sa.name, sa.direction, ds.name AS data_source, ds.id_type, sa.list_id, l.name AS list_name,
       0 AS list_size, sa.export_mode, sa.platform_segment_id,
       lr.state AS last_state, lr.started_at AS last_started_at
  FROM shared_audience sa
  JOIN data_source ds ON ds.data_source_id = sa.data_source_id
  LEFT JOIN list l ON l.list_id = sa.list_id
  LEFT JOIN LATERAL (SELECT r.state, r.started_at FROM run r WHERE r.audience_id = sa.audience_id
                      ORDER BY r.started_at DESC LIMIT 1) lr ON true
 ORDER BY sa.direction DESC, lower(sa.name), sa.audience_id
 LIMIT 500"""

_RUN_COLUMNS = """r.run_id, r.direction, r.audience_id, sa.name AS audience_name, r.mode, r.state,
       r.counts::text AS counts, r.match_rate::text AS match_rate, r.reason, r.started_at, r.updated_at,
       r.finished_at, r.released_by, r.requested_by, r.requested_via
  FROM run r LEFT JOIN shared_audience sa ON sa.audience_id = r.audience_id"""

_RECENT_RUNS = f"SELECT {_RUN_COLUMNS} ORDER BY r.started_at DESC, r.run_id LIMIT $1"
# Only import runs can be released (release_run); the partial index run_state_idx serves this. 'blocked' stays
# a literal so that even a generic plan can prove the index's predicate.
_BLOCKED_RUNS = (
    f"SELECT {_RUN_COLUMNS} WHERE r.state = 'blocked' AND r.direction = 'import' "
    "ORDER BY r.started_at, r.run_id LIMIT 200"
)

_UNMATCHED = """
SELECT u.audience_id, sa.name AS audience_name, u.reason, count(*) AS ids, max(u.last_seen) AS last_seen
  FROM unmatched_id u LEFT JOIN shared_audience sa ON sa.audience_id = u.audience_id
 GROUP BY u.audience_id, sa.name, u.reason
 ORDER BY u.audience_id, u.reason"""

# Served by processed_file_noted_idx (schemas/sql/009).
_DELIVERIES = """
SELECT batch_root, state, reason, finished_at FROM processed_file
 WHERE reason IS NOT NULL
 ORDER BY finished_at DESC
 LIMIT $1"""

# $1: the lifecycle's live states, so "running" counts what shared.runs.states calls live, not a copy of it.
_TOTALS = """
SELECT (SELECT count(*) FROM run) AS runs,
       (SELECT count(*) FROM run WHERE state = ANY($1::text[])) AS running,
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
        # Stored reasons are redacted when written (shared.runs.store); one written around it is here.
        reason=redact_text(row["reason"]) if row["reason"] else None,
        started_at=row["started_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
        released_by=row["released_by"],
        requested_by=row["requested_by"],
        requested_via=row["requested_via"],
    )


async def load_runs(conn: Connection, limit: int = RECENT_RUNS) -> list[RunRow]:
    return [_run(r) for r in await conn.fetch(_RECENT_RUNS, limit)]


async def load_snapshot(pool: asyncpg.Pool, *, runs: int = RECENT_RUNS) -> StatusSnapshot:
    async with acquire(pool) as conn:
        return await read_snapshot(conn, runs=runs)


async def read_snapshot(conn: Connection, *, runs: int = RECENT_RUNS) -> StatusSnapshot:
    """Everything but the list sizes (0 here: counting them is services.reconcile.status_reads' business)."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        audiences = [AudienceRow(**dict(r)) for r in await conn.fetch(_AUDIENCES)]
        recent = await load_runs(conn, runs)
        blocked = [_run(r) for r in await conn.fetch(_BLOCKED_RUNS)]
        unmatched = [UnmatchedRow(**dict(r)) for r in await conn.fetch(_UNMATCHED)]
        totals_row = await conn.fetchrow(_TOTALS, sorted(LIVE_STATES))
        deliveries = [DeliveryRow(**dict(r)) for r in await conn.fetch(_DELIVERIES, RECENT_DELIVERIES)]
        files = await _load_files(conn)
        scheduled = await list_schedules(conn)
        import_polls = await load_import_polls(conn)
        generated_at: datetime = await conn.fetchval("SELECT now()")
    totals = {k: int(v) for k, v in dict(totals_row).items()} if totals_row is not None else {}
    return StatusSnapshot(
        generated_at=generated_at,
        audiences=audiences,
        runs=recent,
        blocked=blocked,
        unmatched=unmatched,
        totals=totals,
        deliveries=deliveries,
        files=files,
        schedules=scheduled,
        import_polls=import_polls,
    )


async def _load_files(conn: Connection) -> list[FileRow]:
    from services.reconcile.status_files import load_files  # imported here: see the TYPE_CHECKING import

    return await load_files(conn)


async def load_audiences(conn: Connection) -> list[AudienceRow]:
    """The audiences as the status page lists them (the HTTP API's ``GET /api/audiences``)."""
    return [AudienceRow(**dict(r)) for r in await conn.fetch(_AUDIENCES)]
