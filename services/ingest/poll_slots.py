"""Import polling intervals: an import audience with ``poll_every`` (catalog) is fed no more often than that.

A delivered batch is read at a scan where at least one import audience its origin may feed
(:func:`~services.ingest.routing.feeds`) is *open*: it has no interval (fed at every scan, as always), or one
of its slots is due. Otherwise the batch stays in the zone, untouched, until the earliest next slot among
those audiences; once read it feeds all of them as usual (a batch is read once, whole). A batch no import
audience takes is never held (it is filed unread as before).

Slots are those of export schedules (:mod:`shared.schedule_slots`): ``anchor + k * every`` with the anchor
the moment ingest first saw the interval (or saw it changed), so they never drift. The last slot polled is
kept in Postgres (``import_poll``) and written only once the scan at that slot completed: a restart neither
polls again before the next slot nor misses one, and slots missed while ingest was down are polled ONCE
(the latest) on recovery.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from services.ingest.audiences import ImportAudience
from services.ingest.routing import Origin, feeds
from shared.db import acquire
from shared.schedule_slots import Cadence, due_slot, next_run


@dataclass(frozen=True, slots=True)
class PollInterval:
    """One import audience's polling interval and its polls so far."""

    audience_id: str
    every_s: int
    anchor: datetime
    last_slot: datetime | None = None
    last_polled_at: datetime | None = None

    @property
    def cadence(self) -> Cadence:
        return Cadence(every_s=self.every_s)

    def due(self, now: datetime) -> datetime | None:
        """The slot to poll at ``now`` (None: not due)."""
        return due_slot(self.cadence, created=self.anchor, anchor=self.anchor, last_slot=self.last_slot, now=now)

    def next_poll(self) -> datetime:
        return next_run(self.cadence, created=self.anchor, anchor=self.anchor, last_slot=self.last_slot)


@dataclass(frozen=True, slots=True)
class PollWindow:
    """Which import audiences may be fed at one scan: ``due`` holds the slot each interval polls at it."""

    intervals: Mapping[str, PollInterval] = field(default_factory=dict)
    due: Mapping[str, datetime] = field(default_factory=dict)

    def is_open(self, audience_id: str) -> bool:
        return audience_id not in self.intervals or audience_id in self.due


def poll_window(intervals: Iterable[PollInterval], now: datetime) -> PollWindow:
    by_id = {i.audience_id: i for i in intervals}
    due = {audience_id: slot for audience_id, i in by_id.items() if (slot := i.due(now)) is not None}
    return PollWindow(by_id, due)


def held(window: PollWindow, audiences: Iterable[ImportAudience], origin: Origin) -> bool:
    """Whether a batch of this origin waits for a later scan: some audience may take it, none of them is open."""
    feeding = [a for a in audiences if feeds(a, origin)]
    return bool(feeding) and not any(window.is_open(a.audience_id) for a in feeding)


# Intervals set in the catalog become rows; a changed interval starts counting afresh; a removed one goes.
_SYNC = """
INSERT INTO import_poll (audience_id, every_s)
SELECT audience_id, poll_every_s FROM shared_audience WHERE direction = 'import' AND poll_every_s IS NOT NULL
ON CONFLICT (audience_id) DO UPDATE SET every_s = EXCLUDED.every_s, anchor = now(), last_slot = NULL
 WHERE import_poll.every_s <> EXCLUDED.every_s
"""
_DROP = """
DELETE FROM import_poll ip USING shared_audience sa
 WHERE sa.audience_id = ip.audience_id AND (sa.poll_every_s IS NULL OR sa.direction <> 'import')
"""
_READ = "SELECT audience_id, every_s, anchor, last_slot, last_polled_at FROM import_poll ORDER BY audience_id"
_RECORD = """
UPDATE import_poll ip SET last_slot = d.slot, last_polled_at = now()
  FROM unnest($1::text[], $2::timestamptz[]) AS d (audience_id, slot)
 WHERE ip.audience_id = d.audience_id AND (ip.last_slot IS NULL OR ip.last_slot < d.slot)
"""


async def read_intervals(conn: asyncpg.Connection[Any] | Any) -> list[PollInterval]:
    """Every import audience's interval and polls (for the status page as for the scan)."""
    return [PollInterval(**dict(row)) for row in await conn.fetch(_READ)]


class ImportPolls:
    """The intervals' state in Postgres: read at the start of a scan, the due slots recorded at its end."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def window(self) -> PollWindow:
        async with acquire(self._pool) as conn, conn.transaction():
            await conn.execute(_SYNC)
            await conn.execute(_DROP)
            intervals = await read_intervals(conn)
            now: datetime = await conn.fetchval("SELECT now()")
        return poll_window(intervals, now)

    async def record(self, window: PollWindow) -> None:
        """The scan at the window's due slots completed: those slots are polled."""
        if window.due:
            ids = sorted(window.due)
            await self._pool.execute(_RECORD, ids, [window.due[i] for i in ids])
