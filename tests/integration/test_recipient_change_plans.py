"""A batch of recipient changes reaches its rows through their keys, whatever the planner thinks of the tables:
a sequential scan per batch made the cost of a batch grow with the recipient table (issue 18's benchmark)."""

from __future__ import annotations

import pytest

from services.reconcile.recipient_changes import (
    _APPLY,
    _BY_KEY,
    _RESTORE,
    _STAGE,
    STAGE_COLUMNS,
    apply_changes,
)
from shared.messages import RecipientChange
from tests.fixtures.bridge_db import Campaign

pytestmark = pytest.mark.integration

FIRST = 10_000_000  # beyond the fixture's campaign
KNOWN = 60_000
BATCH = 10_000  # STREAM_MAX_BATCH's default


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
            # Half of them known (updates), half new (inserts).
            records=[
                (i, False, 2, f"n{i}@example.com", None, None, None, False)
                for i in range(FIRST + KNOWN - BATCH // 2, FIRST + KNOWN + BATCH // 2)
            ],
            columns=STAGE_COLUMNS,
        )
        await conn.execute("ANALYZE changed_recipients")
        plans, defaults, jitted = {}, {}, {}
        statements = (("apply", _APPLY),)
        for name, sql in statements:
            defaults[name] = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql))
            settings = await conn.fetchval(_BY_KEY)
            plans[name] = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql))
            await conn.fetchval(_RESTORE, settings)
            # What the planner would do with the scans and joins off but JIT left as the session had it (on), for
            # a batch twice this one (STREAM_MAX_BATCH allows 100,000): its cost doubles, the threshold is halved.
            await conn.execute(
                "SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off;"
                " SET LOCAL jit = on; SET LOCAL jit_above_cost = 50000"
            )
            jitted[name] = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql))
            await conn.execute(
                "RESET enable_seqscan; RESET enable_hashjoin; RESET enable_mergejoin; RESET jit; RESET jit_above_cost"
            )
    # What the planner does left alone: a scan of a whole table for some of them.
    assert any("Seq Scan on recipient" in plan for plan in defaults.values()), defaults
    for name, plan in plans.items():
        # Each change one probe of a primary key: no scan, and no join reading a whole index (hash or merge).
        assert "Seq Scan on recipient" not in plan, (name, plan)
        assert "Hash" not in plan, (name, plan)
        assert "Merge" not in plan, (name, plan)
        assert "_pkey on recipient" in plan, (name, plan)
        # And the update reaches the very row version the probe read, by its address: no second probe.
        assert "Tid Scan on recipient" in plan, (name, plan)
        assert plan.count("Index Scan using recipient_pkey on recipient") == 1, (name, plan)
        # Nor compiled: a batch's cost passes jit_above_cost from ~10,000 changes (before, the disabled nodes'
        # costs passed it at any size): compiling took 0.25 s of a 5,000-change batch.
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
