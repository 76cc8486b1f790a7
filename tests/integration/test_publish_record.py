"""Recording a run the platform applied in ``exported_member`` (services/publish/apply_sql.py), against real
Postgres: the same rows whichever way they are inserted, a plain insert into an audience holding nothing (its
first run, a full run), ON CONFLICT into one that holds IDs, the sort in memory."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from services.publish.apply_sql import INSERT_ADDED, INSERT_ADDED_FRESH, apply_whole_run
from shared.migrations import migrate

pytestmark = pytest.mark.integration

AUDIENCE = "ab-record"


class Recorder:
    """A connection that notes the statements it runs (which insert a run took)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.statements: list[str] = []

    async def execute(self, sql: str, *args: Any) -> str:
        self.statements.append(sql)
        return str(await self.conn.execute(sql, *args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        self.statements.append(sql)
        return await self.conn.fetchval(sql, *args)

    def transaction(self) -> Any:
        return self.conn.transaction()


@pytest_asyncio.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    try:
        await migrate(connection)
        yield connection
    finally:
        await connection.close()


async def stage(conn: asyncpg.Connection, adds: Sequence[str], removes: Sequence[str] = ()) -> uuid.UUID:
    """A run's IDs staged as publish stages them: batches of lines (here two, one ID in both)."""
    run_id = uuid.uuid4()
    half = len(adds) // 2
    batches = [(list(adds[: half + 1]), list(removes)), (list(adds[half:]), [])]
    await conn.copy_records_to_table(
        "publish_stage_batch",
        records=[(run_id, seq, "\n".join(a), "\n".join(r), len(a), len(r), 64) for seq, (a, r) in enumerate(batches)],
        columns=("run_id", "seq", "adds", "removes", "adds_n", "removes_n", "max_id_bytes"),
    )
    return run_id


async def apply(conn: asyncpg.Connection, run_id: uuid.UUID, *, full: bool = False) -> list[str]:
    recorder = Recorder(conn)
    async with conn.transaction():
        await apply_whole_run(recorder, run_id, AUDIENCE, full=full, work_mem_mb=64)
        # The sort's memory is the transaction's own: set for it, gone after it.
        assert await conn.fetchval("SELECT current_setting('work_mem')") == "64MB"
    assert await conn.fetchval("SELECT current_setting('work_mem')") != "64MB"
    return recorder.statements


async def shared(conn: asyncpg.Connection) -> dict[str, uuid.UUID]:
    rows = await conn.fetch("SELECT id, run_id FROM exported_member WHERE audience_id = $1", AUDIENCE)
    return {r["id"]: r["run_id"] for r in rows}


async def test_a_first_run_is_a_plain_insert_and_a_later_one_merges(conn: asyncpg.Connection) -> None:
    first = await stage(conn, [f"id{i:03d}" for i in range(10)])
    assert INSERT_ADDED_FRESH in await apply(conn, first)
    assert await shared(conn) == {f"id{i:03d}": first for i in range(10)}
    # An ID shared before is sent again (re-sent after an unconfirmed receipt): it takes the new run.
    second = await stage(conn, ["id005", "id100"], removes=["id000"])
    statements = await apply(conn, second)
    assert INSERT_ADDED in statements
    assert INSERT_ADDED_FRESH not in statements
    expected = {f"id{i:03d}": first for i in range(1, 10)} | {"id005": second, "id100": second}
    assert await shared(conn) == expected


async def test_a_full_run_replaces_the_audience_with_a_plain_insert(conn: asyncpg.Connection) -> None:
    first = await stage(conn, ["a", "b", "c"])
    await apply(conn, first)
    # The same IDs again, deleted and inserted in one transaction: no conflict with the rows it deleted.
    full = await stage(conn, ["b", "c", "d"])
    assert INSERT_ADDED_FRESH in await apply(conn, full, full=True)
    assert await shared(conn) == {"b": full, "c": full, "d": full}


async def test_a_plain_insert_meeting_ids_falls_back_to_merging_them(conn: asyncpg.Connection) -> None:
    """Should IDs of the audience appear between the look and the insert (no such writer exists today), the
    plain insert's savepoint is rolled back and the run merged: nothing lost, nothing doubled."""
    other_run = uuid.uuid4()
    await conn.execute(
        "INSERT INTO exported_member (audience_id, id, run_id) VALUES ($1, 'b', $2)", AUDIENCE, other_run
    )
    run_id = await stage(conn, ["a", "b"])
    recorder = Recorder(conn)
    real_fetchval = recorder.fetchval

    async def looks_empty(sql: str, *args: Any) -> Any:
        return False if "EXISTS" in sql else await real_fetchval(sql, *args)

    recorder.fetchval = looks_empty  # type: ignore[method-assign]
    async with conn.transaction():
        await apply_whole_run(recorder, run_id, AUDIENCE, full=False)
    assert recorder.statements[-2:] == [INSERT_ADDED_FRESH, INSERT_ADDED]
    assert await shared(conn) == {"a": run_id, "b": run_id}
