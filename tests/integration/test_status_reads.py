"""The status page's reads against a real Postgres: its own pool, shared reads, cheap list sizes, timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio
from pydantic import SecretStr

from services.reconcile.status_reads import PAGE_APPLICATION_NAME, PageReads, PageUnavailable, create_page_pool
from shared.settings import DatabaseSettings
from tests.fixtures.bridge_db import Campaign, add_export_run, campaign  # noqa: F401

VIEWERS = 50


@pytest_asyncio.fixture
async def page_pool(campaign: Campaign, database_url: str) -> AsyncIterator[asyncpg.Pool]:  # noqa: F811
    settings = DatabaseSettings(database_url=SecretStr(database_url))
    pool = await create_page_pool(settings, size=2, statement_timeout_s=0.5)
    yield pool
    await pool.close()


async def _members(pool: asyncpg.Pool, audience_id: str, count: int) -> None:
    list_id = await pool.fetchval(
        "SELECT list_id FROM shared_audience WHERE audience_id = $1",
        audience_id,
    )
    await pool.execute(
        "INSERT INTO list_member (list_id, recipient_id) SELECT $1, g FROM generate_series(1, $2) g "
        "ON CONFLICT DO NOTHING",
        list_id,
        count,
    )


def _sizes(snapshot: object) -> dict[str, int]:
    return {a.audience_id: a.list_size for a in snapshot.audiences}  # type: ignore[attr-defined]


async def test_many_viewers_share_one_read_and_list_sizes_are_counted_rarely(
    campaign: Campaign,  # noqa: F811
    page_pool: asyncpg.Pool,
) -> None:
    await add_export_run(campaign.pool, audience_id="a", data_source="visitors")
    await _members(campaign.pool, "a", 150)
    reads = PageReads(lambda: page_pool, acquire_timeout_s=5, cache_s=60, list_sizes_refresh_s=3600)

    snapshots = await asyncio.gather(*(reads.snapshot() for _ in range(VIEWERS)))
    assert reads.reads == 1, "50 concurrent viewers, one read"
    assert all(s is snapshots[0] for s in snapshots)
    assert _sizes(snapshots[0]) == {"a": 150}

    # Past the snapshot's time the page reads again, but the sizes are the last count until their refresh.
    await _members(campaign.pool, "a", 180)
    later = PageReads(lambda: page_pool, acquire_timeout_s=5, cache_s=0, list_sizes_refresh_s=3600)
    assert _sizes(await later.snapshot()) == {"a": 180}
    assert _sizes(await later.snapshot()) == {"a": 180}
    await _members(campaign.pool, "a", 200)
    assert _sizes(await later.snapshot()) == {"a": 180}
    assert (later.reads, later.list_counts) == (3, 1)
    fresh = PageReads(lambda: page_pool, acquire_timeout_s=5, cache_s=0, list_sizes_refresh_s=0)
    assert _sizes(await fresh.snapshot()) == {"a": 200}


async def test_the_page_pool_is_its_own_read_only_sessions_with_a_statement_timeout(
    page_pool: asyncpg.Pool,
) -> None:
    reads = PageReads(lambda: page_pool, acquire_timeout_s=5, cache_s=0, list_sizes_refresh_s=0)
    async with reads.connection() as conn:
        assert await conn.fetchval("SHOW application_name") == PAGE_APPLICATION_NAME
        assert await conn.fetchval("SHOW statement_timeout") == "500ms"
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await conn.execute("CREATE TABLE page_may_not_write (x int)")
        with pytest.raises(asyncpg.QueryCanceledError):
            await conn.execute("SELECT pg_sleep(2)")


async def test_a_viewer_waits_at_most_the_acquire_timeout_for_a_busy_pool(page_pool: asyncpg.Pool) -> None:
    reads = PageReads(lambda: page_pool, acquire_timeout_s=0.2, cache_s=0, list_sizes_refresh_s=0)
    async with page_pool.acquire(), page_pool.acquire():  # both connections held (viewers, a slow read)
        with pytest.raises(TimeoutError):
            await reads.snapshot()
    assert (await reads.snapshot()).generated_at is not None


async def test_before_the_pool_exists_the_page_says_it_is_starting() -> None:
    reads = PageReads(lambda: None, acquire_timeout_s=1, cache_s=0, list_sizes_refresh_s=0)
    with pytest.raises(PageUnavailable):
        await reads.snapshot()
