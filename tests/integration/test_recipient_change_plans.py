"""A batch of recipient changes reaches its rows through their keys, whatever the planner thinks of the tables:
a sequential scan per batch made the cost of a batch grow with the recipient table (issue 18's benchmark)."""

from __future__ import annotations

import pytest

from services.reconcile.recipient_changes import (
    _BUMP_VERSIONS,
    _DROP_STALE,
    _NO_SEQSCAN,
    _STAGE,
    _UPDATE,
    STAGE_COLUMNS,
    apply_changes,
)
from shared.messages import RecipientChange
from tests.fixtures.bridge_db import Campaign

pytestmark = pytest.mark.integration

FIRST = 10_000_000  # beyond the fixture's campaign
KNOWN = 60_000
BATCH = 5_000


async def _fill(campaign: Campaign) -> None:
    """KNOWN recipients and their versions, never analyzed (as a table growing under a stream is, between
    autovacuum's passes)."""
    async with campaign.pool.acquire() as conn:
        await conn.execute(
            f"""INSERT INTO recipient (recipient_id, email) SELECT i, 'p' || i || '@example.com'
                  FROM generate_series({FIRST}, {FIRST + KNOWN - 1}) i;
                INSERT INTO recipient_version (recipient_id, position, deleted) SELECT i, 1, false
                  FROM generate_series({FIRST}, {FIRST + KNOWN - 1}) i"""
        )


async def test_the_batch_statements_probe_keys_instead_of_scanning(campaign: Campaign) -> None:
    await _fill(campaign)
    async with campaign.pool.acquire() as conn, conn.transaction():
        await conn.execute(_STAGE)
        await conn.copy_records_to_table(
            "changed_recipients",
            records=[(i, False, 2, f"n{i}@example.com", None, None, None, False) for i in range(FIRST, FIRST + BATCH)],
            columns=STAGE_COLUMNS,
        )
        await conn.execute("ANALYZE changed_recipients")
        plans = {}
        for name, sql in (("drop_stale", _DROP_STALE), ("bump", _BUMP_VERSIONS), ("update", _UPDATE)):
            default = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql))
            assert "Seq Scan on recipient" in default, name  # what the planner does left alone: a scan
            await conn.fetchval(_NO_SEQSCAN)
            plans[name] = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql))
            await conn.execute("SET LOCAL enable_seqscan = on")
    for name, plan in plans.items():
        assert "Seq Scan on recipient" not in plan, (name, plan)
        assert "_pkey on recipient" in plan, (name, plan)


@pytest.mark.parametrize("before", ["on", "off"])
async def test_a_batch_leaves_the_sessions_planner_setting_as_it_was(campaign: Campaign, before: str) -> None:
    async with campaign.pool.acquire() as conn:
        await conn.execute(f"SET enable_seqscan = {before}")
        counts = await apply_changes(
            conn,
            [RecipientChange(recipient_id=i, op="upsert", position=1, email=f"{i}@x.org") for i in (FIRST, FIRST + 1)],
        )
        assert counts["upserted"] == 2
        assert await conn.fetchval("SELECT current_setting('enable_seqscan')") == before
        await conn.execute("RESET enable_seqscan")
