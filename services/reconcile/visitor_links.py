"""Applying ``visitor-links``: clicks link ECIDs to recipients, and the unmatched ECIDs they concern join lists.

Per batch: the distinct (ECID, recipient) pairs, each at its first sighting (pure, :func:`distinct_links`), are
COPYed into ``link_stage``; one insert links those whose recipient is known; links of a recipient the bridge
does not know yet wait in ``visitor_link_pending`` (the two topics are not ordered with each other: the
recipient's change links them, :func:`link_pending_of_changed`); links of a deleted recipient are dropped. The
ECIDs newly linked are re-matched at once, and only they (:func:`services.reconcile.rematch.rematch_new_links`):
a platform ID unknown this morning joins its lists as soon as the click is in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from services.reconcile.rematch import rematch_new_links
from services.reconcile.stream_metrics import StreamMetrics
from shared.db import acquire
from shared.kafka.deliveries import Delivery
from shared.logging import get_logger
from shared.messages import VisitorLink

log = get_logger(__name__)

_STAGE = """CREATE TEMP TABLE IF NOT EXISTS link_stage (ecid text NOT NULL, recipient_id bigint NOT NULL,
    seen_at timestamptz NOT NULL, PRIMARY KEY (recipient_id, ecid)) ON COMMIT DELETE ROWS"""

# A deleted recipient's click is dropped: its tombstone in recipient_tombstone, and no recipient row (a
# recipient created again after its delete has a row and is linked as usual).
_DROP_DELETED = """
DELETE FROM link_stage s USING recipient_tombstone t
 WHERE t.recipient_id = s.recipient_id
   AND NOT EXISTS (SELECT 1 FROM recipient r WHERE r.recipient_id = s.recipient_id)
"""

_LINK_KNOWN = """
WITH linked AS (
    INSERT INTO visitor_link (ecid, recipient_id, first_seen)
    SELECT s.ecid, s.recipient_id, s.seen_at FROM link_stage s
     WHERE EXISTS (SELECT 1 FROM recipient r WHERE r.recipient_id = s.recipient_id)
     ORDER BY s.ecid, s.recipient_id
    ON CONFLICT DO NOTHING
    RETURNING ecid, recipient_id
)
INSERT INTO new_links (ecid, recipient_id) SELECT ecid, recipient_id FROM linked
"""

_KEEP_PENDING = """
INSERT INTO visitor_link_pending (ecid, recipient_id, seen_at)
SELECT s.ecid, s.recipient_id, s.seen_at FROM link_stage s
 WHERE NOT EXISTS (SELECT 1 FROM recipient r WHERE r.recipient_id = s.recipient_id)
 ORDER BY s.recipient_id, s.ecid
ON CONFLICT (recipient_id, ecid) DO UPDATE SET seen_at = least(visitor_link_pending.seen_at, EXCLUDED.seen_at)
"""

# Pending clicks whose recipient now exists: those of the batch's changed recipients (``changed_recipients``),
# or (``_LINK_ALL_PENDING``, periodically) any, for a click whose recipient committed while the click was kept.
_MOVE_PENDING = """
WITH moved AS (
    DELETE FROM visitor_link_pending p USING recipient r
     WHERE r.recipient_id = p.recipient_id {only}
    RETURNING p.ecid, p.recipient_id, p.seen_at
), linked AS (
    INSERT INTO visitor_link (ecid, recipient_id, first_seen) SELECT ecid, recipient_id, seen_at FROM moved
    ON CONFLICT DO NOTHING
    RETURNING ecid, recipient_id
)
INSERT INTO new_links (ecid, recipient_id) SELECT ecid, recipient_id FROM linked
"""
_LINK_PENDING_OF_CHANGED = _MOVE_PENDING.format(
    only="AND r.recipient_id IN (SELECT recipient_id FROM changed_recipients WHERE NOT is_delete)"
)
_LINK_ALL_PENDING = _MOVE_PENDING.format(only="")


def distinct_links(links: Iterable[VisitorLink]) -> list[tuple[str, int, datetime]]:
    """Each (ECID, recipient) once, at its earliest sighting, in key order."""
    first: dict[tuple[int, str], datetime] = {}
    for link in links:
        key = (link.recipient_id, link.ecid)
        seen = first.get(key)
        if seen is None or link.seen_at < seen:
            first[key] = link.seen_at
    return [(ecid, recipient_id, first[(recipient_id, ecid)]) for recipient_id, ecid in sorted(first)]


def _affected(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def ensure_new_links(conn: Any) -> None:
    await conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS new_links (ecid text NOT NULL, recipient_id bigint NOT NULL) "
        "ON COMMIT DELETE ROWS"
    )


async def apply_links(conn: Any, links: Sequence[VisitorLink]) -> dict[str, int]:
    """Apply ``links`` in one transaction; returns counts (linked, pending, dropped, rematched, members_added)."""
    rows = distinct_links(links)
    async with conn.transaction():
        await conn.execute(_STAGE)
        await ensure_new_links(conn)
        await conn.copy_records_to_table("link_stage", records=rows, columns=("ecid", "recipient_id", "seen_at"))
        # A temporary table has no statistics: without them the planner hashes whole tables for a few rows.
        await conn.execute("ANALYZE link_stage")
        dropped = _affected(await conn.execute(_DROP_DELETED))
        linked = _affected(await conn.execute(_LINK_KNOWN))
        pending = _affected(await conn.execute(_KEEP_PENDING))
        rematched = await rematch_new_links(conn) if linked else {"matched": 0, "added": 0}
    counts = {
        "linked": linked,
        "pending": pending,
        "dropped": dropped,
        "rematched": rematched["matched"],
        "members_added": rematched["added"],
    }
    log.info("visitor_links_applied", **counts)
    return counts


async def link_pending_of_changed(conn: Any) -> dict[str, int]:
    """Inside the caller's transaction (``changed_recipients`` filled): link the clicks that waited for them."""
    linked = _affected(await conn.execute(_LINK_PENDING_OF_CHANGED))
    rematched = await rematch_new_links(conn) if linked else {"matched": 0, "added": 0}
    return {"linked": linked, **rematched}


async def link_all_pending(conn: Any) -> dict[str, int]:
    """Link every pending click whose recipient exists now (the periodic catch-up of a click and its
    recipient committed side by side)."""
    async with conn.transaction():
        await ensure_new_links(conn)
        linked = _affected(await conn.execute(_LINK_ALL_PENDING))
        rematched = await rematch_new_links(conn) if linked else {"matched": 0, "added": 0}
    return {"linked": linked, **rematched}


class VisitorLinks:
    """The ``visitor-links`` handler: each delivered batch applied as one set."""

    def __init__(self, pool: Any, metrics: StreamMetrics) -> None:
        self._pool = pool
        self._metrics = metrics

    async def handle(self, deliveries: Sequence[Delivery[VisitorLink]]) -> None:
        async with acquire(self._pool) as conn:
            counts = await apply_links(conn, [d.message for d in deliveries])
        self._metrics.links(counts)
        self._metrics.rematched("visitor-links", counts["rematched"])
