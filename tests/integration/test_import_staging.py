"""A full batch's IDs staged as one row (``stage_ids``) come back exactly as sent, in order, against real Postgres:
sent as one text split by Postgres, or as an array when an ID would not survive the split."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from services.reconcile.import_snapshot import stage_ids
from shared.migrations import migrate

pytestmark = pytest.mark.integration

# Characters an array literal or COPY would read specially, kept as they are.
ODD = ["a\\tb", "\\N", 'q"uo"te', "{brace}", "com,ma", "NULL", "x\\", "é", "tab\there"]


@pytest.mark.parametrize(
    "ids",
    [
        [f"{i:038d}" for i in range(10_000)],
        ODD,
        ["one"],
        ["ends", ""],  # an empty element last: the split keeps it
        [""],  # a lone empty ID: an empty text splits into no element, so it goes as an array
        ["line\nbreak", "other"],  # a line break inside an ID: the split would cut it, so it goes as an array
    ],
    ids=["10k-ecids", "odd", "one", "trailing-empty", "lone-empty", "line-break"],
)
async def test_staged_ids_are_read_back_exactly(database_url: str, ids: list[str]) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        run_id = uuid.uuid4()
        await stage_ids(conn, run_id, 3, ids)
        assert await conn.fetchval("SELECT ids FROM import_stage_batch WHERE run_id = $1 AND seq = 3", run_id) == ids
    finally:
        await conn.close()
