"""Segment events exactly once over time: the Postgres ledger of the events ingest turned into membership.

Within one poll, :mod:`services.ingest.events` drops repeated event ids and keeps each ID's latest change. Across
polls (a producer's retry in a later poll, a redelivery after a restart, an older event arriving late) this
ledger decides, set-based, one statement per poll (:meth:`EventLedger.claiming`): an event is applied when its
``event_id`` was not seen and it is not older than the change last applied to its (segment, data source, ID),
the ledger's *member*; the others are ignored, never applied twice nor undoing a newer change.

The claim writes the event ids and each member's latest ``occurred_at`` at once, in a transaction committed only
once the poll's membership batches were acknowledged by Kafka: a batch Kafka refused, or a crash before the
commit, leaves nothing recorded, so the poll is emitted again under the same run ids (derived from the offsets),
which reconcile applies once. Until that commit the claimed rows stay locked, which is what makes a member's
changes safe on several partitions at once. ``segment-events`` is keyed by segment and ID
(:mod:`shared.segment_event_key`), so a member's events normally share a partition; but a producer still keying
by segment alone, or one switching keys, puts a member's events on two partitions, handled side by side. The
second claim of a member then waits for the first poll's commit and is decided against it: an older change is
ignored, a newer one is emitted after the first poll's batches were acknowledged, so reconcile (one partition
per audience) applies them in that order. Rows are claimed in key order (event ids, then members), so two polls
claiming common rows wait for each other but never deadlock.

Both tables are kept ``SEGMENT_EVENT_LEDGER_RETENTION_H``; :meth:`EventLedger.purge` removes older rows in batches.
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

# One statement (atomic without a transaction's round trips): the poll's new event ids (a repeat of one seen, or of
# one another poll holds uncommitted, comes back from neither insert: ON CONFLICT waits for that poll's end), then
# one row per member (ON CONFLICT cannot update a row twice in one statement) with its latest change of the poll,
# the later one in the poll on a tie, unless a newer change is stored. The events returned are the new ones of the
# members claimed. Both inserts take their rows in key order: two polls sharing rows cannot deadlock.
_CLAIM = """
WITH e AS (
    SELECT * FROM unnest(string_to_array($1, E'\\n'), string_to_array($2, E'\\n'), string_to_array($3, E'\\n'),
                         string_to_array($4, E'\\n'), string_to_array($5, E'\\n')::timestamptz[],
                         string_to_array($6, E'\\n')) WITH ORDINALITY
        AS e(event_id, segment_id, data_source, id, occurred_at, op, ord)
),
fresh AS (
    INSERT INTO segment_event_seen (event_id) SELECT DISTINCT event_id FROM e ORDER BY event_id
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
),
claimed AS (
    INSERT INTO segment_member_latest AS m (segment_id, data_source, id, occurred_at, op)
    SELECT DISTINCT ON (segment_id, data_source, id) segment_id, data_source, id, occurred_at, op
      FROM e JOIN fresh USING (event_id)
     ORDER BY segment_id, data_source, id, occurred_at DESC, ord DESC
    ON CONFLICT (segment_id, data_source, id) DO UPDATE
       SET occurred_at = EXCLUDED.occurred_at, op = EXCLUDED.op, seen_at = now()
     WHERE m.occurred_at <= EXCLUDED.occurred_at
    RETURNING m.segment_id, m.data_source, m.id
)
SELECT e.event_id FROM e JOIN fresh USING (event_id) JOIN claimed USING (segment_id, data_source, id)
"""

# The claim joins sets of a poll's size whose sizes the planner cannot know (it guesses 200 rows for what an
# INSERT ... RETURNING gives back), so it takes the last join for a nested loop that compares every event with every
# new event id: for a poll of 5,000 events 25,000,000 comparisons, 1.6 s instead of 0.14 s. A prepared statement's
# first five executions on each connection are planned that way, which at 20,000 events/s put ingest minutes
# behind. Nothing in the claim wants a nested loop (its inserts find their conflicts through the keys whatever the
# plan), so the claim's transaction turns them off, and its joins are hashed.
_CLAIM_PLANNING = "SET LOCAL enable_nestloop = off"

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
        """The event ids of ``events`` a claim would apply now (not seen before, not older than their member's
        last change), changing nothing: what an operator or a test asks the ledger."""
        if not events:
            return set()
        async with acquire(self._pool) as conn:
            rows = await conn.fetch(_ADMIT, *columns(events))
        return {r["event_id"] for r in rows}

    @asynccontextmanager
    async def claiming(self, events: Sequence[SegmentEvent]) -> AsyncIterator[set[str]]:
        """The event ids of ``events`` to apply (new, not older than their member's last change), claimed for the
        block, which emits their batches and waits for Kafka's acknowledgement: the claim commits when the block
        ends without an error, and is forgotten otherwise (the poll is emitted again). Until then another poll
        claiming the same members waits."""
        if not events:
            yield set()
            return
        async with acquire(self._pool) as conn, conn.transaction():
            await conn.execute(_CLAIM_PLANNING)
            rows = await conn.fetch(_CLAIM, *columns(events))
            admitted = {r["event_id"] for r in rows}
            if len(admitted) < len(events):
                log.info("segment_events_ignored", ignored=len(events) - len(admitted), reason="seen or stale")
            yield admitted

    async def plan(self, events: Sequence[SegmentEvent]) -> str:
        """The claim's plan for ``events`` as a claim plans it (EXPLAIN: nothing is written): what to look at when
        claims slow down."""
        async with acquire(self._pool) as conn, conn.transaction():
            await conn.execute(_CLAIM_PLANNING)
            rows = await conn.fetch("EXPLAIN " + _CLAIM, *columns(events))
        return "\n".join(r[0] for r in rows)

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
