"""list_member's references, checked per statement (schemas/sql/007, 008): what the foreign keys guaranteed."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from tests.fixtures.bridge_db import Campaign
from tests.helpers import waiting_for_a_lock

pytestmark = pytest.mark.integration


async def _list(campaign: Campaign, name: str) -> int:
    list_id: int = await campaign.pool.fetchval("INSERT INTO list (name) VALUES ($1) RETURNING list_id", name)
    return list_id


async def _members(campaign: Campaign, list_id: int) -> set[int]:
    rows = await campaign.pool.fetch("SELECT recipient_id FROM list_member WHERE list_id = $1", list_id)
    return {r["recipient_id"] for r in rows}


async def test_members_must_name_an_existing_recipient_and_list(campaign: Campaign) -> None:
    list_id = await _list(campaign, "refs")
    await campaign.pool.execute(
        "INSERT INTO list_member (list_id, recipient_id) SELECT $1, g FROM generate_series(1, 50) g", list_id
    )
    # One bad row among good ones fails the whole statement, naming what is missing.
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="recipient 999999"):
        await campaign.pool.execute(
            "INSERT INTO list_member (list_id, recipient_id) VALUES ($1, 60), ($1, 999999), ($1, 61)", list_id
        )
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="list 424242"):
        await campaign.pool.execute("INSERT INTO list_member (list_id, recipient_id) VALUES (424242, 1)")
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="recipient 777777"):
        await campaign.pool.execute(
            "UPDATE list_member SET recipient_id = 777777 WHERE list_id = $1 AND recipient_id = 1", list_id
        )
    assert await _members(campaign, list_id) == set(range(1, 51))


async def _insert_without_nested_loops(conn: Any, list_id: int, extra: int) -> None:
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_nestloop = off")
        await conn.execute(
            "INSERT INTO list_member (list_id, recipient_id) "
            "SELECT $1::bigint, g FROM generate_series(1, 40) g UNION ALL SELECT $1::bigint, $2::bigint ORDER BY 2",
            list_id,
            extra,
        )


async def test_the_check_holds_in_a_snapshot_transaction_and_keeps_its_plan_setting_to_itself(
    campaign: Campaign,
) -> None:
    """A snapshot's transaction turns nested loops off; the check then merges (schemas/sql/008), and still
    finds a missing recipient at either end of the key range. Its hash-join setting does not leak out."""
    list_id = await _list(campaign, "refs-merge")
    async with campaign.pool.acquire() as conn:
        for missing in (0, 999_999):
            with pytest.raises(asyncpg.ForeignKeyViolationError, match=f"recipient {missing}"):
                await _insert_without_nested_loops(conn, list_id, missing)
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_nestloop = off")
            await conn.execute(
                "INSERT INTO list_member (list_id, recipient_id) SELECT $1, g FROM generate_series(1, 40) g", list_id
            )
            assert await conn.fetchval("SHOW enable_hashjoin") == "on"
    assert await _members(campaign, list_id) == set(range(1, 41))


async def test_deleting_recipients_and_lists_deletes_their_memberships(campaign: Campaign) -> None:
    a, b = await _list(campaign, "refs-a"), await _list(campaign, "refs-b")
    await campaign.pool.execute(
        """INSERT INTO list_member (list_id, recipient_id)
           SELECT l, g FROM generate_series(1, 20) g, unnest($1::bigint[]) l""",
        [a, b],
    )
    await campaign.pool.execute("DELETE FROM recipient WHERE recipient_id BETWEEN 1 AND 5")
    assert await _members(campaign, a) == set(range(6, 21))
    assert await _members(campaign, b) == set(range(6, 21))
    await campaign.pool.execute("DELETE FROM list WHERE list_id = $1", a)
    assert await _members(campaign, a) == set()
    assert await _members(campaign, b) == set(range(6, 21))


async def test_a_key_with_members_cannot_change(campaign: Campaign) -> None:
    list_id = await _list(campaign, "refs-key")
    await campaign.pool.execute("INSERT INTO list_member (list_id, recipient_id) VALUES ($1, 7)", list_id)
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="recipient 7 has list memberships"):
        await campaign.pool.execute("UPDATE recipient SET recipient_id = 100007 WHERE recipient_id = 7")
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="has members"):
        await campaign.pool.execute("UPDATE list SET list_id = list_id + 1000 WHERE list_id = $1", list_id)
    # Without members, and for any other column, updates go through.
    await campaign.pool.execute("INSERT INTO recipient (recipient_id) VALUES (5000)")
    await campaign.pool.execute("UPDATE recipient SET recipient_id = 5001 WHERE recipient_id = 5000")
    await campaign.pool.execute("UPDATE recipient SET crm_id = 'X7' WHERE recipient_id = 7")
    assert await _members(campaign, list_id) == {7}


async def test_a_recipient_deleted_while_members_are_added_leaves_no_member_behind(
    campaign: Campaign, database_url: str
) -> None:
    list_id = await _list(campaign, "refs-race")
    adding = await asyncpg.connect(database_url)
    deleting = await asyncpg.connect(database_url)
    try:
        adder = adding.transaction()
        await adder.start()
        await adding.execute("INSERT INTO list_member (list_id, recipient_id) VALUES ($1, 9), ($1, 10)", list_id)
        # The delete must wait for the transaction adding recipient 9, then remove what it added.
        delete = asyncio.create_task(deleting.execute("DELETE FROM recipient WHERE recipient_id = 9"))
        await waiting_for_a_lock(campaign.pool, deleting.get_server_pid())
        assert not delete.done()
        await adder.commit()
        await asyncio.wait_for(delete, 10)
        assert await _members(campaign, list_id) == {10}
    finally:
        await adding.close()
        await deleting.close()
