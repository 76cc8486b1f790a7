"""A batch of recipient changes reaches its rows through their keys, whatever the planner thinks of the tables:
a sequential scan per batch made the cost of a batch grow with the recipient table (issue 18's benchmark)."""

from __future__ import annotations

import pytest

from services.reconcile.recipient_changes import (
    _BY_KEY,
    _DROP_STALE,
    _INSERT,
    _RESTORE,
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
    """KNOWN recipients at a position, never analyzed (as a table growing under a stream is, between
    autovacuum's passes)."""
    async with campaign.pool.acquire() as conn:
        await conn.execute(
            f"""INSERT INTO recipient (recipient_id, email, position) SELECT i, 'p' || i || '@example.com', 1
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
        plans, defaults, jitted = {}, {}, {}
        statements = (("drop_stale", _DROP_STALE), ("update", _UPDATE), ("insert", _INSERT))
        for name, sql in statements:
            defaults[name] = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql))
            settings = await conn.fetchval(_BY_KEY)
            plans[name] = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql))
            await conn.fetchval(_RESTORE, settings)
            # What the planner would do with the scans and joins off but JIT left as the session had it (on).
            await conn.execute("SET LOCAL enable_seqscan = off; SET LOCAL jit = on; SET LOCAL jit_above_cost = 100000")
            jitted[name] = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql))
            await conn.execute("RESET enable_seqscan; RESET jit; RESET jit_above_cost")
    # What the planner does left alone: a scan of a whole table for some of them.
    assert any("Seq Scan on recipient" in plan for plan in defaults.values()), defaults
    for name, plan in plans.items():
        # Each change one probe of a primary key: no scan, and no join reading a whole index (hash or merge).
        assert "Seq Scan on recipient" not in plan, (name, plan)
        assert "Hash" not in plan, (name, plan)
        assert "Merge" not in plan, (name, plan)
        assert "_pkey on recipient" in plan, (name, plan)
        # Nor compiled: the disabled nodes' costs passed jit_above_cost (0.25 s of a 5,000-change batch).
        assert "JIT" not in plan, (name, plan)
    assert any("JIT" in plan for plan in jitted.values()), jitted


@pytest.mark.parametrize("before", ["on", "off"])
async def test_a_batch_leaves_the_sessions_planner_setting_as_it_was(campaign: Campaign, before: str) -> None:
    async with campaign.pool.acquire() as conn:
        other = "off" if before == "on" else "on"
        await conn.execute(
            f"SET enable_seqscan = {before}; SET enable_hashjoin = {other}; SET enable_mergejoin = {before}"
        )
        counts = await apply_changes(
            conn,
            [RecipientChange(recipient_id=i, op="upsert", position=1, email=f"{i}@x.org") for i in (FIRST, FIRST + 1)],
        )
        assert counts["upserted"] == 2
        settings = (
            "SELECT current_setting('enable_seqscan'), current_setting('enable_hashjoin'), "
            "current_setting('enable_mergejoin')"
        )
        row = await conn.fetchrow(settings)
        assert row is not None
        assert tuple(row) == (before, other, before)
        await conn.execute("RESET enable_seqscan; RESET enable_hashjoin; RESET enable_mergejoin")
