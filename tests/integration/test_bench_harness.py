"""The benchmarks' harness against the real Postgres: the import floor reaches the system's end state, a wrong
output fails the check (and the whole bench run, with no figure written), latency is seen at commit."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

import tests.bench.__main__ as bench_main
from tests.bench.commit_latency import CommitWatch
from tests.bench.import_bench import _ecid_rows, _email_rows
from tests.bench.import_floor import measure_floor
from tests.bench.output_checks import BenchOutputError, check_lists, import_expectations, require
from tests.fixtures.bridge_db import bench_campaign_pool

pytestmark = pytest.mark.integration
N = 2000


@pytest_asyncio.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with bench_campaign_pool(database_url, N, max_size=4) as created:
        yield created


async def _floor(pool: asyncpg.Pool) -> float:
    ecids, emails = import_expectations(N)
    return await measure_floor(
        pool,
        [
            (ecids, "ecid", [r[0] for r in _ecid_rows(N)]),
            (emails, "declared", [r[0] for r in _email_rows(N)]),
        ],
    )


async def test_the_floor_reaches_the_expected_lists_and_a_wrong_list_fails_the_check(pool: asyncpg.Pool) -> None:
    expected = import_expectations(N)
    with pytest.raises(BenchOutputError, match="before: the output is wrong"):
        await check_lists(pool, expected, "before")  # nothing imported yet
    assert await _floor(pool) > 0
    await check_lists(pool, expected, "floor")
    # The same indexes and checks as the system's writes: each ECID member records its ID.
    tracked = await pool.fetchval(
        "SELECT count(*) FROM list_member lm JOIN shared_audience sa USING (list_id) "
        "WHERE sa.audience_id = 'visitors-5001' AND cardinality(lm.platform_ids) = 1"
    )
    assert tracked == expected[0].members
    # Run again over its own output: the same end state (members replaced, unmatched kept once).
    await _floor(pool)
    await check_lists(pool, expected, "floor again")
    # One member lost, one unmatched ID lost: each fails the check.
    await pool.execute("DELETE FROM list_member WHERE recipient_id = 7")
    with pytest.raises(BenchOutputError, match="visitors-5001: expected"):
        await check_lists(pool, expected, "import")
    await _floor(pool)
    await pool.execute("DELETE FROM unmatched_id WHERE ctid = (SELECT min(ctid) FROM unmatched_id)")
    with pytest.raises(BenchOutputError):
        await check_lists(pool, expected, "import")


async def test_a_member_is_seen_when_its_transaction_commits_not_when_it_starts(pool: asyncpg.Pool) -> None:
    list_id = await pool.fetchval("SELECT list_id FROM shared_audience WHERE audience_id = 'visitors-5001'")
    watch = CommitWatch(pool, list_id)
    sent = time.perf_counter()
    watch.sent(range(1, 11), sent)
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute(
            "INSERT INTO list_member (list_id, recipient_id) SELECT $1, g FROM generate_series(1, 10) g", list_id
        )
        assert await watch.poll_once() == 0  # written, not committed: not visible, not counted
        committed_after = time.perf_counter()
        await tx.commit()
    assert await watch.poll_once() == 10
    assert watch.awaited == {}
    # Each latency runs to a poll after the commit, not to the insert (the transaction's start).
    assert all(ms >= (committed_after - sent) * 1000 for ms in watch.latencies_ms)
    await watch.watch(10, timeout=1)  # all seen: returns at once


async def test_a_bench_run_whose_output_is_wrong_exits_1_and_writes_no_figure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def wrong(work: Path) -> dict[str, Any]:
        require(["visitors-5001: expected 900 members, found 899"], "import 1,000")
        return {"seconds": 1.0}

    monkeypatch.setattr(bench_main, "OUT", tmp_path)
    monkeypatch.setitem(bench_main.SCENARIOS, "wrong", wrong)
    monkeypatch.setenv("BENCH_SCENARIOS", "wrong")
    assert await bench_main.main(None, 1) == 1
    assert not (tmp_path / "results.json").exists()
    assert "BENCHMARK FAILED: import 1,000: the output is wrong" in capsys.readouterr().err


async def test_the_watch_finds_members_committed_out_of_order_and_skips_those_seen(pool: asyncpg.Pool) -> None:
    """It reads a range of members, not each awaited one: out of order, each awaited one is still found once."""
    list_id = await pool.fetchval("SELECT list_id FROM shared_audience WHERE audience_id = 'visitors-5001'")
    watch = CommitWatch(pool, list_id)
    watch.sent(range(1, 21), time.perf_counter())
    insert = "INSERT INTO list_member (list_id, recipient_id) SELECT $1, unnest($2::bigint[])"
    await pool.execute(insert, list_id, [15, 16, 3])
    assert await watch.poll_once() == 3
    assert await watch.poll_once() == 0  # 15 and 16 are read again (above the lowest awaited), not counted again
    await pool.execute(insert, list_id, [1, 2, 4, 5])
    assert await watch.poll_once() == 4
    assert watch.lowest == 6  # the range now starts at the lowest one still awaited
    await pool.execute(insert, list_id, list(range(6, 15)) + list(range(17, 21)))
    await watch.watch(20, timeout=5)
    assert watch.awaited == {}
    assert len(watch.latencies_ms) == 20
