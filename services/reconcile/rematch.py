"""Re-matching: IDs kept as unmatched join their lists once recipients or visitor links catch up.

Run periodically by reconcile (``REMATCH_INTERVAL_S``) and on demand (``audience-bridge rematch``).
Set-based: one statement per kind of identity, whatever the number of IDs, gathers what matches now into
``member_adds``; the members are then added as an import's delta adds them, an ECID among the IDs that
hold its recipient (:mod:`services.reconcile.member_ids`).
"""

from __future__ import annotations

from typing import Any

from services.reconcile.declared_keys import RECONCILIATION_KEYS, declared_key_sql
from services.reconcile.member_ids import add_members, ensure_member_adds
from shared.ids import KEY_TRANSFORMS
from shared.logging import get_logger

log = get_logger(__name__)


def _ecid(only: str = "") -> str:
    return f"""
WITH matched AS (
    DELETE FROM unmatched_id u
     USING shared_audience sa, visitor_link v
     WHERE u.reason = 'unknown_ecid' AND u.id_type = 'ecid'
       AND sa.audience_id = u.audience_id AND sa.direction = 'import' AND sa.list_id IS NOT NULL
       AND v.ecid = u.id {only}
    RETURNING sa.list_id, v.recipient_id, u.id
), gathered AS (
    INSERT INTO member_adds (list_id, recipient_id, id, tracked)
    SELECT list_id, recipient_id, id, true FROM matched
)
SELECT count(DISTINCT id) AS ids FROM matched
"""  # noqa: S608 - ``only`` is one of the fixed restrictions below


def _declared(key: str, transform: str, only: str = "") -> str:
    return f"""
WITH matched AS (
    DELETE FROM unmatched_id u
     USING shared_audience sa, data_source ds, recipient r
     WHERE u.reason = 'unknown_declared_id' AND u.id_type = 'declared'
       AND sa.audience_id = u.audience_id AND sa.direction = 'import' AND sa.list_id IS NOT NULL
       AND ds.data_source_id = sa.data_source_id
       AND ds.reconciliation_key = '{key}' AND ds.key_transform = '{transform}'
       AND {declared_key_sql(key, transform)} = u.id {only}
    RETURNING sa.list_id, r.recipient_id, u.id
), gathered AS (
    INSERT INTO member_adds (list_id, recipient_id, id, tracked)
    SELECT list_id, recipient_id, id, false FROM matched
)
SELECT count(DISTINCT id) AS ids FROM matched
"""  # noqa: S608 - key and transform come from the fixed whitelists below


_STATEMENTS = [_ecid()] + [_declared(k, t) for k in RECONCILIATION_KEYS for t in KEY_TRANSFORMS]

# Re-matching only what a stream of changes concerns (services/reconcile/recipient_changes.py, visitor_links.py):
# the ECIDs of the temporary table ``new_links`` (ecid), the recipients of ``changed_recipients`` (recipient_id).
_ECID_OF_NEW_LINKS = _ecid("AND u.id IN (SELECT ecid FROM new_links)")
_DECLARED_OF_CHANGED = {
    (k, t): _declared(k, t, "AND r.recipient_id IN (SELECT recipient_id FROM changed_recipients)")
    for k in RECONCILIATION_KEYS
    for t in KEY_TRANSFORMS
}
# The keys (and their transforms) for which an import list waits on unmatched declared IDs: a batch of changes
# runs only their statements. Each statement is planned again for every batch (the staged table's statistics
# change with it): six plans and round trips a batch, ~0.7 ms each (0.41-0.47 s of the benchmark's million
# changes), when one or none finds anything (issue 18). Not restricted by reason: a probe of the key's first
# columns, whatever else the audience holds.
_DECLARED_WAITING = """
SELECT DISTINCT ds.reconciliation_key AS key, ds.key_transform AS transform
  FROM shared_audience sa JOIN data_source ds ON ds.data_source_id = sa.data_source_id
 WHERE sa.direction = 'import' AND sa.list_id IS NOT NULL
   AND EXISTS (SELECT 1 FROM unmatched_id u WHERE u.audience_id = sa.audience_id AND u.id_type = 'declared')
"""


async def rematch(conn: Any) -> dict[str, int]:
    """Match what can now be matched; returns how many IDs matched and list members were added."""
    ids = 0
    async with conn.transaction():
        await ensure_member_adds(conn)
        for sql in _STATEMENTS:
            ids += await conn.fetchval(sql)
        members = await add_members(conn)
    if ids:
        log.info("rematched", ids=ids, members_added=members)
    return {"matched": ids, "added": members}


async def rematch_new_links(conn: Any) -> dict[str, int]:
    """Inside the caller's transaction: the unmatched ECIDs of ``new_links`` that now match join their lists."""
    await ensure_member_adds(conn)
    ids = int(await conn.fetchval(_ECID_OF_NEW_LINKS))
    return {"matched": ids, "added": await add_members(conn) if ids else 0}


async def rematch_changed_recipients(conn: Any) -> dict[str, int]:
    """Inside the caller's transaction: unmatched declared IDs that the keys of ``changed_recipients`` now match."""
    await ensure_member_adds(conn)
    ids = 0
    for waiting in await conn.fetch(_DECLARED_WAITING):
        sql = _DECLARED_OF_CHANGED[(waiting["key"], waiting["transform"])]
        ids += int(await conn.fetchval(sql))
    return {"matched": ids, "added": await add_members(conn) if ids else 0}
