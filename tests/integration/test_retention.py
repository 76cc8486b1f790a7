"""The retention job against real Postgres: old unmatched IDs, old finished runs with their details, staging of
ended runs and applied withdrawals go; what is recent, blocked or live stays."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from services.reconcile.retention import RetentionPolicy, purge
from tests.fixtures.bridge_db import Campaign

pytestmark = pytest.mark.integration

POLICY = RetentionPolicy(unmatched_days=30, run_days=90, staging_hours=24)


async def _run(conn: Any, state: str, ended_days_ago: float | None) -> uuid.UUID:
    run_id = uuid.uuid4()
    await conn.execute(
        """INSERT INTO run (run_id, direction, audience_id, mode, state, finished_at)
           VALUES ($1, 'import', 'a', 'full', $2,
                   CASE WHEN $3::float8 IS NULL THEN NULL ELSE now() - make_interval(secs => $3 * 86400) END)""",
        run_id,
        state,
        ended_days_ago,
    )
    await conn.execute("INSERT INTO applied_batch (run_id, seq) VALUES ($1, 0)", run_id)
    # Two staged batches (import_stage_id, a view, shows their IDs).
    await conn.execute(
        "INSERT INTO import_stage_batch (run_id, seq, ids) VALUES ($1, 0, '{x}'), ($1, 1, '{y}')", run_id
    )
    return run_id


async def test_purge_removes_only_what_retention_allows(campaign: Campaign) -> None:
    async with campaign.pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO unmatched_id (audience_id, id_type, id, reason, run_id, last_seen) VALUES
               ('a', 'ecid', 'old', 'unknown_ecid', gen_random_uuid(), now() - interval '31 days'),
               ('a', 'ecid', 'new', 'unknown_ecid', gen_random_uuid(), now() - interval '29 days')"""
        )
        await conn.execute(
            """INSERT INTO visitor_link_pending (ecid, recipient_id, seen_at) VALUES
               (repeat('1', 38), 7, now() - interval '31 days'), (repeat('2', 38), 8, now() - interval '1 day')"""
        )
        old_done = await _run(conn, "succeeded", 91)
        old_blocked = await _run(conn, "blocked", 91)
        recent_failed = await _run(conn, "failed", 2)
        just_ended = await _run(conn, "succeeded", 0.5)
        live = await _run(conn, "progress", None)
        await conn.execute(
            """INSERT INTO exported_member (audience_id, id, run_id) VALUES ('e', 'kept', gen_random_uuid());
               INSERT INTO withdrawn_id (audience_id, id, recipient_id) VALUES ('e', 'kept', 1), ('e', 'applied', 2)"""
        )

        counts = await purge(conn, POLICY)

        assert counts == {"unmatched_ids": 1, "pending_links": 1, "runs": 1, "staging": 2, "withdrawn_ids": 1}
        assert await conn.fetchval("SELECT array_agg(recipient_id) FROM visitor_link_pending") == [8]
        assert {r["id"] for r in await conn.fetch("SELECT id FROM unmatched_id")} == {"new"}
        runs = {r["run_id"] for r in await conn.fetch("SELECT run_id FROM run")}
        assert runs == {old_blocked, recent_failed, just_ended, live}
        batches = {r["run_id"] for r in await conn.fetch("SELECT run_id FROM applied_batch")}
        assert batches == runs
        staged = {r["run_id"] for r in await conn.fetch("SELECT DISTINCT run_id FROM import_stage_id")}
        assert staged == {old_blocked, just_ended, live}
        assert await conn.fetchval("SELECT array_agg(id) FROM withdrawn_id") == ["kept"]
        assert old_done not in runs
        # A second round finds nothing left to do.
        assert set((await purge(conn, POLICY)).values()) == {0}


async def _prepared_set(conn: Any, state: str, ended_days_ago: float) -> str:
    """An export run with a recorded set prepared apart (as publish builds it), ended ``ended_days_ago``."""
    run_id = uuid.uuid4()
    await conn.execute(
        """INSERT INTO run (run_id, direction, audience_id, mode, state, finished_at)
           VALUES ($1, 'export', 'e', 'full', $2, now() - make_interval(secs => $3 * 86400))""",
        run_id,
        state,
        ended_days_ago,
    )
    table = f"exported_member_r{run_id.hex}"
    await conn.execute(f'CREATE TABLE "{table}" (LIKE exported_member INCLUDING DEFAULTS)')
    await conn.execute(
        "INSERT INTO export_prepared_set (run_id, audience_id, table_name, ids) VALUES ($1, 'e', $2, 0)", run_id, table
    )
    return table


async def test_prepared_sets_of_ended_runs_go_with_their_staging_and_their_tables_are_dropped(
    campaign: Campaign,
) -> None:
    async with campaign.pool.acquire() as conn:
        stale = await _prepared_set(conn, "failed", 2)  # past STAGING_RETENTION_HOURS: no retry any more
        retryable = await _prepared_set(conn, "failed", 0.5)
        ancient = await _prepared_set(conn, "cancelled", 91)  # its run goes too

        counts = await purge(conn, POLICY)

        assert counts["staging"] == 1  # the ancient run's set went with the run, before staging was looked at
        assert counts["runs"] == 1
        left = {r["table_name"] for r in await conn.fetch("SELECT table_name FROM export_prepared_set")}
        assert left == {retryable}
        tables = {
            r["relname"]
            for r in await conn.fetch("SELECT relname FROM pg_class WHERE relname LIKE 'exported_member_r%'")
        }
        assert tables == {retryable}, (stale, ancient)
