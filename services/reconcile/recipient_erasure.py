"""Erasure: what the bridge shared for recipients about to be deleted, withdrawn from every exported audience.

A deleted recipient leaves every list (``list_member`` cascades) and loses its visitor links (likewise); the IDs
the bridge exported for it are recorded in ``withdrawn_id`` before the row goes, so that the next export of each
audience that held them removes them, whatever its mode (:mod:`services.reconcile.export_diff`).

Set-based: the recipients are the temporary table ``doomed_recipients`` (recipient_id); one statement per kind of
data source (ECIDs through visitor_link, declared keys through the recipient's key expression) joins them with
``exported_member`` of the export audiences of that kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from services.reconcile.declared_keys import RECONCILIATION_KEYS, declared_key_sql
from shared.ids import KEY_TRANSFORMS

_ECID = """
INSERT INTO withdrawn_id (audience_id, id, recipient_id)
SELECT e.audience_id, e.id, d.recipient_id
  FROM doomed_recipients d
  JOIN visitor_link v ON v.recipient_id = d.recipient_id
  JOIN shared_audience sa ON sa.direction = 'export'
  JOIN data_source ds ON ds.data_source_id = sa.data_source_id AND ds.id_type = 'ecid'
  JOIN exported_member e ON e.audience_id = sa.audience_id AND e.id = v.ecid
ON CONFLICT DO NOTHING
RETURNING audience_id, id
"""


def _declared(key: str, transform: str) -> str:
    return f"""
INSERT INTO withdrawn_id (audience_id, id, recipient_id)
SELECT e.audience_id, e.id, d.recipient_id
  FROM doomed_recipients d
  JOIN recipient r ON r.recipient_id = d.recipient_id
  JOIN shared_audience sa ON sa.direction = 'export'
  JOIN data_source ds ON ds.data_source_id = sa.data_source_id AND ds.id_type = 'declared'
   AND ds.reconciliation_key = '{key}' AND ds.key_transform = '{transform}'
  JOIN exported_member e ON e.audience_id = sa.audience_id AND e.id = {declared_key_sql(key, transform)}
ON CONFLICT DO NOTHING
RETURNING audience_id, id
"""  # noqa: S608 - key and transform come from fixed whitelists


_STATEMENTS = [_ECID] + [_declared(k, t) for k in RECONCILIATION_KEYS for t in KEY_TRANSFORMS]


async def ensure_doomed(conn: Any) -> None:
    await conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS doomed_recipients (recipient_id bigint PRIMARY KEY) ON COMMIT DELETE ROWS"
    )


async def withdraw_and_delete(conn: Any) -> tuple[int, dict[str, int]]:
    """Inside the caller's transaction: record the exported IDs of ``doomed_recipients`` as withdrawn, then
    delete those recipients (their memberships, links and pending links go with them). Returns (recipients
    deleted, IDs withdrawn per audience)."""
    withdrawn: dict[str, int] = {}
    for sql in _STATEMENTS:
        for row in await conn.fetch(sql):
            withdrawn[row["audience_id"]] = withdrawn.get(row["audience_id"], 0) + 1
    await conn.execute(
        "DELETE FROM visitor_link_pending p USING doomed_recipients d WHERE p.recipient_id = d.recipient_id"
    )
    status = await conn.execute(
        "DELETE FROM recipient r USING doomed_recipients d WHERE r.recipient_id = d.recipient_id"
    )
    return int(status.rsplit(" ", 1)[-1]), withdrawn


@dataclass(frozen=True, slots=True)
class WithdrawnAudience:
    """An export audience that held IDs of forgotten recipients: what its next export removes."""

    audience_id: str
    name: str
    list_id: int | None
    data_source: str
    mode: str | None
    ids: int


@dataclass(frozen=True, slots=True)
class ForgetReport:
    forgotten: list[int]
    unknown: list[int]
    lists: dict[str, int] = field(default_factory=dict)  # list name -> members removed
    visitor_links: int = 0
    audiences: list[WithdrawnAudience] = field(default_factory=list)


_LISTS_HELD = """SELECT l.name, count(*) AS members FROM list_member lm JOIN list l USING (list_id)
                   JOIN doomed_recipients d USING (recipient_id) GROUP BY l.name ORDER BY l.name"""
_AUDIENCES = """SELECT sa.audience_id, sa.name, sa.list_id, ds.name AS data_source, sa.export_mode AS mode
                  FROM shared_audience sa JOIN data_source ds USING (data_source_id)
                 WHERE sa.audience_id = ANY($1::text[]) ORDER BY sa.audience_id"""


async def forget(conn: Any, recipient_ids: Sequence[int]) -> ForgetReport:
    """An erasure request, at once: the recipients leave every list, their links go, what was shared for them is
    withdrawn (their IDs leave each export audience on its next export), and a tombstone keeps a replayed older
    change from bringing them back. One transaction; returns what was removed where."""
    async with conn.transaction():
        await ensure_doomed(conn)
        await conn.execute(
            """INSERT INTO doomed_recipients SELECT DISTINCT r FROM unnest($1::bigint[]) r
                WHERE EXISTS (SELECT 1 FROM recipient WHERE recipient_id = r)""",
            list(recipient_ids),
        )
        found = sorted(r["recipient_id"] for r in await conn.fetch("SELECT recipient_id FROM doomed_recipients"))
        lists = {r["name"]: r["members"] for r in await conn.fetch(_LISTS_HELD)}
        links = int(
            await conn.fetchval("SELECT count(*) FROM visitor_link v JOIN doomed_recipients d USING (recipient_id)")
        )
        # The tombstone keeps the position of the last change applied: a replayed older change stays stale, a
        # genuinely newer one (the campaign re-adding the person) still applies.
        await conn.execute(
            """INSERT INTO recipient_tombstone (recipient_id, position)
               SELECT d.recipient_id, coalesce(r.position, 0)
                 FROM doomed_recipients d JOIN recipient r USING (recipient_id)
               ON CONFLICT (recipient_id) DO UPDATE
                  SET position = greatest(recipient_tombstone.position, EXCLUDED.position), deleted_at = now()"""
        )
        _, withdrawn = await withdraw_and_delete(conn)
        rows = await conn.fetch(_AUDIENCES, list(withdrawn))
    audiences = [WithdrawnAudience(**dict(r), ids=withdrawn[r["audience_id"]]) for r in rows]
    unknown = sorted(set(recipient_ids) - set(found))
    return ForgetReport(forgotten=found, unknown=unknown, lists=lists, visitor_links=links, audiences=audiences)
