"""Segment events exactly once over time: the Postgres ledger of the events ingest turned into membership.

Within one poll, :mod:`services.ingest.events` drops repeated event ids and keeps each ID's latest change. Across
polls (a producer's retry in a later poll, a redelivery after a restart, an older event arriving late) this
ledger decides, set-based, one statement per poll:

* :meth:`EventLedger.admit`: which events of a poll are new (their ``event_id`` not seen) and not older than
  the change last applied to their (segment, data source, ID): the others are ignored, never applied twice
  nor undoing a newer change;
* :meth:`EventLedger.record`: once their membership batches were acknowledged by Kafka, the events applied and
  each member's latest ``occurred_at``. A crash between the two re-emits the poll under the same run ids
  (derived from the offsets), which reconcile applies once.

Both are kept ``SEGMENT_EVENT_LEDGER_RETENTION_H``; :meth:`EventLedger.purge` removes older rows in batches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from shared.db import Pool, acquire
from shared.logging import get_logger
from shared.messages import SegmentEvent
from shared.retry import is_transient

log = get_logger(__name__)

PURGE_BATCH = 50_000

_ADMIT = """
WITH e AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
        AS e(event_id, segment_id, data_source, id, occurred_at)
)
SELECT e.event_id FROM e
 WHERE NOT EXISTS (SELECT 1 FROM segment_event_seen s WHERE s.event_id = e.event_id)
   AND NOT EXISTS (SELECT 1 FROM segment_member_latest m
                    WHERE m.segment_id = e.segment_id AND m.data_source = e.data_source AND m.id = e.id
                      AND m.occurred_at > e.occurred_at)
"""

_RECORD_SEEN = """
INSERT INTO segment_event_seen (event_id) SELECT DISTINCT unnest($1::text[]) ON CONFLICT (event_id) DO NOTHING
"""

# One row per member (ON CONFLICT cannot update a row twice in one statement): its latest change of the poll,
# the later one in the poll on a tie. A stored newer change stays.
_RECORD_LATEST = """
INSERT INTO segment_member_latest AS m (segment_id, data_source, id, occurred_at, op)
SELECT DISTINCT ON (segment_id, data_source, id) segment_id, data_source, id, occurred_at, op
  FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[]) WITH ORDINALITY
       AS e(segment_id, data_source, id, occurred_at, op, ord)
 ORDER BY segment_id, data_source, id, occurred_at DESC, ord DESC
ON CONFLICT (segment_id, data_source, id) DO UPDATE
   SET occurred_at = EXCLUDED.occurred_at, op = EXCLUDED.op, seen_at = now()
 WHERE m.occurred_at <= EXCLUDED.occurred_at
"""

_PURGE = """
DELETE FROM {table} WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM {table} WHERE seen_at < now() - make_interval(secs => $1) LIMIT $2))
"""


def utc(when: datetime) -> datetime:
    """``when`` with an offset (an upstream may send times without one: UTC), so that all compare."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


class EventLedger:
    def __init__(self, pool: Pool, *, retention_h: float) -> None:
        self._pool = pool
        self._retention_s = retention_h * 3600

    async def admit(self, events: Sequence[SegmentEvent]) -> set[str]:
        """The event ids of ``events`` to apply: not seen before, not older than their member's last change."""
        if not events:
            return set()
        async with acquire(self._pool) as conn:
            rows = await conn.fetch(
                _ADMIT,
                [e.event_id for e in events],
                [e.segment_id for e in events],
                [e.data_source for e in events],
                [e.id for e in events],
                [utc(e.occurred_at) for e in events],
            )
        admitted = {r["event_id"] for r in rows}
        if len(admitted) < len(events):
            log.info("segment_events_ignored", ignored=len(events) - len(admitted), reason="seen or stale")
        return admitted

    async def record(self, events: Sequence[SegmentEvent]) -> None:
        """Remember ``events`` as applied (their batches are in Kafka), and each member's latest change."""
        if not events:
            return
        async with acquire(self._pool) as conn, conn.transaction():
            await conn.execute(_RECORD_SEEN, [e.event_id for e in events])
            await conn.execute(
                _RECORD_LATEST,
                [e.segment_id for e in events],
                [e.data_source for e in events],
                [e.id for e in events],
                [utc(e.occurred_at) for e in events],
                [e.op for e in events],
            )

    async def purge(self) -> int:
        """Remove rows older than the retention, a batch at a time (short locks); returns how many."""
        removed = 0
        for table in ("segment_event_seen", "segment_member_latest"):
            while True:
                async with acquire(self._pool) as conn:
                    status = await conn.execute(_PURGE.format(table=table), self._retention_s, PURGE_BATCH)
                count = int(status.split()[-1])
                removed += count
                if count < PURGE_BATCH:
                    break
        if removed:
            log.info("segment_event_ledger_purged", rows=removed)
        return removed

    async def purge_periodically(self, interval_s: float) -> None:
        """For the service's life: a purge every ``interval_s``; Postgres being away is waited out."""
        while True:
            try:
                await self.purge()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("segment_event_ledger_purge_retry_later", error=type(exc).__name__)
            await asyncio.sleep(interval_s)
