"""A recipient's position is on its row, a deleted one's in its tombstone (issue 18's write cost, schemas/sql/028):
older and duplicate changes still never win, a delete or a forget still keeps a replay from bringing anyone back,
and a deployment upgraded from recipient_version keeps every position."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.reconcile.recipient_changes import apply_changes
from services.reconcile.recipient_erasure import forget
from shared.messages import RecipientChange
from shared.migrations import MIGRATIONS_DIR, migrate
from tests.fixtures.bridge_db import Campaign

pytestmark = pytest.mark.integration

R = 910_001  # beyond the fixture's campaign
_STATE = """SELECT (SELECT position FROM recipient WHERE recipient_id = $1) AS row_position,
                   (SELECT position FROM recipient_tombstone WHERE recipient_id = $1) AS tombstone,
                   (SELECT email FROM recipient WHERE recipient_id = $1) AS email"""
_VERSION = "SELECT position, deleted FROM recipient_version WHERE recipient_id = $1"


async def _row(conn: Any, sql: str, recipient_id: int) -> tuple[Any, ...]:
    row = await conn.fetchrow(sql, recipient_id)
    return tuple(row) if row is not None else ()


def _upsert(position: int, email: str, recipient_id: int = R) -> RecipientChange:
    return RecipientChange(recipient_id=recipient_id, op="upsert", position=position, email=email)


def _delete(position: int, recipient_id: int = R) -> RecipientChange:
    return RecipientChange(recipient_id=recipient_id, op="delete", position=position)


async def test_the_position_is_written_with_the_row_and_a_delete_leaves_a_tombstone(campaign: Campaign) -> None:
    async with campaign.pool.acquire() as conn:
        assert (await apply_changes(conn, [_upsert(5, "a@example.com")]))["upserted"] == 1
        assert await _row(conn, _STATE, R) == (5, None, "a@example.com")
        assert await _row(conn, _VERSION, R) == (5, False)
        assert (await apply_changes(conn, [_delete(7)]))["deleted"] == 1
        assert await _row(conn, _STATE, R) == (None, 7, None)
        assert await _row(conn, _VERSION, R) == (7, True)
        # Older than the delete, or the delete again: stale, nobody comes back.
        counts = await apply_changes(conn, [_upsert(6, "old@example.com")])
        assert (counts["stale"], counts["upserted"]) == (1, 0)
        assert (await apply_changes(conn, [_delete(7)]))["stale"] == 1
        assert await _row(conn, _STATE, R) == (None, 7, None)
        # Newer than the delete: the campaign added the person again; the older tombstone stays a lower bound.
        assert (await apply_changes(conn, [_upsert(8, "back@example.com")]))["upserted"] == 1
        assert await _row(conn, _STATE, R) == (8, 7, "back@example.com")
        assert await _row(conn, _VERSION, R) == (8, False)
        assert (await apply_changes(conn, [_upsert(7, "older@example.com")]))["stale"] == 1
        assert (await apply_changes(conn, [_upsert(8, "dup@example.com")]))["stale"] == 1
        assert await _row(conn, _STATE, R) == (8, 7, "back@example.com")


async def test_a_delete_of_an_unknown_recipient_keeps_its_older_upserts_out(campaign: Campaign) -> None:
    other = R + 1
    async with campaign.pool.acquire() as conn:
        await apply_changes(conn, [_delete(3, other)])
        assert (await apply_changes(conn, [_upsert(2, "late@example.com", other)]))["stale"] == 1
        assert await _row(conn, _STATE, other) == (None, 3, None)


async def test_a_forgotten_recipient_keeps_its_last_position(campaign: Campaign) -> None:
    # The tombstone of a forget is the position of the last change applied: replaying that change (or any
    # older one) must not bring the person back; a newer one does.
    forgotten = R + 2
    async with campaign.pool.acquire() as conn:
        await apply_changes(conn, [_upsert(40, "f@example.com", forgotten)])
        report = await forget(conn, [forgotten])
        assert report.forgotten == [forgotten]
        assert await _row(conn, _STATE, forgotten) == (None, 40, None)
        assert (await apply_changes(conn, [_upsert(40, "f@example.com", forgotten)]))["stale"] == 1
        assert (await apply_changes(conn, [_upsert(39, "f@example.com", forgotten)]))["stale"] == 1
        assert (await apply_changes(conn, [_upsert(41, "new@example.com", forgotten)]))["upserted"] == 1
        assert await _row(conn, _STATE, forgotten) == (41, 40, "new@example.com")


async def test_upgrading_moves_the_versions_onto_the_rows_and_keeps_the_tombstones(
    database_url: str, tmp_path: Path
) -> None:
    for path in MIGRATIONS_DIR.glob("*.sql"):
        if int(path.name.split("_", 1)[0]) < 28:
            shutil.copy(path, tmp_path / path.name)
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, tmp_path)
        await conn.execute(
            """INSERT INTO recipient (recipient_id, email) VALUES (1, 'a@example.com'), (2, 'b@example.com');
               INSERT INTO recipient_version (recipient_id, position, deleted) VALUES (1, 10, false), (3, 30, true)"""
        )
        assert 28 in await migrate(conn)
        rows = await conn.fetch("SELECT recipient_id, position FROM recipient ORDER BY recipient_id")
        assert [tuple(r) for r in rows] == [(1, 10), (2, None)]
        tombstones = await conn.fetch("SELECT recipient_id, position FROM recipient_tombstone")
        assert [tuple(r) for r in tombstones] == [(3, 30)]
        versions = await conn.fetch("SELECT recipient_id, position, deleted FROM recipient_version ORDER BY 1")
        assert [tuple(r) for r in versions] == [(1, 10, False), (3, 30, True)]
    finally:
        await conn.close()
