"""The recipient_changes benchmark's output check against a real database: the applied changes pass it, an
older change winning, a missing or an extra recipient fail it."""

from __future__ import annotations

import pytest

from services.reconcile.recipient_changes import apply_changes
from shared.messages import RecipientChange
from tests.bench.output_checks import BenchOutputError
from tests.bench.recipient_output import check_recipients, email_of
from tests.fixtures.bridge_db import Campaign

pytestmark = pytest.mark.integration

N = 300
BELOW = 10_000_000_000


def _upsert(i: int, generation: int) -> RecipientChange:
    return RecipientChange(
        recipient_id=i, op="upsert", email=email_of(i, generation), crm_id=f"CRM{i}", position=generation
    )


async def test_the_applied_upserts_pass_and_wrong_tables_fail(campaign: Campaign) -> None:
    async with campaign.pool.acquire() as conn:
        await conn.execute("DELETE FROM visitor_link; DELETE FROM list_member; DELETE FROM recipient")
        await apply_changes(conn, [_upsert(i, 1) for i in range(1, N + 1)])
        with pytest.raises(BenchOutputError):  # generation 1 only: no recipient holds its last e-mail
            await check_recipients(conn, N, below=BELOW)
        await apply_changes(conn, [_upsert(i, 2) for i in range(1, N + 1)])
        await conn.execute("INSERT INTO recipient (recipient_id, email) VALUES ($1, 'clicker@example.com')", BELOW)
        await check_recipients(conn, N, below=BELOW)  # exact (the recipients at or above `below` are not looked at)
        # A row the benchmark did not write, and one changed behind its back: each named.
        await conn.execute("UPDATE recipient SET email = 'x@example.com' WHERE recipient_id = 7")
        with pytest.raises(BenchOutputError) as failed:
            await check_recipients(conn, N, below=BELOW)
        assert "as_expected: expected 300, found 299" in str(failed.value.context)
        await conn.execute("UPDATE recipient SET email = $1 WHERE recipient_id = 7", email_of(7, 2))
        await check_recipients(conn, N, below=BELOW)
        await conn.execute("DELETE FROM recipient WHERE recipient_id = $1", N)  # the highest recipient lost
        with pytest.raises(BenchOutputError):
            await check_recipients(conn, N, below=BELOW)
