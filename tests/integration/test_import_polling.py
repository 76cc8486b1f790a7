"""Import polling intervals (issue 19) against real Postgres, Kafka and a file:// zone: a delivery feeding an
audience with ``poll_every`` waits in the zone until the audience's next slot, is then imported once; the last
poll is kept in Postgres, so a restarted scanner neither polls early nor misses a slot (missed slots poll once)."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from services.ingest.run_ids import file_run_id
from services.reconcile.catalog import CatalogImportAudience, apply_catalog, load_catalog_file, upsert_import_audience
from services.reconcile.status_queries import load_snapshot
from tests.fixtures.bridge_db import Campaign, add_import_audience, ecid_of
from tests.helpers import deliver_outbound
from tests.integration.test_ingest_scan import Scanner, scanner  # noqa: F401

pytestmark = pytest.mark.integration


async def _slots_pass(pool: asyncpg.Pool, audience_id: str, hours: float) -> None:
    """As if ``hours`` went by: the interval's anchor and last slot move back (the DB clock is real)."""
    await pool.execute(
        """UPDATE import_poll SET anchor = anchor - make_interval(secs => $2 * 3600),
               last_slot = last_slot - make_interval(secs => $2 * 3600) WHERE audience_id = $1""",
        audience_id,
        hours,
    )


async def _poll_row(pool: asyncpg.Pool, audience_id: str) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM import_poll WHERE audience_id = $1", audience_id)
    assert row is not None
    return row


async def _hourly(pool: asyncpg.Pool, audience_id: str) -> None:
    async with pool.acquire() as conn:
        await upsert_import_audience(
            conn,
            CatalogImportAudience(
                audience_id=audience_id,
                name=f"Audience {audience_id}",
                platform_segment_id=5001,
                data_source="visitors",
                list=f"List {audience_id}",
                poll_every="1h",
            ),
        )


async def test_a_delivery_waits_for_its_audiences_slot_then_is_imported_once(
    campaign: Campaign,
    scanner: Scanner,  # noqa: F811
) -> None:
    await _hourly(campaign.pool, "hourly")
    first = deliver_outbound(
        scanner.zone_dir, "full", [(ecid_of(i), (5001,), ()) for i in range(1, 4)], 1_700_000_000_000
    )
    delivered = scanner.inbox()
    assert await scanner.importer().scan() == 0
    assert scanner.inbox() == delivered  # held, untouched
    assert await campaign.pool.fetchval("SELECT count(*) FROM processed_file") == 0
    assert (await _poll_row(campaign.pool, "hourly"))["last_slot"] is None

    await _slots_pass(campaign.pool, "hourly", 1.01)  # the first slot has come
    importer = scanner.importer()
    assert await importer.scan() == 1
    row = await _poll_row(campaign.pool, "hourly")
    assert row["last_slot"] == row["anchor"] + timedelta(hours=1)
    [batch] = await scanner.batches(expect=1)
    assert (batch.audience_id, batch.run_id) == ("hourly", file_run_id(first.batch_root, "hourly"))
    assert sorted(batch.adds) == sorted(ecid_of(i) for i in range(1, 4))
    assert scanner.inbox() == set()

    # A delivery just after the slot waits for the next one, across a restart of the scanner too.
    deliver_outbound(scanner.zone_dir, "full", [(ecid_of(i), (5001,), ()) for i in range(4, 6)], 1_700_000_000_001)
    assert await importer.scan() == 0
    assert await scanner.importer().scan() == 0
    assert len(scanner.inbox()) == 2
    assert await _poll_row(campaign.pool, "hourly") == row
    assert len(await scanner.batches(expect=1)) == 1  # nothing more was emitted


async def test_slots_missed_while_down_poll_once_on_recovery(
    campaign: Campaign,
    scanner: Scanner,  # noqa: F811
) -> None:
    await _hourly(campaign.pool, "hourly")
    assert await scanner.importer().scan() == 0  # ingest sees the interval: counting starts
    await _slots_pass(campaign.pool, "hourly", 1.01)
    assert await scanner.importer().scan() == 0  # the first slot, polled with nothing delivered
    polled = await _poll_row(campaign.pool, "hourly")
    assert polled["last_slot"] is not None

    deliver_outbound(scanner.zone_dir, "full", [(ecid_of(i), (5001,), ()) for i in range(1, 3)], 1_700_000_000_000)
    await _slots_pass(campaign.pool, "hourly", 3.5)  # ingest was down for three slots and a half
    restarted = scanner.importer()
    assert await restarted.scan() == 1
    recovered = await _poll_row(campaign.pool, "hourly")
    assert recovered["last_slot"] == recovered["anchor"] + timedelta(hours=4)
    assert recovered["last_polled_at"] > polled["last_polled_at"]
    deliver_outbound(scanner.zone_dir, "full", [(ecid_of(9), (5001,), ())], 1_700_000_000_001)
    assert await restarted.scan() == 0  # the missed slots were polled once: the next is an hour on
    assert await _poll_row(campaign.pool, "hourly") == recovered
    assert len(await scanner.batches(expect=1)) == 1
    # The status page's reading: last poll as recorded, next an interval after the slot polled.
    [shown] = (await load_snapshot(campaign.pool)).import_polls
    assert (shown.audience_id, shown.every_s) == ("hourly", 3600)
    assert shown.last_polled_at == recovered["last_polled_at"]
    assert shown.next_poll == recovered["last_slot"] + timedelta(hours=1)


async def test_a_delivery_an_audience_without_interval_also_takes_is_read_at_once(
    campaign: Campaign,
    scanner: Scanner,  # noqa: F811
) -> None:
    await _hourly(campaign.pool, "hourly")
    await add_import_audience(campaign.pool, "every-scan", "visitors", 5001)
    first = deliver_outbound(
        scanner.zone_dir, "full", [(ecid_of(i), (5001,), ()) for i in range(1, 4)], 1_700_000_000_000
    )
    assert await scanner.importer().scan() == 1
    sent = await scanner.batches(expect=2)
    # Read whole once, it feeds both audiences: the earliest slot among them (here: every scan) decides.
    assert {(b.audience_id, b.run_id) for b in sent} == {
        (a, file_run_id(first.batch_root, a)) for a in ("hourly", "every-scan")
    }
    assert (await _poll_row(campaign.pool, "hourly"))["last_slot"] is None  # the hourly slot itself is still to come


async def test_removing_the_interval_reads_at_every_scan_again(
    campaign: Campaign,
    scanner: Scanner,  # noqa: F811
) -> None:
    await _hourly(campaign.pool, "hourly")
    deliver_outbound(scanner.zone_dir, "full", [(ecid_of(1), (5001,), ())], 1_700_000_000_000)
    assert await scanner.importer().scan() == 0
    await campaign.pool.execute("UPDATE shared_audience SET poll_every_s = NULL WHERE audience_id = 'hourly'")
    assert await scanner.importer().scan() == 1
    assert await campaign.pool.fetchval("SELECT count(*) FROM import_poll") == 0


async def test_the_catalog_file_and_the_cli_set_an_audiences_interval(
    campaign: Campaign, database_url: str, tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        "import_audiences:\n"
        "  - {audience_id: weekly, name: Weekly, platform_segment_id: 5002, data_source: visitors,\n"
        "     list: Weekly, poll_every: 2h}\n"
    )
    async with campaign.pool.acquire() as conn:
        await apply_catalog(conn, load_catalog_file(catalog))
    every = "SELECT poll_every_s FROM shared_audience WHERE audience_id = $1"
    assert await campaign.pool.fetchval(every, "weekly") == 7200

    args = ("audience", "add-import", "seg-77", "--segment", "77", "--data-source", "visitors", "--list", "Seg 77")
    code, out = await _cli(database_url, *args, "--poll-every", "6h")
    assert code == 0, out
    assert await campaign.pool.fetchval(every, "seg-77") == 6 * 3600
    code, out = await _cli(database_url, *args, "--poll-every", "10s")
    assert code == 2
    assert out.startswith("error: poll_every")
    assert await campaign.pool.fetchval(every, "seg-77") == 6 * 3600  # nothing written
    code, out = await _cli(database_url, *args)
    assert code == 0, out
    assert await campaign.pool.fetchval(every, "seg-77") is None


async def _cli(database_url: str, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *args,
        env={**os.environ, "DATABASE_URL": database_url, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()
