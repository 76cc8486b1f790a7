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

_ECID = """
WITH matched AS (
    DELETE FROM unmatched_id u
     USING shared_audience sa, visitor_link v
     WHERE u.reason = 'unknown_ecid' AND u.id_type = 'ecid'
       AND sa.audience_id = u.audience_id AND sa.direction = 'import' AND sa.list_id IS NOT NULL
       AND v.ecid = u.id
    RETURNING sa.list_id, v.recipient_id, u.id
), gathered AS (
    INSERT INTO member_adds (list_id, recipient_id, id, tracked)
    SELECT list_id, recipient_id, id, true FROM matched
)
SELECT count(DISTINCT id) AS ids FROM matched
"""


def _declared(key: str, transform: str) -> str:
    return f"""
WITH matched AS (
    DELETE FROM unmatched_id u
     USING shared_audience sa, data_source ds, recipient r
     WHERE u.reason = 'unknown_declared_id' AND u.id_type = 'declared'
       AND sa.audience_id = u.audience_id AND sa.direction = 'import' AND sa.list_id IS NOT NULL
       AND ds.data_source_id = sa.data_source_id
       AND ds.reconciliation_key = '{key}' AND ds.key_transform = '{transform}'
       AND {declared_key_sql(key, transform)} = u.id
    RETURNING sa.list_id, r.recipient_id, u.id
), gathered AS (
    INSERT INTO member_adds (list_id, recipient_id, id, tracked)
    SELECT list_id, recipient_id, id, false FROM matched
)
SELECT count(DISTINCT id) AS ids FROM matched
"""  # noqa: S608 - key and transform come from the fixed whitelists below


_STATEMENTS = [_ECID] + [_declared(k, t) for k in RECONCILIATION_KEYS for t in KEY_TRANSFORMS]


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
