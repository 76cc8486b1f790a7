"""The prepared recorded set through the publisher, ecsim and the receipt poller (real Postgres, Kafka, ecsim):
built while the platform processes the files, unseen until the receipts, swapped in by a run whose files were
all applied, and never by one whose receipts refused lines (those IDs stay unshared, the set is dropped)."""

from __future__ import annotations

import pytest

from tests.fixtures.bridge_db import add_export_run, ecid_of
from tests.fixtures.ecsim import ecsim, ecsim_server  # noqa: F401
from tests.integration.test_publish_receipts import poller, rig, trait_members, until_ended  # noqa: F401
from tests.integration.test_publish_runs import Rig, export_batches

pytestmark = pytest.mark.integration


async def test_a_first_run_s_set_is_prepared_at_upload_and_swapped_in_by_its_receipts(rig: Rig) -> None:  # noqa: F811
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
