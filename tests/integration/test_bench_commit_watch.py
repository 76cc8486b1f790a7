"""The streaming benchmark's watcher reads only what became visible since its last poll, by index ranges."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from tests.bench.commit_latency import CommitWatch, awaited_ranges
from tests.fixtures.bridge_db import bench_campaign_pool

pytestmark = pytest.mark.integration

N = 20_000


@pytest_asyncio.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with bench_campaign_pool(database_url, N, max_size=2) as created:
        yield created


async def _add(pool: asyncpg.Pool, list_id: int, ids: list[int]) -> None:
    await pool.execute("INSERT INTO list_member (list_id, recipient_id) SELECT $1, unnest($2::bigint[])", list_id, ids)


async def test_a_poll_reads_the_members_committed_since_the_last_one_not_those_seen(pool: asyncpg.Pool) -> None:
    list_id = await pool.fetchval("SELECT list_id FROM shared_audience WHERE audience_id = 'visitors-5001'")
    watch = CommitWatch(pool, list_id)
    watch.sent(range(1, N + 1), time.perf_counter())
    await _add(pool, list_id, list(range(2, N // 2)))  # recipient 1 straggles below them
    assert await watch.poll_once() == N // 2 - 2
    await _add(pool, list_id, list(range(N // 2, N // 2 + 10)))
    # Ten rows read, not the thousands seen above the straggler.
    before = watch.rows_read
    assert await watch.poll_once() == 10
    assert watch.rows_read - before == 10
    await _add(pool, list_id, [1, *range(N // 2 + 10, N + 1)])
    await watch.watch(N, timeout=5)
    assert watch.awaited == {}
    assert watch.rows_read == N  # each member read once over the run


async def test_the_ranges_are_index_scans_even_on_a_large_list(pool: asyncpg.Pool) -> None:
    list_id = await pool.fetchval("SELECT list_id FROM shared_audience WHERE audience_id = 'visitors-5001'")
    await _add(pool, list_id, list(range(1, N + 1)))
    await pool.execute("ANALYZE list_member")
    lows, highs = awaited_ranges([5, 6, 7, 900, 15_000, 15_001])
    plan = await pool.fetchval(
        """EXPLAIN (FORMAT TEXT) SELECT m.recipient_id FROM unnest($2::bigint[], $3::bigint[]) AS r (lo, hi),
                  LATERAL (SELECT recipient_id FROM list_member
                            WHERE list_id = $1 AND recipient_id BETWEEN r.lo AND r.hi OFFSET 0) AS m""",
        list_id,
        lows,
        highs,
    )
    assert "Seq Scan on list_member" not in plan
