"""Applying ``recipient-changes``: a partition's batch of upserts and deletes, set-based, in source order.

Per batch: the newest change of each recipient (pure, :func:`latest_changes`) is COPYed into the temporary
table ``changed_recipients``; one statement (:data:`_APPLY`) probes each change's row in ``recipient`` (the
position of the change last applied is a column of the row) and ``recipient_tombstone`` (a deleted
recipient's), drops the changes not newer than what was applied before (a replayed, duplicated or late change is
*stale*: dropped, counted), updates the rows found and inserts the others, each with the change's position; the
deletes leave a tombstone and go in one join (after the IDs shared for them are withdrawn:
:mod:`services.reconcile.recipient_erasure`). Clicks that arrived before their recipient are linked now
(:mod:`services.reconcile.visitor_links`), and the unmatched IDs the changed recipients' keys now match join
their lists (:func:`services.reconcile.rematch.rematch_changed_recipients`).
All in one transaction: a retried batch finds its changes stale and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg

from services.reconcile.consent import LEAVE_IMPORT_LISTS
from services.reconcile.recipient_erasure import ensure_doomed, withdraw_and_delete
from services.reconcile.rematch import rematch_changed_recipients
from services.reconcile.stream_metrics import StreamMetrics
from services.reconcile.visitor_links import ensure_new_links, link_pending_of_changed
from shared.db import acquire
from shared.errors import TransientError
from shared.kafka.deliveries import Delivery
from shared.logging import get_logger
from shared.messages import RecipientChange

log = get_logger(__name__)

STAGE_COLUMNS = ("recipient_id", "is_delete", "position", "email", "crm_id", "first_name", "last_name", "opted_out")

_STAGE = """CREATE TEMP TABLE IF NOT EXISTS changed_recipients (
    recipient_id bigint PRIMARY KEY, is_delete boolean NOT NULL, position bigint NOT NULL, email text, crm_id text,
    first_name text, last_name text, opted_out boolean NOT NULL) ON COMMIT DELETE ROWS"""

# The statements of a batch join changed_recipients on recipient_id and filter it on is_delete and opted_out
# (here, in consent.py, rematch.py, visitor_links.py); its other columns are only copied or compared row by row.
ANALYZE_STAGE = "ANALYZE changed_recipients (recipient_id, is_delete, opted_out)"

# One statement writes a batch's upserts, each change reaching its recipient through one probe of the key.
# ``probe`` reads, for each staged change, the row it would change (not locked): where it is (``ctid``), which
# version it is (``xmin``), whether the change's values differ from it, and whether the change is *stale*:
# older or equal changes lose (equal positions are the same change delivered again), against the row's
# position (the position of its last change: schemas/sql/028) or its tombstone (a deleted recipient's). The
# stale changes leave ``changed_recipients`` (the later statements of the batch see only the changes applied);
# a change of a recipient found is an update of that very row version, by its ``ctid``, and of a recipient not
# found an insert. When another writer (a CSV load, a forget) changed, deleted or inserted a row after the probe
# read it, the update finds a newer version (at another ``ctid``, of another ``xmin``: not updated) or the insert
# its key (a unique violation): the counts differ and the batch is retried (TransientError), its probe then
# reading the new row (tests/integration/test_recipient_concurrent_writes.py). The ``xmin`` says "the version
# the probe read" in the statement itself: not every Postgres release rechecks a TID condition on the newer
# version of a row.
# Rows are locked in ``changed_recipients``' order (the recipients', COPYed sorted) by every batch. A change that
# leaves the row's values as they are (a CDC update of a column the bridge does not read, a replay with a new
# position) moves only its position: the same index entries (a HOT update), no new update time, no rematch.
# Plain statements rather than INSERT … ON CONFLICT, whose speculative insertion cost a third more per row.
# (Before: a statement dropping the stale changes, then an update and an insert each probing the key again,
# and the update a third time for the values it replaced: 8.7 s of statements for the benchmark's million
# changes, one batch at a time, against 7.1 to 7.3 s; issue 18.)
_APPLY = """WITH probe AS MATERIALIZED (
    SELECT c.recipient_id, c.is_delete, c.position, c.email, c.crm_id, c.first_name, c.last_name, c.opted_out,
           r.ctid AS row_ctid, r.xmin AS row_xmin, r.recipient_id IS NOT NULL AS present,
           (r.email, r.crm_id, r.first_name, r.last_name, r.opted_out)
               IS DISTINCT FROM (c.email, c.crm_id, c.first_name, c.last_name, c.opted_out) AS changed,
           coalesce(r.position >= c.position, false)
           OR EXISTS (SELECT 1 FROM recipient_tombstone t
                       WHERE t.recipient_id = c.recipient_id AND t.position >= c.position) AS stale
      FROM changed_recipients c LEFT JOIN recipient r ON r.recipient_id = c.recipient_id),
dropped AS (
    DELETE FROM changed_recipients c USING probe p WHERE p.stale AND c.recipient_id = p.recipient_id
    RETURNING c.is_delete),
updated AS (
    UPDATE recipient r
       SET email = p.email, crm_id = p.crm_id, first_name = p.first_name, last_name = p.last_name,
           opted_out = p.opted_out, position = p.position,
           updated_at = CASE WHEN p.changed THEN now() ELSE r.updated_at END
      FROM probe p
     WHERE p.present AND NOT p.stale AND NOT p.is_delete AND r.ctid = p.row_ctid AND r.xmin = p.row_xmin
    RETURNING p.changed),
inserted AS (
    INSERT INTO recipient (recipient_id, email, crm_id, first_name, last_name, opted_out, position)
    SELECT recipient_id, email, crm_id, first_name, last_name, opted_out, position FROM probe p
     WHERE NOT p.present AND NOT p.stale AND NOT p.is_delete
     ORDER BY recipient_id
    RETURNING 1)
SELECT (SELECT count(*) FROM dropped) AS stale, (SELECT count(*) FROM dropped WHERE NOT is_delete) AS stale_upserts,
       (SELECT count(*) FROM updated WHERE changed) AS changed, (SELECT count(*) FROM updated) AS updated,
       (SELECT count(*) FROM inserted) AS inserted"""
# The batch's deletes (not stale) leave their position as the recipient's tombstone: an older upsert replayed
# later cannot bring the recipient back. Older tombstones of the batch's upserts stay (the row's is newer).
_TOMBSTONES = """INSERT INTO recipient_tombstone (recipient_id, position)
                 SELECT recipient_id, position FROM changed_recipients WHERE is_delete ORDER BY recipient_id
                 ON CONFLICT (recipient_id) DO UPDATE
                    SET position = greatest(recipient_tombstone.position, EXCLUDED.position), deleted_at = now()"""


# The batch's rows are found by their primary key, never by reading the whole table. Left to its costs, the
# planner hashed a sequential scan of recipient (and of the former recipient_version) for every batch (costing
# a random page read per key probe, on a database held in memory): three scans of 500,000 rows, 0.75 s of a 5,000-change
# batch in the benchmark, a cost growing with the table. Without sequential scans it merged or hashed a full
# scan of their primary keys instead (the same growth: 40,000 index entries read for a 5,000-change batch).
# Hash and merge joins are turned off too, for these statements only, then restored: each change is one probe.
# JIT as well: the disabled plan nodes' costs (a scan of the small temporary table) pass jit_above_cost, and
# compiling the statements took 0.25 s of a 5,000-change batch, for plans that are a probe per row.
_BY_KEY = """SELECT concat_ws(',', current_setting('enable_seqscan'), current_setting('enable_hashjoin'),
                             current_setting('enable_mergejoin'), current_setting('jit')),
                   set_config('enable_seqscan', 'off', true), set_config('enable_hashjoin', 'off', true),
                   set_config('enable_mergejoin', 'off', true), set_config('jit', 'off', true)"""
_RESTORE = """SELECT set_config('enable_seqscan', split_part($1, ',', 1), true),
                     set_config('enable_hashjoin', split_part($1, ',', 2), true),
                     set_config('enable_mergejoin', split_part($1, ',', 3), true),
                     set_config('jit', split_part($1, ',', 4), true)"""


async def _by_key(conn: Any, rows: Sequence[tuple[Any, ...]]) -> tuple[int, int, int]:
    """(stale, upserted: values changed or new, unchanged) of the staged ``rows``: :data:`_APPLY`, each row
    reached through its key."""
    settings = await conn.fetchval(_BY_KEY)
    applied = await conn.fetchrow(_APPLY)
    upserts = sum(1 for row in rows if not row[1]) - applied["stale_upserts"]
    if applied["updated"] + applied["inserted"] != upserts:
        raise TransientError(
            "recipients were written concurrently",
            upserts=upserts,
            updated=applied["updated"],
            inserted=applied["inserted"],
        )
    await conn.fetchval(_RESTORE, settings)
    return applied["stale"], applied["changed"] + applied["inserted"], applied["updated"] - applied["changed"]


def latest_changes(changes: Iterable[RecipientChange]) -> list[RecipientChange]:
    """The newest change of each recipient (the first of equal ones: a later one is the same change again),
    in recipient order (rows are then locked in one order by every batch)."""
    latest: dict[int, RecipientChange] = {}
    for change in changes:
        kept = latest.get(change.recipient_id)
        if kept is None or change.version > kept.version:
            latest[change.recipient_id] = change
    return [latest[r] for r in sorted(latest)]


def stage_row(change: RecipientChange) -> tuple[Any, ...]:
    # Read from the model's __dict__: a third cheaper than its attributes, once per change of the stream.
    fields = change.__dict__
    position = fields["position"]
    if position is None:
        position = change.version
    if fields["op"] == "delete":
        return (fields["recipient_id"], True, position, None, None, None, None, False)
    return (
        fields["recipient_id"],
        False,
        position,
        fields["email"],
        fields["crm_id"],
        fields["first_name"],
        fields["last_name"],
        fields["opted_out"],
    )


async def _delete(conn: Any) -> tuple[int, dict[str, int]]:
    """The batch's deletes (still in ``changed_recipients`` once the stale are dropped) withdrawn and deleted."""
    await conn.execute(_TOMBSTONES)
    await ensure_doomed(conn)
    await conn.execute("INSERT INTO doomed_recipients SELECT recipient_id FROM changed_recipients WHERE is_delete")
    return await withdraw_and_delete(conn)


def _affected(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def apply_changes(conn: Any, changes: Sequence[RecipientChange]) -> dict[str, int]:
    """Apply ``changes`` in one transaction; returns counts (upserted, unchanged, deleted, stale, withdrawn,
    rematched)."""
    latest = latest_changes(changes)
    rows = [stage_row(c) for c in latest]
    async with conn.transaction():
        await conn.execute(_STAGE)
        await ensure_new_links(conn)
        await conn.copy_records_to_table("changed_recipients", records=rows, columns=STAGE_COLUMNS)
        # A temporary table has no statistics: without them the planner hashes whole tables for a few rows. Only
        # the columns the statements join or filter on: the text columns' statistics (sorting each) were 86% of
        # the ANALYZE, 3.5 of 4 ms for 5,000 changes (0.7 µs of Postgres a change, issue 18).
        await conn.execute(ANALYZE_STAGE)
        try:
            stale, upserted, unchanged = await _by_key(conn, rows)
        except asyncpg.UniqueViolationError as exc:
            raise TransientError("recipients were written concurrently", error=str(exc)[:200]) from exc
        # A batch without opt-outs or deletes (the usual stream of edits) skips their eleven statements, which
        # would find nothing: half of a batch's round trips.
        left_import_lists = _affected(await conn.execute(LEAVE_IMPORT_LISTS)) if any(row[7] for row in rows) else 0
        deleted, withdrawn = await _delete(conn) if any(row[1] for row in rows) else (0, {})
        linked = await link_pending_of_changed(conn)
        rematched = await rematch_changed_recipients(conn) if upserted else {"matched": 0, "added": 0}
    counts = {
        "upserted": upserted,
        # Newer changes that left the recipient's row as it was (nothing written but their position).
        "unchanged": unchanged,
        "deleted": deleted,
        # Superseded within the batch, or not newer than what was applied before.
        "stale": len(changes) - len(latest) + stale,
        "withdrawn": sum(withdrawn.values()),
        "left_import_lists": left_import_lists,
        "linked": linked["linked"],
        "rematched": rematched["matched"] + linked["matched"],
        "members_added": rematched["added"] + linked["added"],
    }
    log.info("recipient_changes_applied", **counts)
    return counts


class RecipientChanges:
    """The ``recipient-changes`` handler: each delivered batch applied as one set."""

    def __init__(self, pool: Any, metrics: StreamMetrics) -> None:
        self._pool = pool
        self._metrics = metrics

    async def handle(self, deliveries: Sequence[Delivery[RecipientChange]]) -> None:
        async with acquire(self._pool) as conn:
            counts = await apply_changes(conn, [d.message for d in deliveries])
        self._metrics.changes(counts)
        self._metrics.rematched("recipient-changes", counts["rematched"])
