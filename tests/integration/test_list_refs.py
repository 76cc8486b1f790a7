"""A list named by its name or its id, many times on one connection, as a long-running reconcile asks.

asyncpg prepares each statement once per connection; from its sixth run Postgres may use a generic plan,
which does not evaluate an ``AND`` in the order written: ``$1 ~ '^[0-9]+$' AND list_id = $1::bigint`` then
cast a name to bigint and failed ("invalid input syntax for type bigint"), so that an export request naming
its list dead-lettered once the same connection had served five. (Per-test stacks never got that far; the
module-wide stack of tests/e2e/test_campaign_streams.py did.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from services.reconcile.catalog import ensure_list
from services.reconcile.export_binding import _find_list
from services.reconcile.export_diff import list_id_of
from services.reconcile.insights_queries import _list
from tests.fixtures.bridge_db import Campaign

pytestmark = pytest.mark.integration

RUNS = 12  # well past the five custom plans Postgres makes before it may switch to a generic one


async def _export(conn: Any, ref: str) -> int:
    return await list_id_of(conn, ref)


async def _binding(conn: Any, ref: str) -> int:
    return (await _find_list(conn, ref))[0]


async def _insights(conn: Any, ref: str) -> int:
    return (await _list(conn, ref))[0]


@pytest.mark.parametrize("lookup", [_export, _binding, _insights], ids=["export", "rebind", "insights"])
async def test_a_list_is_found_by_name_or_id_however_often_one_connection_asks(
    campaign: Campaign, lookup: Callable[[Any, str], Awaitable[int]]
) -> None:
    async with campaign.pool.acquire() as conn:
        await conn.execute("SET plan_cache_mode = force_generic_plan")  # what the sixth run may choose anyway
        ids = {name: await ensure_list(conn, name) for name in ("Readers", "Leavers", "2024")}
        for i in range(RUNS):
            name = ("Readers", "Leavers", "2024")[i % 3]
            assert await lookup(conn, name) == ids[name]
            assert await lookup(conn, str(ids["Leavers"])) == ids["Leavers"]
