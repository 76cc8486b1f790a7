"""The statements that make ``exported_member`` follow a run the platform applied in full (shared by the
upload-and-done path of the publisher and the receipt poller)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

import asyncpg

from services.publish.recorded_set import drop_prepared

# EXPORT_RECORD_WORK_MEM_MB's default: a 1M-ID run's adds (~100 MB of sort tuples) are sorted in memory; with the
# server's default work_mem (4 MB) the sort spilled to disk, in the run's last transaction.
DEFAULT_APPLY_WORK_MEM_MB: Final = 256

# The run's adds in the index's key order (DISTINCT ON sorts and de-duplicates in one pass): a million
# inserts then append to the primary key instead of landing all over it. Batch after batch, as reconcile
# emits them sorted: the sort then only checks its input (schemas/sql/031).
_RUN_ADDS: Final = """
SELECT $2::text, a.id, $1::uuid, now()
  FROM (SELECT DISTINCT ON (s.id COLLATE "C") s.id COLLATE "C" AS id
          FROM (SELECT adds FROM publish_stage_batch WHERE run_id = $1 AND adds_n > 0 ORDER BY seq) b,
               string_to_table(b.adds, E'\\n') AS s(id)
         ORDER BY s.id COLLATE "C") a
"""
# Into an audience that holds IDs already: ON CONFLICT rather than an anti-join on the table being inserted
# into (the same anti-join on list_member, import, once ran CPU-bound for over ten minutes in the chaos
# scenario).
INSERT_ADDED: Final = (
    "INSERT INTO exported_member (audience_id, id, run_id, exported_at)"
    + _RUN_ADDS
    + "ON CONFLICT (audience_id, id) DO UPDATE SET run_id = EXCLUDED.run_id, exported_at = EXCLUDED.exported_at\n"
)
# Into an audience that holds none (its first run, or a full run that just replaced it): a plain insert, as no
# add can conflict; ON CONFLICT's speculative insertion costs a probe and a confirmation per row.
INSERT_ADDED_FRESH: Final = "INSERT INTO exported_member (audience_id, id, run_id, exported_at)" + _RUN_ADDS
DELETE_REMOVED: Final = """
DELETE FROM exported_member em
 WHERE em.audience_id = $2
   AND em.id IN (SELECT r.id FROM publish_stage_batch b, string_to_table(b.removes, E'\\n') AS r(id)
                  WHERE b.run_id = $1 AND b.removes_n > 0)
"""

# Older failed or cancelled runs of the audience are superseded by one that ended (it was diffed after them,
# and retrying them now could undo it): their staged rows are no longer needed. $1 audience, $2 its start.
DROP_SUPERSEDED_STAGING: Final = """
DELETE FROM publish_stage_batch WHERE run_id IN (
    SELECT run_id FROM run WHERE direction = 'export' AND audience_id = $1 AND state IN ('failed', 'cancelled')
       AND started_at < $2)
"""


async def apply_whole_run(
    conn: Any, run_id: uuid.UUID, audience_id: str, *, full: bool, work_mem_mb: int = DEFAULT_APPLY_WORK_MEM_MB
) -> None:
    """exported_member follows a run applied in full (inside the caller's transaction)."""
    await set_work_mem(conn, work_mem_mb)
    if full:
        # A full run is the complete audience: what the bridge shared before is replaced by it.
        await conn.execute("DELETE FROM exported_member WHERE audience_id = $1", audience_id)
        fresh = True
    else:
        await conn.execute(DELETE_REMOVED, run_id, audience_id)
        fresh = not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM exported_member WHERE audience_id = $1)", audience_id
        )
    if fresh:
        # The audience's runs are applied one after the other (the next one waits while this one is live), so
        # no insert of its IDs comes between the look and the insert; were one to, the plain insert would fail
        # on the key: its savepoint is rolled back and the run applied with ON CONFLICT instead.
        try:
            async with conn.transaction():
                await conn.execute(INSERT_ADDED_FRESH, run_id, audience_id)
            return
        except asyncpg.UniqueViolationError:
            pass
    await conn.execute(INSERT_ADDED, run_id, audience_id)


async def set_work_mem(conn: Any, work_mem_mb: int) -> None:
    """work_mem for the rest of the caller's transaction."""
    await conn.execute("SELECT set_config('work_mem', $1, true)", f"{int(work_mem_mb)}MB")


async def drop_staging(conn: Any, run_id: uuid.UUID, audience_id: str, started_at: datetime) -> None:
    """The ended run's staged rows (and prepared set) go, and those of the audience's older failed runs it
    supersedes."""
    await conn.execute("DELETE FROM publish_stage_batch WHERE run_id = $1", run_id)
    await conn.execute(DROP_SUPERSEDED_STAGING, audience_id, started_at)
    await drop_prepared(conn, run_id, audience_id, started_at)
