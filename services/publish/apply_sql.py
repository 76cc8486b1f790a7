"""The statements that make ``exported_member`` follow a run the platform applied in full (shared by the
upload-and-done path of the publisher and the receipt poller)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

# The run's adds into exported_member, in the index's key order (DISTINCT ON sorts and de-duplicates in
# one pass): a million inserts then append to the primary key instead of landing all over it. ON CONFLICT
# rather than an anti-join on the table being inserted into: the same anti-join on list_member (import)
# once ran CPU-bound for over ten minutes in the chaos scenario.
INSERT_ADDED: Final = """
INSERT INTO exported_member (audience_id, id, run_id, exported_at)
SELECT $2::text, a.id, $1::uuid, now()
  FROM (SELECT DISTINCT ON (s.id COLLATE "C") s.id COLLATE "C" AS id
          FROM publish_stage_batch b, string_to_table(b.adds, E'\\n') AS s(id)
         WHERE b.run_id = $1 AND b.adds_n > 0
         ORDER BY s.id COLLATE "C") a
ON CONFLICT (audience_id, id) DO UPDATE SET run_id = EXCLUDED.run_id, exported_at = EXCLUDED.exported_at
"""
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


async def apply_whole_run(conn: Any, run_id: uuid.UUID, audience_id: str, *, full: bool) -> None:
    """exported_member follows a run applied in full (inside the caller's transaction)."""
    if full:
        # A full run is the complete audience: what the bridge shared before is replaced by it.
        await conn.execute("DELETE FROM exported_member WHERE audience_id = $1", audience_id)
    else:
        await conn.execute(DELETE_REMOVED, run_id, audience_id)
    await conn.execute(INSERT_ADDED, run_id, audience_id)


async def drop_staging(conn: Any, run_id: uuid.UUID, audience_id: str, started_at: datetime) -> None:
    """The ended run's staged rows go, and those of the audience's older failed runs it supersedes."""
    await conn.execute("DELETE FROM publish_stage_batch WHERE run_id = $1", run_id)
    await conn.execute(DROP_SUPERSEDED_STAGING, audience_id, started_at)
