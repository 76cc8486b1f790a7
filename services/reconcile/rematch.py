"""Re-matching: IDs kept as unmatched join their lists once recipients or visitor links catch up.

Run periodically by reconcile (``REMATCH_INTERVAL_S``) and on demand (``audience-bridge rematch``).
Set-based: one statement per kind of identity, whatever the number of IDs.
"""

from __future__ import annotations

from typing import Any

from services.reconcile.declared_keys import RECONCILIATION_KEYS, declared_key_sql
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
), added AS (
    INSERT INTO list_member (list_id, recipient_id)
    SELECT DISTINCT list_id, recipient_id FROM matched
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(DISTINCT id) FROM matched) AS ids, (SELECT count(*) FROM added) AS members
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
), added AS (
    INSERT INTO list_member (list_id, recipient_id)
    SELECT DISTINCT list_id, recipient_id FROM matched
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(DISTINCT id) FROM matched) AS ids, (SELECT count(*) FROM added) AS members
"""  # noqa: S608 - key and transform come from the fixed whitelists below


_STATEMENTS = [_ECID] + [_declared(k, t) for k in RECONCILIATION_KEYS for t in KEY_TRANSFORMS]


async def rematch(conn: Any) -> dict[str, int]:
    """Match what can now be matched; returns how many IDs matched and list members were added."""
    ids = members = 0
    async with conn.transaction():
        for sql in _STATEMENTS:
            row = await conn.fetchrow(sql)
            ids += row["ids"]
            members += row["members"]
    if ids:
        log.info("rematched", ids=ids, members_added=members)
    return {"matched": ids, "added": members}
