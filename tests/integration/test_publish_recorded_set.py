"""A run's recorded set prepared apart and swapped in whole (services/publish/recorded_set.py, migration 030),
against real Postgres: invisible until the swap, exact after first, incremental and full runs, refused (and the
row-by-row recording taking over) when the audience gained IDs or the locks are not had, all or nothing when the
last transaction dies, and migration 030 keeping the rows it finds."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from services.publish import recorded_set
from services.publish.apply_sql import apply_whole_run, drop_staging
from shared.migrations import MIGRATIONS_DIR, migrate

pytestmark = pytest.mark.integration

AUDIENCE = "ab-swap"


@pytest_asyncio.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    async with asyncpg.create_pool(database_url, min_size=1, max_size=4) as created:
        yield created


async def stage(pool: asyncpg.Pool, adds: Sequence[str], removes: Sequence[str] = ()) -> uuid.UUID:
    """An uploaded run's IDs staged as publish stages them: batches of lines (two, one ID in both)."""
    run_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO run (run_id, direction, audience_id, mode, state) VALUES ($1, 'export', $2, 'append', 'uploaded')",
        run_id,
        AUDIENCE,
    )
    half = len(adds) // 2
    batches = [(list(adds[: half + 1]), list(removes)), (list(adds[half:]), [])]
    await pool.copy_records_to_table(
        "publish_stage_batch",
        records=[(run_id, seq, "\n".join(a), "\n".join(r), len(a), len(r), 64) for seq, (a, r) in enumerate(batches)],
        columns=("run_id", "seq", "adds", "removes", "adds_n", "removes_n", "max_id_bytes"),
    )
    return run_id


async def stage_as(pool: asyncpg.Pool, batches: Sequence[Sequence[str]]) -> uuid.UUID:
    """An uploaded run whose adds are staged in exactly these batches (seq 0, 1, ...)."""
    run_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO run (run_id, direction, audience_id, mode, state) VALUES ($1, 'export', $2, 'append', 'uploaded')",
        run_id,
        AUDIENCE,
    )
    await pool.copy_records_to_table(
        "publish_stage_batch",
        records=[(run_id, seq, "\n".join(a), "", len(a), 0, 64) for seq, a in enumerate(batches)],
        columns=("run_id", "seq", "adds", "removes", "adds_n", "removes_n", "max_id_bytes"),
    )
    return run_id


async def prepare_heard(pool: asyncpg.Pool, run_id: uuid.UUID) -> tuple[int, list[str], list[str]]:
    """exported_member_prepare run as the build runs it, then rolled back: the IDs it counted, the table's IDs
    in their physical order, and the notices it raised."""
    notices: list[str] = []

    def heard(_conn: object, message: asyncpg.PostgresLogMessage) -> None:
        notices.append(message.message)

    table = recorded_set.table_of(run_id)
    async with pool.acquire() as conn:
        conn.add_log_listener(heard)
        tx = conn.transaction()
        await tx.start()
        try:
            ids = await conn.fetchval("SELECT exported_member_prepare($1, $2, $3)", table, run_id, AUDIENCE)
            rows = await conn.fetch(f'SELECT id FROM "{table}" ORDER BY ctid')
            await asyncio.sleep(0)  # notices reach listeners on the loop's next turn
        finally:
            await tx.rollback()
            conn.remove_log_listener(heard)
    return int(ids), [r["id"] for r in rows], notices


async def record(pool: asyncpg.Pool, run_id: uuid.UUID, *, full: bool, lock_timeout_ms: int = 2000) -> bool:
    """The run's last transaction as the receipt poller runs it (every file applied): swapped, or row by row."""
    async with pool.acquire() as conn, conn.transaction():
        swapped = await recorded_set.swap_in(conn, run_id, AUDIENCE, full=full, lock_timeout_ms=lock_timeout_ms)
        if not swapped:
            await apply_whole_run(conn, run_id, AUDIENCE, full=full)
        await drop_staging(conn, run_id, AUDIENCE, datetime.now(UTC))
    return swapped


async def shared(pool: asyncpg.Pool) -> dict[str, uuid.UUID]:
    rows = await pool.fetch("SELECT id, run_id FROM exported_member WHERE audience_id = $1", AUDIENCE)
    return {r["id"]: r["run_id"] for r in rows}


async def partition_of(pool: asyncpg.Pool) -> str | None:
    name: str | None = await pool.fetchval(
        "SELECT table_name FROM exported_member_partition WHERE audience_id = $1", AUDIENCE
    )
    return name


async def table_exists(pool: asyncpg.Pool, name: str) -> bool:
    return bool(await pool.fetchval("SELECT to_regclass(quote_ident($1)) IS NOT NULL", name))


async def prepared_tables(pool: asyncpg.Pool) -> list[str]:
    rows = await pool.fetch("SELECT relname FROM pg_class WHERE relname LIKE 'exported_member_r%' AND relkind = 'r'")
    return sorted(r["relname"] for r in rows)


async def test_a_first_run_is_invisible_until_swapped_in_then_exact(pool: asyncpg.Pool) -> None:
    ids = [f"id{i:04d}" for i in range(1000, 0, -1)]  # staged unsorted, one ID in both batches
    run_id = await stage(pool, ids)
    assert await recorded_set.build(pool, run_id, AUDIENCE, full=False, work_mem_mb=16) == 1000
    # Prepared again (a retried finish): found, not built twice.
    assert await recorded_set.build(pool, run_id, AUDIENCE, full=False, work_mem_mb=16) == 1000
    assert await shared(pool) == {}  # prepared is not recorded: no reader sees it before the receipts

    assert await record(pool, run_id, full=False)
    assert await shared(pool) == dict.fromkeys(ids, run_id)
    table = await partition_of(pool)
    assert table is not None
    assert table.startswith("exported_member_r")
    assert await pool.fetchval("SELECT count(*) FROM exported_member_default") == 0
    assert await pool.fetchval("SELECT count(*) FROM export_prepared_set") == 0
    assert await pool.fetchval("SELECT count(*) FROM publish_stage_batch") == 0


async def test_disjoint_sorted_batches_are_loaded_as_they_come_without_a_deduplicating_sort(pool: asyncpg.Pool) -> None:
    ids = [f"id{i:05d}" for i in range(3000)]
    run_id = await stage_as(pool, [ids[:1000], ids[1000:2500], ids[2500:]])
    count, loaded, notices = await prepare_heard(pool, run_id)
    assert (count, loaded, notices) == (3000, ids, [])


async def test_overlapping_batches_are_deduplicated_the_long_way_and_said(pool: asyncpg.Pool) -> None:
    """Batches that share IDs (a run emitted again with other batch boundaries) fail the primary key's check:
    the set is built again from the distinct IDs, sorted, in the same transaction, and a notice says so."""
    ids = [f"id{i:05d}" for i in range(3000)]
    run_id = await stage_as(pool, [ids[1000:2500], ids[:1200], ids[2400:], ids[2999:]])
    count, loaded, notices = await prepare_heard(pool, run_id)
    assert (count, loaded) == (3000, ids)
    assert len(notices) == 1
    assert "overlapping batches, de-duplicated" in notices[0]
    # The build itself (what publish runs) gives the same set, and says it in its log.
    assert await recorded_set.build(pool, run_id, AUDIENCE, full=False, work_mem_mb=16) == 3000


async def test_incremental_runs_record_row_by_row_into_the_swapped_in_partition(pool: asyncpg.Pool) -> None:
    first = await stage(pool, ["a", "b", "c"])
    await recorded_set.build(pool, first, AUDIENCE, full=False, work_mem_mb=16)
    assert await record(pool, first, full=False)
    # The audience holds IDs: nothing prepared, the delta merged (ON CONFLICT) into its partition.
    delta = await stage(pool, ["c", "d"], removes=["a"])
    assert await recorded_set.build(pool, delta, AUDIENCE, full=False, work_mem_mb=16) is None
    assert not await record(pool, delta, full=False)
    assert await shared(pool) == {"b": first, "c": delta, "d": delta}
    table = await partition_of(pool)
    assert table is not None
    assert await pool.fetchval(f'SELECT count(*) FROM "{table}"') == 3
    assert await pool.fetchval("SELECT count(*) FROM exported_member_default") == 0


async def test_a_full_run_replaces_the_audience_and_its_previous_partition_goes(pool: asyncpg.Pool) -> None:
    first = await stage(pool, ["a", "b", "c"])
    await recorded_set.build(pool, first, AUDIENCE, full=False, work_mem_mb=16)
    await record(pool, first, full=False)
    old_table = await partition_of(pool)
    assert old_table is not None

    full = await stage(pool, ["c", "d", "e"])
    assert await recorded_set.build(pool, full, AUDIENCE, full=True, work_mem_mb=16) == 3
    assert await shared(pool) == dict.fromkeys("abc", first)  # still the first run's until the receipts
    assert await record(pool, full, full=True)
    assert await shared(pool) == dict.fromkeys("cde", full)
    assert await partition_of(pool) != old_table
    assert not await table_exists(pool, old_table)


async def test_a_full_run_moves_the_audience_out_of_the_default_partition(pool: asyncpg.Pool) -> None:
    """IDs recorded row by row before the audience had a partition of its own (the default's) are replaced too."""
    other = uuid.uuid4()
    await pool.execute(
        "INSERT INTO exported_member (audience_id, id, run_id) VALUES ($1, 'old', $2), ('ab-other', 'x', $2)",
        AUDIENCE,
        other,
    )
    full = await stage(pool, ["n1", "n2"])
    await recorded_set.build(pool, full, AUDIENCE, full=True, work_mem_mb=16)
    assert await record(pool, full, full=True)
    assert await shared(pool) == dict.fromkeys(["n1", "n2"], full)
    # Another audience's rows stay where they were.
    assert await pool.fetchval("SELECT id FROM exported_member WHERE audience_id = 'ab-other'") == "x"


async def test_an_audience_that_gained_ids_meanwhile_is_merged_row_by_row(pool: asyncpg.Pool) -> None:
    run_id = await stage(pool, ["a", "b"])
    assert await recorded_set.build(pool, run_id, AUDIENCE, full=False, work_mem_mb=16) == 2
    other = uuid.uuid4()
    await pool.execute("INSERT INTO exported_member (audience_id, id, run_id) VALUES ($1, 'z', $2)", AUDIENCE, other)
    assert not await record(pool, run_id, full=False)  # a swap would have lost 'z'
    assert await shared(pool) == {"a": run_id, "b": run_id, "z": other}
    assert await prepared_tables(pool) == []  # the unused set went with the staging


async def test_locks_not_had_in_time_fall_back_to_row_by_row_in_the_same_transaction(pool: asyncpg.Pool) -> None:
    run_id = await stage(pool, ["a", "b"])
    await recorded_set.build(pool, run_id, AUDIENCE, full=False, work_mem_mb=16)
    async with pool.acquire() as reader, reader.transaction():
        # A reader of the default partition: ATTACH must wait for it (ACCESS EXCLUSIVE on the default).
        await reader.fetch("SELECT * FROM exported_member_default LIMIT 1")
        assert not await record(pool, run_id, full=False, lock_timeout_ms=200)
    assert await shared(pool) == {"a": run_id, "b": run_id}
    assert await partition_of(pool) is None
    assert await pool.fetchval("SELECT count(*) FROM exported_member_default") == 2
    # lock_timeout was the swap's own: the server's default is back for the rest of the transaction.
    async with pool.acquire() as conn, conn.transaction():
        await recorded_set.swap_in(conn, uuid.uuid4(), AUDIENCE, full=False)
        assert await conn.fetchval("SELECT current_setting('lock_timeout')") == "0"


async def test_a_last_transaction_killed_mid_swap_leaves_nothing_and_the_retry_converges(
    pool: asyncpg.Pool, database_url: str
) -> None:
    run_id = await stage(pool, [f"id{i}" for i in range(500)])
    await recorded_set.build(pool, run_id, AUDIENCE, full=False, work_mem_mb=16)
    victim = await asyncpg.connect(database_url)
    try:
        tx = victim.transaction()
        await tx.start()
        assert await recorded_set.swap_in(victim, run_id, AUDIENCE, full=False)
        # The process dies before the commit (as SIGKILL would): Postgres rolls the transaction back.
        assert await pool.fetchval("SELECT pg_terminate_backend($1)", victim.get_server_pid())
    finally:
        victim.terminate()
    assert await shared(pool) == {}
    assert await partition_of(pool) is None
    assert await pool.fetchval("SELECT count(*) FROM export_prepared_set WHERE run_id = $1", run_id) == 1

    assert await record(pool, run_id, full=False)  # the poller ends the run again: the same set
    assert await shared(pool) == {f"id{i}": run_id for i in range(500)}


async def test_a_run_ended_before_its_set_was_built_gets_none(pool: asyncpg.Pool) -> None:
    run_id = await stage(pool, ["a", "b"])
    await pool.execute("UPDATE run SET state = 'partial' WHERE run_id = $1", run_id)
    assert await recorded_set.build(pool, run_id, AUDIENCE, full=False, work_mem_mb=16) is None
    assert await prepared_tables(pool) == []


async def test_ending_the_run_waits_for_a_build_under_way_and_swaps_its_set_in(pool: asyncpg.Pool) -> None:
    run_id = await stage(pool, ["a", "b", "c"])
    async with pool.acquire() as builder:
        tx = builder.transaction()
        await tx.start()
        # A build under way: it holds the run's lock and has made its table, not yet committed.
        await builder.execute(recorded_set._RUN_LOCK, run_id)
        table = recorded_set.table_of(run_id)
        ids = await builder.fetchval("SELECT exported_member_prepare($1, $2, $3)", table, run_id, AUDIENCE)
        await builder.execute(recorded_set._RECORD_PREPARED, run_id, AUDIENCE, table, ids)
        ending = asyncio.ensure_future(record(pool, run_id, full=False))
        await asyncio.sleep(0.3)  # the ending must still be waiting: it cannot finish before the build commits
        assert not ending.done()
        await tx.commit()
    assert await ending  # swapped: it saw the committed set
    assert await shared(pool) == dict.fromkeys("abc", run_id)


async def test_superseded_runs_prepared_sets_are_dropped_with_the_staging(pool: asyncpg.Pool) -> None:
    failed = await stage(pool, ["a"])
    await recorded_set.build(pool, failed, AUDIENCE, full=False, work_mem_mb=16)
    await pool.execute(
        "UPDATE run SET state = 'failed', started_at = now() - interval '1 hour' WHERE run_id = $1", failed
    )
    assert len(await prepared_tables(pool)) == 1
    later = await stage(pool, ["b"])
    await recorded_set.build(pool, later, AUDIENCE, full=False, work_mem_mb=16)
    assert await record(pool, later, full=False)
    assert await shared(pool) == {"b": later}
    # The failed run's set went; the only table left is the audience's partition.
    assert await prepared_tables(pool) == [await partition_of(pool)]
    assert await pool.fetchval("SELECT count(*) FROM export_prepared_set") == 0


async def test_migration_030_keeps_every_audience_s_rows_in_a_partition_of_its_own(
    database_url: str, tmp_path: Path
) -> None:
    for path in MIGRATIONS_DIR.glob("*.sql"):
        if int(path.name[:3]) < 30:
            shutil.copy(path, tmp_path / path.name)
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, tmp_path)
        run_id = uuid.uuid4()
        rows = [("a'; DROP TABLE run; --", f"id{i}", run_id) for i in range(3)] + [("plain", "x", run_id)]
        await conn.copy_records_to_table("exported_member", records=rows, columns=("audience_id", "id", "run_id"))

        assert 30 in await migrate(conn)

        got = await conn.fetch("SELECT audience_id, id, run_id FROM exported_member ORDER BY 1, 2")
        assert [tuple(r) for r in got] == sorted(rows)
        assert await conn.fetchval("SELECT count(*) FROM exported_member_default") == 0
        parts = await conn.fetch("SELECT audience_id, table_name FROM exported_member_partition ORDER BY 1")
        assert [p["audience_id"] for p in parts] == ["a'; DROP TABLE run; --", "plain"]
        for p in parts:
            n = await conn.fetchval(f'SELECT count(*) FROM "{p["table_name"]}"')
            assert n == sum(1 for r in rows if r[0] == p["audience_id"])
        # Partitioned, with the same key: a conflicting insert is refused as before.
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "INSERT INTO exported_member (audience_id, id, run_id) VALUES ('plain', 'x', $1)", run_id
            )
    finally:
        await conn.close()
