"""The import's floor: the best Postgres-only way to reach the end state the system reaches from the same files'
IDs, measured in the same database right after the system's run.

Same start and end state as the system's first import of both audiences: the system's output, once checked,
is cleared (``list_member`` and ``unmatched_id`` truncated), then each audience's snapshot is applied on its
own connection, both side by side (reconcile applies the two snapshots side by side too), each in one
transaction: COPY of its IDs into a temporary table, one hash join of their distinct values with the identity
tables (a LEFT JOIN: the unmatched come out of the same pass), the removal pass (members the snapshot no
longer names are deleted), the unmatched IDs kept in ``unmatched_id`` and the matched recipients inserted in
key order into the real ``list_member`` (its primary key, its second index, its per-statement reference
checks; an ECID list records each member's IDs, as the system does). The result is then checked like the
system's.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from services.reconcile.consent import admitted_sql
from services.reconcile.declared_keys import declared_key_sql
from tests.bench.output_checks import ListExpectation

# The same room to hash as reconcile gives a snapshot (IMPORT_WORK_MEM_MB's default).
WORK_MEM = "256MB"

_MATCH = {
    "ecid": "SELECT s.id, v.recipient_id FROM (SELECT DISTINCT id FROM floor_ids) s "
    "LEFT JOIN visitor_link v ON v.ecid = s.id",
    "declared": "SELECT s.id, r.recipient_id FROM (SELECT DISTINCT id FROM floor_ids) s "
    f"LEFT JOIN recipient r ON {declared_key_sql('email', 'sha256')} = s.id",
}
_ADD = {
    "ecid": "INSERT INTO list_member (list_id, recipient_id, platform_ids) "
    "SELECT $1::bigint, recipient_id, array_agg(id) FROM floor_match "
    f"WHERE recipient_id IS NOT NULL AND {admitted_sql('recipient_id')} GROUP BY recipient_id ORDER BY recipient_id",
    "declared": "INSERT INTO list_member (list_id, recipient_id) "
    "SELECT DISTINCT $1::bigint, recipient_id FROM floor_match "
    f"WHERE recipient_id IS NOT NULL AND {admitted_sql('recipient_id')} ORDER BY 2",
}


async def _apply(conn: Any, audience: ListExpectation, id_type: str, ids: list[str]) -> None:
    list_id = await conn.fetchval("SELECT list_id FROM shared_audience WHERE audience_id = $1", audience.audience_id)
    async with conn.transaction():
        # No JIT, as reconcile (services/reconcile/import_snapshot.py): compiling these plans costs more than it saves.
        await conn.execute(f"SET LOCAL work_mem = '{WORK_MEM}'; SET LOCAL enable_nestloop = off; SET LOCAL jit = off")
        await conn.execute("CREATE TEMP TABLE floor_ids (id text NOT NULL) ON COMMIT DROP")
        await conn.copy_records_to_table("floor_ids", records=((i,) for i in ids), columns=("id",))
        await conn.execute(f"CREATE TEMP TABLE floor_match ON COMMIT DROP AS {_MATCH[id_type]}")
        await conn.execute(
            "DELETE FROM list_member lm WHERE lm.list_id = $1 "
            "AND NOT EXISTS (SELECT 1 FROM floor_match s WHERE s.recipient_id = lm.recipient_id)",
            list_id,
        )
        await conn.execute(
            "INSERT INTO unmatched_id (audience_id, id_type, id, reason, run_id) "
            "SELECT $1::text, $2::text, id, $3::text, $4::uuid FROM floor_match WHERE recipient_id IS NULL ORDER BY id",
            audience.audience_id,
            id_type,
            audience.reason,
            uuid.uuid4(),
        )
        await conn.execute(_ADD[id_type], list_id)


async def measure_floor(pool: Any, snapshots: list[tuple[ListExpectation, str, list[str]]]) -> float:
    """Clear the lists and unmatched IDs, then apply each (audience, ID type, IDs) snapshot on its own connection,
    side by side; returns the seconds from the first COPY to the last commit."""
    async with pool.acquire() as conn:
        await conn.execute("TRUNCATE list_member, unmatched_id")
    conns = [await pool.acquire() for _ in snapshots]
    try:
        started = time.perf_counter()
        await asyncio.gather(
            *(_apply(c, audience, id_type, ids) for c, (audience, id_type, ids) in zip(conns, snapshots, strict=True))
        )
        return time.perf_counter() - started
    finally:
        for c in conns:
            await pool.release(c)
