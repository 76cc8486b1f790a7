"""The prepared recorded set through the publisher, ecsim and the receipt poller (real Postgres, Kafka, ecsim):
built while the files are written, unseen until the receipts, swapped in by a run whose files were
all applied, and never by one whose receipts refused lines (those IDs stay unshared, the set is dropped)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from services.publish import recorded_set
from services.publish.files import FileOptions
from services.publish.publisher import retry_run
from tests.fixtures.bridge_db import add_export_run, ecid_of
from tests.fixtures.ecsim import ecsim, ecsim_server  # noqa: F401
from tests.integration.test_publish_receipts import poller, rig, trait_members, until_ended  # noqa: F401
from tests.integration.test_publish_runs import PARTNER, Rig, export_batches

pytestmark = pytest.mark.integration


async def test_a_first_run_s_set_is_prepared_by_its_upload_and_swapped_in_by_its_receipts(rig: Rig) -> None:  # noqa: F811
    await rig.ecsim.admin("PUT", "/inbound/faults", {"delay_s": 1.0})
    pool = rig.campaign.pool
    adds = [ecid_of(i) for i in range(1, 51)]
    run_id = await add_export_run(pool, audience_id="ab-swapped", data_source="visitors", mode="append")
    await rig.publish(
        export_batches(run_id, "ab-swapped", adds=adds, mode="append"), rig.publisher(await_receipts=True)
    )

    assert (await rig.run(run_id))["state"] == "uploaded"
    assert await pool.fetchval("SELECT ids FROM export_prepared_set WHERE run_id = $1", run_id) == 50
    assert await rig.members("ab-swapped") == set()  # prepared, not shared: the platform has not said yet

    run = await until_ended(rig, run_id, poller(rig))
    assert run["state"] == "succeeded"
    assert await rig.members("ab-swapped") == set(adds) == await trait_members(rig, "ab-swapped")
    assert (
        await pool.fetchval("SELECT run_id FROM exported_member_partition WHERE audience_id = 'ab-swapped'") == run_id
    )
    assert await pool.fetchval("SELECT count(*) FROM export_prepared_set") == 0

    # The next run adds to the audience's partition row by row (it holds IDs: nothing to prepare).
    more = [ecid_of(i) for i in range(51, 61)]
    second = await add_export_run(pool, audience_id="ab-swapped", data_source="visitors", mode="append")
    await rig.publish(
        export_batches(second, "ab-swapped", adds=more, mode="append"), rig.publisher(await_receipts=True)
    )
    assert await pool.fetchval("SELECT count(*) FROM export_prepared_set") == 0
    run = await until_ended(rig, second, poller(rig))
    assert run["state"] == "succeeded"
    assert await rig.members("ab-swapped") == set(adds + more) == await trait_members(rig, "ab-swapped")


async def test_a_partial_receipt_never_swaps_the_prepared_set_in(rig: Rig) -> None:  # noqa: F811
    await rig.ecsim.admin("PUT", "/inbound/faults", {"reject_line_share": 0.1})
    pool = rig.campaign.pool
    adds = [ecid_of(i) for i in range(1, 61)]
    run_id = await add_export_run(pool, audience_id="ab-refused", data_source="visitors", mode="append")
    await rig.publish(
        export_batches(run_id, "ab-refused", adds=adds, mode="append", size=25), rig.publisher(await_receipts=True)
    )
    assert await pool.fetchval("SELECT ids FROM export_prepared_set WHERE run_id = $1", run_id) == 60

    run = await until_ended(rig, run_id, poller(rig))
    assert run["state"] == "partial"
    refused = {adds[n - 1] for n in range(10, 61, 10)}
    assert await rig.members("ab-refused") == set(adds) - refused == await trait_members(rig, "ab-refused")
    assert await pool.fetchval("SELECT count(*) FROM exported_member_partition WHERE audience_id = 'ab-refused'") == 0
    assert await pool.fetchval("SELECT count(*) FROM export_prepared_set") == 0
    tables = await pool.fetchval("SELECT count(*) FROM pg_class WHERE relname LIKE 'exported_member_r%'")
    assert tables == 0


async def test_the_set_is_built_while_the_files_are_written(rig: Rig) -> None:  # noqa: F811
    """The build does not wait for the files: with the drop zone down (the files retrying), the set is prepared
    while the run is still writing them; the zone comes back only once the set was seen, whatever the pace."""
    pool = rig.campaign.pool
    adds = [ecid_of(i) for i in range(1, 41)]
    run_id = await add_export_run(pool, audience_id="ab-beside", data_source="visitors", mode="append")
    rig.zone.fault.set(60)
    publisher = rig.publisher(await_receipts=True, write_attempts=600, backoff_initial_s=0.05, backoff_max_s=0.05)
    publishing = asyncio.ensure_future(
        rig.publish(export_batches(run_id, "ab-beside", adds=adds, mode="append"), publisher)
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            # One statement, one snapshot: the run's state when its set was first seen prepared.
            seen = await pool.fetchrow(
                """SELECT r.state, p.ids FROM run r LEFT JOIN export_prepared_set p USING (run_id)
                    WHERE r.run_id = $1""",
                run_id,
            )
            assert seen is not None
            if seen["ids"] is not None or publishing.done() or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        assert seen["ids"] == 40
        assert seen["state"] in ("started", "progress")  # before the upload
    finally:
        rig.zone.fault.clear()  # the files go on at their next attempt
        await publishing
    assert (await rig.run(run_id))["state"] == "uploaded"
    run = await until_ended(rig, run_id, poller(rig))
    assert run["state"] == "succeeded"
    assert await rig.members("ab-beside") == set(adds) == await trait_members(rig, "ab-beside")


async def test_a_run_failed_at_its_files_keeps_its_set_for_its_retry_or_builds_it_then(rig: Rig) -> None:  # noqa: F811
    pool = rig.campaign.pool
    adds = [ecid_of(i) for i in range(1, 31)]
    run_id = await add_export_run(pool, audience_id="ab-refiled", data_source="visitors", mode="append")
    rig.zone.fault.set(60)
    await rig.publish(
        export_batches(run_id, "ab-refiled", adds=adds, mode="append"), rig.publisher(await_receipts=True)
    )
    assert (await rig.run(run_id))["state"] == "failed"
    # The set built beside the files stays with the failed run's staging (a superseding run drops both).
    assert await pool.fetchval("SELECT ids FROM export_prepared_set WHERE run_id = $1", run_id) == 30
    # A failed run without one (as runs failed before sets were built beside the files): its retry's build
    # begins while the run is still failed and gets none, so the set is built once the run is uploaded.
    async with pool.acquire() as conn, conn.transaction():
        await recorded_set.drop_prepared(conn, run_id, "ab-refiled", datetime.now(UTC))
    assert await pool.fetchval("SELECT count(*) FROM pg_class WHERE relname LIKE 'exported_member_r%'") == 0

    rig.zone.fault.clear()
    options = FileOptions(partner=PARTNER, await_receipts=True)
    outcome = await retry_run(pool, rig.zone, rig.platform, rig.status, run_id, options=options)
    assert outcome.state == "uploaded"
    assert await pool.fetchval("SELECT ids FROM export_prepared_set WHERE run_id = $1", run_id) == 30
    run = await until_ended(rig, run_id, poller(rig))
    assert run["state"] == "succeeded"
    assert await rig.members("ab-refiled") == set(adds) == await trait_members(rig, "ab-refiled")
    assert (
        await pool.fetchval("SELECT run_id FROM exported_member_partition WHERE audience_id = 'ab-refiled'") == run_id
    )
