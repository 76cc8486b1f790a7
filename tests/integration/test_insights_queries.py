"""Audience insights' SQL against a real Postgres: overlaps equal Python set intersections of the rows, history
sizes follow the runs' counts, and the overlap of large lists is read set-wise (``INSIGHTS_OVERLAP_N`` members,
50k by default, to keep `make test` short; the README's figure for 1M was measured with INSIGHTS_OVERLAP_N=1000000)."""

from __future__ import annotations

import os
import time
import uuid

import asyncpg
import pytest

from services.reconcile.insights_queries import (
    UnknownInsightTarget,
    history,
    list_audience_overlap,
    list_overlap,
)
from tests.fixtures.bridge_db import Campaign, add_export_run, add_import_audience

pytestmark = pytest.mark.integration

N = int(os.environ.get("INSIGHTS_OVERLAP_N", "50000"))


async def _list(pool: asyncpg.Pool, name: str) -> int:
    list_id: int = await pool.fetchval("INSERT INTO list (name) VALUES ($1) RETURNING list_id", name)
    return list_id


async def test_overlaps_are_exact_and_set_wise(campaign: Campaign) -> None:
    pool = campaign.pool
    # Recipients beyond the campaign's 200, each with one ECID (recipient 2 keeps its second one).
    await pool.execute(
        """INSERT INTO recipient (recipient_id, email) SELECT g, 'r' || g || '@example.com'
             FROM generate_series(201, $1) g""",
        N,
    )
    await pool.execute(
        """INSERT INTO visitor_link (ecid, recipient_id)
           SELECT '9' || lpad(g::text, 37, '0'), g FROM generate_series(201, $1) g""",
        N,
    )
    a, b = await _list(pool, "big a"), await _list(pool, "big b")
    # a: every recipient up to 60 %; b: every other recipient from 40 %.
    await pool.execute(
        "INSERT INTO list_member (list_id, recipient_id) SELECT $1, g FROM generate_series(1, $2) g", a, N * 6 // 10
    )
    await pool.execute(
        "INSERT INTO list_member (list_id, recipient_id) SELECT $1, g FROM generate_series($2, $3, 2) g",
        b,
        N * 4 // 10,
        N,
    )
    export_run = await add_export_run(pool, audience_id="exp-big", data_source="visitors")
    # The audience holds the ECIDs of recipients 100..N/2 and some IDs of nobody.
    await pool.execute(
        """INSERT INTO exported_member (audience_id, id, run_id)
           SELECT 'exp-big', v.ecid, $1::uuid FROM visitor_link v WHERE v.recipient_id BETWEEN 100 AND $2
           UNION ALL SELECT 'exp-big', '8' || lpad(g::text, 37, '0'), $1::uuid FROM generate_series(1, 1000) g""",
        export_run,
        N // 2,
    )
    await pool.execute("ANALYZE")

    async with pool.acquire() as conn:
        started = time.perf_counter()
        lists = await list_overlap(conn, "big a", str(b))
        lists_s = time.perf_counter() - started
        started = time.perf_counter()
        shared = await list_audience_overlap(conn, "big a", "exp-big")
        shared_s = time.perf_counter() - started
    print(f"overlap of {N}-recipient lists: {lists_s:.2f} s; list vs exported audience: {shared_s:.2f} s")

    set_a = {r[0] for r in await pool.fetch("SELECT recipient_id FROM list_member WHERE list_id = $1", a)}
    set_b = {r[0] for r in await pool.fetch("SELECT recipient_id FROM list_member WHERE list_id = $1", b)}
    assert (lists.a_size, lists.b_size, lists.both) == (len(set_a), len(set_b), len(set_a & set_b))
    assert (lists.only_a, lists.only_b) == (len(set_a - set_b), len(set_b - set_a))
    list_ids = {
        r[0]
        for r in await pool.fetch(
            "SELECT v.ecid FROM list_member lm JOIN visitor_link v USING (recipient_id) WHERE lm.list_id = $1", a
        )
    }
    exported = {r[0] for r in await pool.fetch("SELECT id FROM exported_member WHERE audience_id = 'exp-big'")}
    assert (shared.a_size, shared.b_size, shared.both) == (len(list_ids), len(exported), len(list_ids & exported))
    assert shared.unit == "IDs"

    async with pool.acquire() as conn:
        with pytest.raises(UnknownInsightTarget):
            await list_overlap(conn, "big a", "no such list")
        with pytest.raises(UnknownInsightTarget):
            await list_audience_overlap(conn, "big a", "no-such-audience")


async def test_history_sizes_follow_the_runs(campaign: Campaign) -> None:
    pool = campaign.pool
    await add_import_audience(pool, "seg-1", "visitors", 1)
    list_id = await pool.fetchval("SELECT list_id FROM shared_audience WHERE audience_id = 'seg-1'")
    await pool.execute(
        "INSERT INTO list_member (list_id, recipient_id) SELECT $1, g FROM generate_series(1, 30) g", list_id
    )
    runs = [  # (state, added, removed, unmatched, rate): sizes 20, 35, (failed: no change), 30
        ("succeeded", 20, 0, 1, 0.9),
        ("succeeded", 20, 5, 2, 0.8),
        ("failed", 7, 0, 0, None),
        ("succeeded", 0, 5, 3, 0.4),
    ]
    for n, (state, added, removed, unmatched, rate) in enumerate(runs):
        await pool.execute(
            """INSERT INTO run (run_id, direction, audience_id, mode, state, id_type, counts, match_rate,
                                started_at, finished_at)
               VALUES ($1, 'import', 'seg-1', 'delta', $2, 'ecid', $3::jsonb, $4::jsonb,
                       now() - make_interval(hours => 10 - $5), now() - make_interval(hours => 10 - $5))""",
            uuid.uuid4(),
            state,
            f'{{"added": {added}, "removed": {removed}, "unmatched": {unmatched}}}',
            None if rate is None else f'{{"ecid": {rate}}}',
            n,
        )
    async with pool.acquire() as conn:
        points = await history(conn, "seg-1")
        assert await history(conn, "no-such-audience") == []
    assert [p.size for p in points] == [20, 35, 30]
    assert [p.unmatched for p in points] == [1, 2, 3]
    assert [p.match_rate for p in points] == [{"ecid": 0.9}, {"ecid": 0.8}, {"ecid": 0.4}]
