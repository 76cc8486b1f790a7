"""A newer change that leaves a recipient's values as they were writes nothing but its position (issue 18's write
cost): no new update time, counted as ``unchanged``; and the position still orders every
change."""

from __future__ import annotations

import pytest

from services.reconcile.recipient_changes import apply_changes
from shared.messages import RecipientChange
from tests.fixtures.bridge_db import Campaign

pytestmark = pytest.mark.integration

R = 900_001  # beyond the fixture's campaign
_ROW = "SELECT updated_at, email, opted_out FROM recipient WHERE recipient_id = $1"
_POSITION = "SELECT position FROM recipient WHERE recipient_id = $1"


def _upsert(position: int, email: str, opted_out: bool = False) -> RecipientChange:
    return RecipientChange(recipient_id=R, op="upsert", position=position, email=email, opted_out=opted_out)


async def test_a_change_that_changes_nothing_writes_nothing_but_its_position(campaign: Campaign) -> None:
    async with campaign.pool.acquire() as conn:
        first = await apply_changes(conn, [_upsert(1, "same@example.com")])
        assert (first["upserted"], first["unchanged"]) == (1, 0)
        before = await conn.fetchrow(_ROW, R)
        again = await apply_changes(conn, [_upsert(2, "same@example.com")])
        assert (again["upserted"], again["unchanged"], again["stale"]) == (0, 1, 0)
        assert await conn.fetchrow(_ROW, R) == before  # the same values and update time
        assert await conn.fetchval(_POSITION, R) == 2  # but the position moved: an older change stays stale
        late = await apply_changes(conn, [_upsert(1, "older@example.com")])
        assert (late["upserted"], late["unchanged"], late["stale"]) == (0, 0, 1)
        # Any column of the row changing is a write: consent alone, then the e-mail.
        consent = await apply_changes(conn, [_upsert(3, "same@example.com", opted_out=True)])
        assert (consent["upserted"], consent["unchanged"]) == (1, 0)
        changed = await conn.fetchrow(_ROW, R)
        assert changed is not None
        assert before is not None
        assert changed["opted_out"] is True
        assert changed["updated_at"] > before["updated_at"]
        mixed = await apply_changes(
            conn,
            [
                _upsert(4, "same@example.com", opted_out=True),  # superseded within the batch
                _upsert(5, "new@example.com", opted_out=True),
                RecipientChange(recipient_id=R + 1, op="upsert", position=1, email="other@example.com"),
            ],
        )
        assert (mixed["upserted"], mixed["unchanged"], mixed["stale"]) == (2, 0, 1)
        assert await conn.fetchval("SELECT email FROM recipient WHERE recipient_id = $1", R) == "new@example.com"
