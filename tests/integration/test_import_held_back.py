"""reconcile's import guards against real Postgres: snapshots held back (empty, mass removal, matching nobody),
planned and released by an operator, and never released over a newer run."""

from __future__ import annotations

import uuid

import pytest

from services.reconcile.importing import Importer, release_run
from services.reconcile.release import plan_release
from shared.errors import PermanentError
from tests.fixtures.bridge_db import Campaign, add_import_audience, ecid_of
from tests.fixtures.import_batches import list_members as _members
from tests.fixtures.import_batches import membership_batch as _batch
from tests.fixtures.import_batches import unmatched_ids as _unmatched

pytestmark = pytest.mark.integration


async def test_empty_and_mass_removal_snapshots_are_held_back(campaign: Campaign, importer: Importer) -> None:
    await add_import_audience(campaign.pool, "seg-g", "crm-ids", 5003)
    seed = await importer.apply(
        _batch(
            "seg-g",
            uuid.uuid4(),
            0,
            mode="full",
            id_type="declared",
            data_source="crm-ids",
            adds=[f"CRM{i:06d}" for i in range(1, 41)],
        )
    )
    assert seed is not None
    assert seed.state == "succeeded"

    empty = await importer.apply(
        _batch(
            "seg-g",
            uuid.uuid4(),
            0,
            mode="full",
            id_type="declared",
            data_source="crm-ids",
            adds=["CRM999999"],
        )
    )
    assert empty is not None
    assert empty.state == "blocked"
    # Not "empty": it held an ID, which matched nobody.
    assert (empty.reason or "").startswith("no ID of this snapshot matched a recipient: held back")

    mass = await importer.apply(
        _batch(
            "seg-g",
            uuid.uuid4(),
            0,
            mode="full",
            id_type="declared",
            data_source="crm-ids",
            adds=[f"CRM{i:06d}" for i in range(1, 11)],
        )
    )
    assert mass is not None
    assert mass.state == "blocked"
    assert "30 of 40" in (mass.reason or "")
    assert await _members(campaign, "seg-g") == set(range(1, 41))


async def test_a_released_snapshot_succeeds_without_its_held_back_reason(
    campaign: Campaign, importer: Importer
) -> None:
    await add_import_audience(campaign.pool, "seg-rel", "visitors", 5008)
    seed = await importer.apply(
        _batch("seg-rel", uuid.uuid4(), 0, mode="full", adds=[ecid_of(i) for i in range(1, 21)])
    )
    assert seed is not None
    assert seed.state == "succeeded"
    run = uuid.uuid4()
    held = await importer.apply(_batch("seg-rel", run, 0, mode="full", adds=[ecid_of(1), ecid_of(2)]))
    assert held is not None
    assert (held.state, held.counts["matched"]) == ("blocked", 2)
    assert "18 of 20" in (held.reason or "")
    assert await _members(campaign, "seg-rel") == set(range(1, 21))  # nothing applied while held back

    async with campaign.pool.acquire() as conn:
        released = await release_run(conn, run, "ops")
        assert (released.state, released.reason) == ("succeeded", None)
        assert (released.counts["added"], released.counts["removed"]) == (0, 18)
        assert released.match_rate == {"ecid": 1.0}
        with pytest.raises(PermanentError, match="only a blocked run can be released"):
            await release_run(conn, run, "ops")
        with pytest.raises(PermanentError, match="no import run with this id"):
            await release_run(conn, uuid.uuid4(), "ops")
    row = await campaign.pool.fetchrow("SELECT state, reason, released_by, finished_at FROM run WHERE run_id = $1", run)
    assert row is not None
    assert (row["state"], row["reason"], row["released_by"]) == ("succeeded", None, "ops")
    assert row["finished_at"] is not None
    assert await _members(campaign, "seg-rel") == {1, 2}


async def _snapshot_state(campaign: Campaign, audience: str, run: uuid.UUID) -> tuple[object, ...]:
    """Everything a release (or its plan) could change: the list, the kept IDs, the staged IDs, the run."""
    row = await campaign.pool.fetchrow("SELECT state, reason, counts, released_by FROM run WHERE run_id = $1", run)
    assert row is not None
    staged = await campaign.pool.fetchval("SELECT count(*) FROM import_stage_id WHERE run_id = $1", run)
    return await _members(campaign, audience), await _unmatched(campaign, audience), staged, tuple(row)


async def test_a_snapshot_matching_nobody_says_so_and_is_planned_then_released(
    campaign: Campaign, importer: Importer
) -> None:
    await add_import_audience(campaign.pool, "seg-none", "visitors", 5010)
    seed = await importer.apply(_batch("seg-none", uuid.uuid4(), 0, mode="full", adds=[ecid_of(i) for i in (1, 2, 3)]))
    assert seed is not None
    assert seed.state == "succeeded"
    # A snapshot of IDs no recipient has (another data source's, say): held back, and the reason says why.
    run = uuid.uuid4()
    strangers = [f"{i:038d}" for i in range(900, 905)]
    held = await importer.apply(_batch("seg-none", run, 0, mode="full", adds=strangers))
    assert held is not None
    assert (held.state, held.counts["matched"], held.counts["unmatched"]) == ("blocked", 0, 5)
    assert held.reason == (
        "no ID of this snapshot matched a recipient: held back (release it with `audience-bridge release`)"
    )

    before = await _snapshot_state(campaign, "seg-none", run)
    async with campaign.pool.acquire() as conn:
        plan = await plan_release(conn, run)
    assert (plan.audience_id, plan.list_name, plan.held_because) == ("seg-none", "List seg-none", held.reason)
    assert (plan.matched, plan.unmatched) == (0, 5)
    assert (plan.changes.added, plan.changes.removed, plan.size_before, plan.size_after) == (0, 3, 3, 0)
    assert await _snapshot_state(campaign, "seg-none", run) == before  # the plan changed nothing

    async with campaign.pool.acquire() as conn:
        released = await release_run(conn, run, "ops")
    assert (released.state, released.reason) == ("succeeded", None)
    assert (released.counts["added"], released.counts["removed"]) == (0, 3)
    row = await campaign.pool.fetchrow("SELECT state, reason FROM run WHERE run_id = $1", run)
    assert row is not None
    assert (row["state"], row["reason"]) == ("succeeded", None)  # the held-back reason went with the release
    assert await _members(campaign, "seg-none") == set()


async def test_a_run_older_than_the_last_applied_one_is_not_released(campaign: Campaign, importer: Importer) -> None:
    await add_import_audience(campaign.pool, "seg-stale", "visitors", 5011)
    seed = await importer.apply(
        _batch("seg-stale", uuid.uuid4(), 0, mode="full", adds=[ecid_of(i) for i in range(1, 21)])
    )
    assert seed is not None
    old = uuid.uuid4()
    held = await importer.apply(_batch("seg-stale", old, 0, mode="full", adds=[ecid_of(1)]))
    assert held is not None
    assert held.state == "blocked"
    # The platform's next delivery (a delta) is applied meanwhile: the held snapshot is older than the list now.
    newer = uuid.uuid4()
    applied = await importer.apply(_batch("seg-stale", newer, 0, adds=[ecid_of(21)]))
    assert applied is not None
    assert applied.state == "succeeded"
    before = await _snapshot_state(campaign, "seg-stale", old)
    async with campaign.pool.acquire() as conn:
        for attempt in (plan_release(conn, old), release_run(conn, old, "ops")):
            with pytest.raises(PermanentError, match="a newer run of this audience was applied since") as refused:
                await attempt
            assert refused.value.context["newer_run"] == str(newer)
    assert await _snapshot_state(campaign, "seg-stale", old) == before
    assert await _members(campaign, "seg-stale") == set(range(1, 22))
