"""A batch of recipient changes and another writer of the same recipient (a CSV load, a forget) at once: the
batch writes the row version it read, or nothing and is retried (issue 18: one probe of the key per change).

Each test holds the other writer's transaction open until the batch waits for its row lock, then commits it:
the batch's probe read the row as it was, its write finds it changed. The first attempt must fail as
transient (the handler retries it), and the retry apply the change to the row as the other writer left it,
counted from that row."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from services.reconcile.recipient_changes import apply_changes
from shared.errors import TransientError
from shared.messages import RecipientChange
from tests.fixtures.bridge_db import Campaign
from tests.helpers import waiting_for_a_lock

pytestmark = pytest.mark.integration

R = 930_001  # beyond the fixture's campaign
_ROW = "SELECT email, position, updated_at FROM recipient WHERE recipient_id = $1"


def _upsert(position: int, email: str, recipient_id: int = R) -> RecipientChange:
    return RecipientChange(recipient_id=recipient_id, op="upsert", position=position, email=email)


async def _while_the_batch_waits(
    campaign: Campaign,
    database_url: str,
    other_writer: Callable[[Any], Awaitable[object]],
    changes: list[RecipientChange],
) -> asyncio.Task[dict[str, int]]:
    """Start ``changes`` while ``other_writer`` holds its transaction open; commit it once the batch waits for
    its lock. Returns the batch's first attempt (done)."""
    other = await asyncpg.connect(database_url)
    batch = await asyncpg.connect(database_url)
    try:
        writing = other.transaction()
        await writing.start()
        await other_writer(other)
        attempt = asyncio.create_task(apply_changes(batch, changes))
        await waiting_for_a_lock(campaign.pool, batch.get_server_pid())
        assert not attempt.done()
        await writing.commit()
        await asyncio.wait({attempt}, timeout=10)
        assert attempt.done()
        return attempt
    finally:
        await other.close()
        await batch.close()


async def test_a_row_changed_after_the_probe_read_it_is_retried_and_counted_from_the_new_row(
    campaign: Campaign, database_url: str
) -> None:
    async with campaign.pool.acquire() as conn:
        await apply_changes(conn, [_upsert(1, "same@example.com")])

    async def csv_load(other: Any) -> None:
        # What a CSV load's upsert does to a known recipient (services/cli/loads.py): new values, a new time.
        await other.execute(
            "UPDATE recipient SET email = 'csv@example.com', updated_at = now() WHERE recipient_id = $1", R
        )

    # The change repeats the e-mail the probe read: alone it would be "unchanged"; over the load's row it is not.
    attempt = await _while_the_batch_waits(campaign, database_url, csv_load, [_upsert(2, "same@example.com")])
    with pytest.raises(TransientError, match="written concurrently"):
        attempt.result()
    loaded = await campaign.pool.fetchrow(_ROW, R)
    assert loaded is not None
    assert (loaded["email"], loaded["position"]) == ("csv@example.com", 1)  # the failed attempt wrote nothing
    async with campaign.pool.acquire() as conn:
        retried = await apply_changes(conn, [_upsert(2, "same@example.com")])
    assert (retried["upserted"], retried["unchanged"], retried["stale"]) == (1, 0, 0)
    row = await campaign.pool.fetchrow(_ROW, R)
    assert row is not None
    assert (row["email"], row["position"]) == ("same@example.com", 2)
    assert row["updated_at"] > loaded["updated_at"]


async def test_a_row_inserted_after_the_probe_missed_it_is_retried_as_an_update(
    campaign: Campaign, database_url: str
) -> None:
    new = R + 1

    async def csv_load(other: Any) -> None:
        await other.execute("INSERT INTO recipient (recipient_id, email) VALUES ($1, 'csv@example.com')", new)

    attempt = await _while_the_batch_waits(campaign, database_url, csv_load, [_upsert(1, "stream@example.com", new)])
    with pytest.raises(TransientError, match="written concurrently"):
        attempt.result()
    async with campaign.pool.acquire() as conn:
        retried = await apply_changes(conn, [_upsert(1, "stream@example.com", new)])
    assert (retried["upserted"], retried["unchanged"], retried["stale"]) == (1, 0, 0)
    row = await campaign.pool.fetchrow(_ROW, new)
    assert row is not None
    assert (row["email"], row["position"]) == ("stream@example.com", 1)


async def test_a_row_deleted_after_the_probe_read_it_is_retried_as_an_insert(
    campaign: Campaign, database_url: str
) -> None:
    gone = R + 2
    async with campaign.pool.acquire() as conn:
        await apply_changes(conn, [_upsert(1, "before@example.com", gone)])

    async def delete(other: Any) -> None:
        await other.execute("DELETE FROM recipient WHERE recipient_id = $1", gone)

    attempt = await _while_the_batch_waits(campaign, database_url, delete, [_upsert(2, "after@example.com", gone)])
    with pytest.raises(TransientError, match="written concurrently"):
        attempt.result()
    assert await campaign.pool.fetchrow(_ROW, gone) is None
    async with campaign.pool.acquire() as conn:
        retried = await apply_changes(conn, [_upsert(2, "after@example.com", gone)])
    assert (retried["upserted"], retried["stale"]) == (1, 0)
    row = await campaign.pool.fetchrow(_ROW, gone)
    assert row is not None
    assert (row["email"], row["position"]) == ("after@example.com", 2)
