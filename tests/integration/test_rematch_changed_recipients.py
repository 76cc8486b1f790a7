"""A batch of recipient changes re-matches through the keys that import lists wait on, and only those: each
statement is planned again for every batch (issue 18), so the keys nothing waits on cost nothing."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import pytest

from services.reconcile.recipient_changes import apply_changes
from services.reconcile.rematch import _DECLARED_OF_CHANGED
from shared.messages import RecipientChange
from tests.fixtures.bridge_db import Campaign, add_import_audience

pytestmark = pytest.mark.integration


class _Statements:
    """The connection, recording the statements run through it."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.run: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._conn, name)
        if name not in ("execute", "fetch", "fetchrow", "fetchval"):
            return method

        async def recorded(sql: str, *args: Any) -> Any:
            self.run.append(sql)
            return await method(sql, *args)

        return recorded


async def _wait_on(campaign: Campaign, audience_id: str, ids: list[str]) -> None:
    await campaign.pool.executemany(
        "INSERT INTO unmatched_id (audience_id, id_type, id, reason, run_id) VALUES ($1, 'declared', $2, $3, $4)",
        [(audience_id, i, "unknown_declared_id", uuid.uuid4()) for i in ids],
    )


async def _members(campaign: Campaign, audience_id: str) -> set[int]:
    rows = await campaign.pool.fetch(
        "SELECT recipient_id FROM list_member JOIN shared_audience USING (list_id) WHERE audience_id = $1",
        audience_id,
    )
    return {r["recipient_id"] for r in rows}


def _rematches(statements: _Statements) -> set[tuple[str, str]]:
    by_sql = {sql: pair for pair, sql in _DECLARED_OF_CHANGED.items()}
    return {by_sql[sql] for sql in statements.run if sql in by_sql}


async def test_only_the_keys_lists_wait_on_are_rematched(campaign: Campaign) -> None:
    await add_import_audience(campaign.pool, "by-hash", "hashed-emails", 7101)
    await add_import_audience(campaign.pool, "by-crm", "crm-ids", 7102)
    async with campaign.pool.acquire() as conn:
        nothing_waits = _Statements(conn)
        await apply_changes(nothing_waits, [RecipientChange(recipient_id=3, op="upsert", position=1, email="a@x.org")])
    assert _rematches(nothing_waits) == set()

    await _wait_on(campaign, "by-hash", [hashlib.sha256(b"new@x.org").hexdigest()])
    async with campaign.pool.acquire() as conn:
        hashed_waits = _Statements(conn)
        counts = await apply_changes(
            hashed_waits, [RecipientChange(recipient_id=3, op="upsert", position=2, email="New@x.org")]
        )
    assert _rematches(hashed_waits) == {("email", "sha256")}
    assert counts["rematched"] == 1
    assert await _members(campaign, "by-hash") == {3}

    await _wait_on(campaign, "by-crm", ["CRM-NEW-4"])
    await _wait_on(campaign, "by-hash", [hashlib.sha256(b"other@x.org").hexdigest()])
    async with campaign.pool.acquire() as conn:
        both_wait = _Statements(conn)
        counts = await apply_changes(
            both_wait,
            [
                RecipientChange(recipient_id=4, op="upsert", position=1, crm_id="CRM-NEW-4"),
                RecipientChange(recipient_id=5, op="upsert", position=1, email="other@x.org"),
            ],
        )
    assert _rematches(both_wait) == {("email", "sha256"), ("crm_id", "none")}
    assert counts["rematched"] == 2
    assert await _members(campaign, "by-crm") == {4}
    assert await _members(campaign, "by-hash") == {3, 5}
