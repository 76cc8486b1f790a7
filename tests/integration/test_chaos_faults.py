"""The fault scenario's non-crash faults work as they claim, against the real Postgres and the real file drop
zone: the installed trigger makes the services' writes fail with each chosen SQLSTATE (asyncpg's own error
class for it), lets the driver's writes through, counts what it refused, and stops when its time is up; a
leased part cannot be read from the drop zone (its open, which would block, is refused at once: the zone opens
without blocking) until the driver releases it, and the driver can tell that someone tried."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from shared.dropzone.base import DropZoneUnavailable
from shared.dropzone.file import FileDropZone
from tests.chaos.faults_db import (
    INJECTED_SQLSTATES,
    as_driver,
    inject_errors,
    install_error_trigger,
    refusals,
    remove_error_trigger,
)
from tests.chaos.faults_dropzone import deliver_hanging
from tests.fixtures.bridge_db import Campaign, add_import_audience, ecid_of

pytestmark = pytest.mark.integration


async def test_the_trigger_refuses_writes_with_each_sqlstate_then_stops(campaign: Campaign) -> None:
    pool = campaign.pool
    await add_import_audience(pool, "seg", "visitors", 5001)
    list_id = await pool.fetchval("SELECT list_id FROM shared_audience WHERE audience_id = 'seg'")
    insert = "INSERT INTO list_member (list_id, recipient_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
    await install_error_trigger(pool)
    try:
        for n, code in enumerate(INJECTED_SQLSTATES, start=1):
            await inject_errors(pool, code, 30)
            with pytest.raises(asyncpg.PostgresError) as raised:
                await pool.execute(insert, list_id, n)
            assert raised.value.sqlstate == code
            await pool.execute("DELETE FROM chaos_fault")
        assert await refusals(pool) == len(INJECTED_SQLSTATES)
        # The driver's own writes pass, faults or not.
        await inject_errors(pool, "53100", 30)
        async with pool.acquire() as conn:
            await as_driver(conn, insert, list_id, 1)
        with pytest.raises(asyncpg.DiskFullError):
            await pool.execute(insert, list_id, 2)
        # Once its time is up, a fault is gone.
        await pool.execute("UPDATE chaos_fault SET until = clock_timestamp()")
        await pool.execute(insert, list_id, 2)
        assert await pool.fetchval("SELECT count(*) FROM list_member WHERE list_id = $1", list_id) == 2
    finally:
        await remove_error_trigger(pool)
    assert await pool.fetchval("SELECT count(*) FROM pg_trigger WHERE tgname = 'chaos_fault'") == 0


async def test_a_leased_part_hangs_the_drop_zone_until_released(tmp_path: Path) -> None:
    root = tmp_path / "import"
    root.mkdir()
    batch = deliver_hanging(root, [(ecid_of(i), (5001,), ()) for i in range(1, 6)], int(time.time() * 1000))
    zone = FileDropZone(root, io_timeout_s=0.5)
    parts = [o.name for o in await zone.list() if not o.name.endswith(".info")]
    assert len(parts) == 1

    async def read(name: str) -> bytes:
        return b"".join([chunk async for chunk in zone.read(name)])

    with pytest.raises(DropZoneUnavailable):
        await read(parts[0])
    # A blocking open waits for the lease; the driver sees that someone wanted the file.
    blocked = asyncio.create_task(asyncio.to_thread((root / parts[0]).read_bytes))
    await asyncio.sleep(0.5)
    assert not blocked.done()
    assert batch.release()
    assert ecid_of(3).encode() in await asyncio.wait_for(blocked, 10)
    data = await read(parts[0])
    assert ecid_of(3).encode() in data
