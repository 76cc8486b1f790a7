"""Segment events exactly once over time: the Postgres ledger of the events ingest turned into membership.

Within one poll, :mod:`services.ingest.events` drops repeated event ids and keeps each ID's latest change. Across
polls (a producer's retry in a later poll, a redelivery after a restart, an older event arriving late) this
ledger decides, set-based, one statement per poll:

* :meth:`EventLedger.admit`: which events of a poll are new (their ``event_id`` not seen) and not older than
  the change last applied to their (segment, data source, ID): the others are ignored, never applied twice
  nor undoing a newer change;
* :meth:`EventLedger.recording`: the events applied and each member's latest ``occurred_at``, committed only once
  their membership batches were acknowledged by Kafka (the statement runs while the acknowledgement is awaited,
  one round trip, in a transaction). A crash before the commit re-emits the poll under the same run ids
  (derived from the offsets), which reconcile applies once.

Both are kept ``SEGMENT_EVENT_LEDGER_RETENTION_H``; :meth:`EventLedger.purge` removes older rows in batches.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from shared.db import Pool, acquire
from shared.logging import get_logger
from shared.messages import SegmentEvent
from shared.retry import is_transient

log = get_logger(__name__)

PURGE_BATCH = 50_000

# A poll's columns travel as one text each, its values joined by newlines (none can hold one: IDs and event ids
# have no whitespace, data sources no control character, times are ISO 8601), split by Postgres: binding them as
# arrays cost ingest twice the CPU (asyncpg encodes an array element by element, in Python for the checks). Both
# statements read them as the same rows ``e``.
_ADMIT = """
WITH e AS (
    SELECT * FROM unnest(string_to_array($1, E'\\n'), string_to_array($2, E'\\n'), string_to_array($3, E'\\n'),
                         string_to_array($4, E'\\n'), string_to_array($5, E'\\n')::timestamptz[],
                         string_to_array($6, E'\\n')) WITH ORDINALITY
        AS e(event_id, segment_id, data_source, id, occurred_at, op, ord)
)
SELECT e.event_id FROM e
 WHERE NOT EXISTS (SELECT 1 FROM segment_event_seen s WHERE s.event_id = e.event_id)
   AND NOT EXISTS (SELECT 1 FROM segment_member_latest m
                    WHERE m.segment_id = e.segment_id AND m.data_source = e.data_source AND m.id = e.id
                      AND m.occurred_at > e.occurred_at)
"""

# One statement (atomic without a transaction's round trips): the event ids, and one row per member (ON CONFLICT
# cannot update a row twice in one statement) with its latest change of the poll, the later one in the poll on a
# tie. A stored newer change stays.
_RECORD = """
WITH e AS (
    SELECT * FROM unnest(string_to_array($1, E'\\n'), string_to_array($2, E'\\n'), string_to_array($3, E'\\n'),
                         string_to_array($4, E'\\n'), string_to_array($5, E'\\n')::timestamptz[],
                         string_to_array($6, E'\\n')) WITH ORDINALITY
        AS e(event_id, segment_id, data_source, id, occurred_at, op, ord)
),
seen AS (
    INSERT INTO segment_event_seen (event_id) SELECT DISTINCT event_id FROM e ON CONFLICT (event_id) DO NOTHING
)
INSERT INTO segment_member_latest AS m (segment_id, data_source, id, occurred_at, op)
SELECT DISTINCT ON (segment_id, data_source, id) segment_id, data_source, id, occurred_at, op
  FROM e
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


def columns(events: Sequence[SegmentEvent]) -> tuple[str, str, str, str, str, str]:
    """The events' event ids, segments, data sources, IDs, times and operations, each column one text."""
    return (
        "\n".join([e.event_id for e in events]),
        "\n".join([e.segment_id for e in events]),
        "\n".join([e.data_source for e in events]),
        "\n".join([e.id for e in events]),
        "\n".join([utc(e.occurred_at).isoformat() for e in events]),
        "\n".join([e.op for e in events]),
    )


class EventLedger:
    def __init__(self, pool: Pool, *, retention_h: float) -> None:
        self._pool = pool
        self._retention_s = retention_h * 3600

    async def admit(self, events: Sequence[SegmentEvent]) -> set[str]:
        """The event ids of ``events`` to apply: not seen before, not older than their member's last change."""
        if not events:
            return set()
        async with acquire(self._pool) as conn:
            rows = await conn.fetch(_ADMIT, *columns(events))
        admitted = {r["event_id"] for r in rows}
        if len(admitted) < len(events):
            log.info("segment_events_ignored", ignored=len(events) - len(admitted), reason="seen or stale")
        return admitted

    async def record(self, events: Sequence[SegmentEvent]) -> None:
        """Remember ``events`` as applied (their batches are in Kafka), and each member's latest change."""
        async with self.recording(events):
            pass

    @asynccontextmanager
    async def recording(self, events: Sequence[SegmentEvent]) -> AsyncIterator[None]:
        """Remember ``events`` as applied, and each member's latest change, if the block (which waits for Kafka to
        acknowledge their batches) ends without an error. The statement runs while the block does, in a
        transaction committed only after it: a poll's wait for Kafka and its ledger write overlap, and a batch
        Kafka refused (or a crash before the commit) leaves nothing recorded, so the poll is emitted again under
        the same run ids."""
        if not events:
            yield
            return
        async with acquire(self._pool) as conn, conn.transaction():
            writing = asyncio.ensure_future(conn.execute(_RECORD, *columns(events)))
            try:
                yield
            finally:
                # A statement is never abandoned half-way on its connection: it ends, then the transaction
                # commits (the block succeeded) or rolls back (the block's error goes on).
                await asyncio.wait([writing])
                if not writing.cancelled():
                    writing.exception()  # retrieved, also when the block's error is the one that goes on
            writing.result()

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
