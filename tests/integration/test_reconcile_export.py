"""reconcile's export side against real Postgres and Kafka: ID resolution, diffs by mode, exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
import pytest_asyncio

from services.publish.publisher import _lock_key
from services.reconcile.catalog import CatalogDataSource, upsert_data_source
from services.reconcile.export_binding import RebindRefused, rebind
from services.reconcile.export_release import ReleaseRefused, release_export, release_plan
from services.reconcile.export_waiting import ExportQueue
from services.reconcile.exporting import export_audience_id, export_run_id
from services.reconcile.run_cancel import CancelRefused, cancel_run
from shared.kafka import Delivery
from shared.messages import AudienceExportBatch, AudienceExportRequest
from tests.fixtures.bridge_db import Campaign, ecid_of, email_of, hashed_email_of
from tests.fixtures.export_rig import ExportRig, export_request, export_rig, run_row
from tests.helpers import read_topic

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def rig(campaign: Campaign, kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[ExportRig]:
    async with export_rig(campaign, kafka_bootstrap, topic_prefix) as made:
        yield made


async def test_declared_ids_are_hashed_and_unmappable_recipients_excluded(rig: ExportRig) -> None:
    await rig.campaign.pool.execute("UPDATE recipient SET email = NULL WHERE recipient_id IN (3, 4)")
    await rig.make_list("vip", range(1, 101))
    run_id = await rig.exporter.export(export_request("vip", "hashed-emails"))
    assert run_id is not None
    batches = await rig.batches(expect=3)  # 98 IDs in batches of 40
    assert [b.seq for b in batches] == [0, 1, 2]
    assert [b.last for b in batches] == [False, False, True]
    ids = [i for b in batches for i in b.adds]
    assert sorted(ids) == sorted(hashed_email_of(r) for r in range(1, 101) if r not in (3, 4))
    assert not any("@" in i for i in ids)
    assert batches[-1].totals == {"received": 100, "excluded": 2, "adds": 98, "removes": 0, "batches": 3}
    assert batches[0].audience_id == export_audience_id("hashed-emails", "VIP")
    assert batches[0].dpid == 1002
    excluded = await rig.campaign.pool.fetch("SELECT recipient_id FROM export_excluded WHERE run_id = $1", run_id)
    assert {r["recipient_id"] for r in excluded} == {3, 4}
    run = await rig.campaign.pool.fetchrow("SELECT state, counts, mode FROM run WHERE run_id = $1", run_id)
    assert run is not None
    assert run["mode"] == "append"
    assert orjson.loads(run["counts"])["excluded"] == 2
    assert email_of(1).strip() not in str(batches)


async def test_visitor_ids_export_every_ecid_of_a_recipient(rig: ExportRig) -> None:
    await rig.make_list("clickers", [1, 2, 3])
    await rig.exporter.export(export_request("clickers", "visitors"))
    [batch] = await rig.batches(expect=1)
    assert sorted(batch.adds) == sorted([ecid_of(1), ecid_of(2), ecid_of(2, 1), ecid_of(3)])


async def test_append_mirror_and_full_diffs(rig: ExportRig) -> None:
    await rig.make_list("l", range(1, 11))
    await rig.exporter.export(export_request("l", "crm-ids", "append"))
    first = await rig.batches(expect=1)
    await rig.confirm(first)

    # 1..5 stay, 6..10 leave, 11..12 join; and an ID the bridge never sent is in the platform-side history.
    await rig.make_list("l", [1, 2, 3, 4, 5, 11, 12])
    await rig.exporter.export(export_request("l", "crm-ids", "append"))
    [append] = await rig.batches(expect=1)
    assert sorted(append.adds) == ["CRM000011", "CRM000012"]
    assert append.removes == []  # append never removes
    await rig.confirm([append])

    await rig.exporter.export(export_request("l", "crm-ids", "mirror"))
    [mirror] = await rig.batches(expect=1)
    assert mirror.adds == []  # 11 and 12 went out with the confirmed append run
    assert sorted(mirror.removes) == [f"CRM{i:06d}" for i in range(6, 11)]  # only what the bridge sent
    await rig.confirm([mirror])

    await rig.exporter.export(export_request("l", "crm-ids", "full"))
    [full] = await rig.batches(expect=1)
    await rig.confirm([full])
    assert full.mode == "full"
    assert sorted(full.adds) == sorted(f"CRM{i:06d}" for i in (1, 2, 3, 4, 5, 11, 12))
    assert full.removes == []


async def test_a_redelivered_request_is_not_emitted_twice(rig: ExportRig) -> None:
    await rig.make_list("once", range(1, 5))
    request = export_request("once", "crm-ids")
    assert await rig.exporter.export(request) is not None
    assert await rig.exporter.export(request) is None
    await rig.batches(expect=1)
    assert len(await read_topic(rig.bootstrap, rig.topic, expect=2, timeout=2)) == 1
    assert await rig.campaign.pool.fetchval("SELECT count(*) FROM run WHERE direction = 'export'") == 1


async def test_invalid_requests_fail_with_a_reason(rig: ExportRig) -> None:
    await rig.make_list("ok", [1])
    bad = [export_request("no-such-list", "crm-ids"), export_request("ok", "no-such-source")]
    deliveries = [
        Delivery(message=r, topic="t", partition=0, offset=i, key=None, headers=()) for i, r in enumerate(bad)
    ]
    rejected = await rig.exporter.handle(deliveries)
    assert [str(r.error) for r in rejected] == [
        "unknown list (list='no-such-list')",
        "unknown data source (data_source='no-such-source')",
    ]
    # One event per request, under its attempt 0 run id (keyed by run: partitions read in any order).
    events = {e.run_id: (e.state, e.reason) for e in await rig.statuses(expect=2)}
    assert events == {
        export_run_id(r.request_id, 0): ("failed", str(rejection.error))
        for r, rejection in zip(bad, rejected, strict=True)
    }
    assert rig.runs_counted("failed") == 2


async def test_a_pii_restricted_data_source_is_blocked(rig: ExportRig) -> None:
    async with rig.campaign.pool.acquire() as conn:
        await upsert_data_source(
            conn, CatalogDataSource(name="restricted", dpid=1099, id_type="ecid", export_controls=("PII",))
        )
    await rig.make_list("blocked", [1])
    delivery = Delivery(
        message=export_request("blocked", "restricted"), topic="t", partition=0, offset=0, key=None, headers=()
    )
    assert await rig.exporter.handle([delivery]) == []  # refused by governance, not a bad message
    assert await rig.campaign.pool.fetchval("SELECT count(*) FROM run") == 0
    [event] = await rig.statuses(expect=1)
    assert (event.run_id, event.state) == (export_run_id(delivery.message.request_id, 0), "blocked")
    assert "PII export restriction" in (event.reason or "")
    assert (rig.runs_counted("blocked"), rig.runs_counted("failed")) == (1, 0)


async def test_an_audience_waits_for_its_previous_run_to_be_confirmed(rig: ExportRig) -> None:
    await rig.make_list("serial", range(1, 5))
    await rig.exporter.export(export_request("serial", "crm-ids", "mirror"))
    [first] = await rig.batches(expect=1)
    # The list changes before publish confirmed the first run: diffing now could miss a removal. The request
    # waits (recorded, off the consumer), and so does the next one of the audience, behind it.
    await rig.make_list("serial", range(2, 5))
    second, third = export_request("serial", "crm-ids", "mirror"), export_request("serial", "crm-ids", "mirror")
    assert await rig.exporter.export(second) is None
    assert await rig.exporter.export(third) is None
    assert await rig.queue.tick() == 0  # the first run is still under way
    await rig.confirm([first])
    assert await rig.queue.tick() == 1
    [emitted] = await rig.batches(expect=1)
    assert emitted.removes == ["CRM000001"]
    assert emitted.run_id == export_run_id(second.request_id, 1)  # in the order they came
    await rig.confirm([emitted])
    assert await rig.queue.tick() == 1
    [last] = await rig.batches(expect=1)
    assert (last.run_id, last.adds, last.removes) == (export_run_id(third.request_id, 1), [], [])
    assert await rig.campaign.pool.fetchval("SELECT count(*) FROM export_request WHERE waiting_since IS NOT NULL") == 0


async def test_a_redelivered_emitted_request_never_waits_for_a_newer_run(rig: ExportRig) -> None:
    """Regression (found by `make chaos`): after a crash, Kafka redelivers old, already emitted requests
    ahead of a newer one whose run is unconfirmed; they must be skipped, not wait for it (a deadlock)."""
    await rig.make_list("replay", range(1, 5))
    first = export_request("replay", "crm-ids", "mirror")
    await rig.exporter.export(first)
    await rig.confirm(await rig.batches(expect=1))
    second = export_request("replay", "crm-ids", "mirror")
    await rig.exporter.export(second)  # emitted, not confirmed yet
    await rig.batches(expect=1)
    assert await rig.exporter.export(first) is None


async def test_an_emitted_run_is_reported_started_then_progress_and_counted_by_publish(rig: ExportRig) -> None:
    await rig.make_list("st", range(1, 81))
    run_id = await rig.exporter.export(export_request("st", "crm-ids"))
    assert run_id is not None
    batches = await rig.batches(expect=2)
    # Exactly two full batches: a full batch leaves only once another ID follows, so the last one is known.
    assert [(len(b.adds), b.last) for b in batches] == [(40, False), (40, True)]
    assert batches[-1].totals == {"received": 80, "excluded": 0, "adds": 80, "removes": 0, "batches": 2}
    events = await rig.statuses(expect=2)
    assert [(e.run_id, e.state, e.audience_id) for e in events] == [
        (run_id, "started", batches[0].audience_id),
        (run_id, "progress", batches[0].audience_id),
    ]
    assert (events[0].counts.received, events[0].counts.added) == (80, 0)
    assert (events[1].counts.received, events[1].counts.added, events[1].counts.removed) == (80, 80, 0)
    row = await rig.campaign.pool.fetchrow("SELECT state, counts FROM run WHERE run_id = $1", run_id)
    assert row is not None
    assert row["state"] == "progress"
    assert orjson.loads(row["counts"]) == {"received": 80, "excluded": 0, "added": 80, "removed": 0, "batches": 2}
    # Handed to publish, which counts how it ends: not a run that ended here.
    assert rig.runs_counted("progress") is None
    assert (rig.runs_counted("failed"), rig.runs_counted("blocked")) == (0, 0)


async def test_adds_and_removes_share_batches_in_the_order_they_are_read(rig: ExportRig) -> None:
    await rig.make_list("mix", range(1, 51))
    await rig.exporter.export(export_request("mix", "crm-ids", "mirror"))
    await rig.confirm(await rig.batches(expect=2))
    await rig.make_list("mix", range(31, 81))  # 1..30 leave, 51..80 join
    run_id = await rig.exporter.export(export_request("mix", "crm-ids", "mirror"))
    first, last = await rig.batches(expect=2)
    # The adds are read first; the first batch is topped up with removes.
    assert (len(first.adds), len(first.removes), first.last) == (30, 10, False)
    assert (len(last.adds), len(last.removes), last.last) == (0, 20, True)
    assert sorted(first.adds) == [f"CRM{i:06d}" for i in range(51, 81)]
    assert sorted(first.removes + last.removes) == [f"CRM{i:06d}" for i in range(1, 31)]
    assert last.totals == {"received": 50, "excluded": 0, "adds": 30, "removes": 30, "batches": 2}
    counts = await rig.campaign.pool.fetchval("SELECT counts FROM run WHERE run_id = $1", run_id)
    assert orjson.loads(counts)["batches"] == 2


async def test_a_new_attempt_fails_the_unfinished_run_of_its_request(rig: ExportRig) -> None:
    await rig.make_list("again", range(1, 5))
    request = export_request("again", "crm-ids")
    # An attempt that never finished emitting (the process died while sending its batches).
    await rig.campaign.pool.execute(
        "INSERT INTO export_request (request_id, audience_id, attempts, requested_by) VALUES ($1, $2, 1, 't')",
        request.request_id,
        export_audience_id("crm-ids", "VIP"),
    )
    stale = export_run_id(request.request_id, 1)
    await rig.campaign.pool.execute(
        """INSERT INTO run (run_id, direction, audience_id, mode, state, request_id)
           VALUES ($1, 'export', $2, 'append', 'progress', $3)""",
        stale,
        export_audience_id("crm-ids", "VIP"),
        request.request_id,
    )
    run_id = await rig.exporter.export(request)
    assert run_id == export_run_id(request.request_id, 2)
    await rig.batches(expect=1)
    rows = await rig.campaign.pool.fetch(
        "SELECT run_id, state, reason FROM run WHERE request_id = $1", request.request_id
    )
    states = {r["run_id"]: (r["state"], r["reason"]) for r in rows}
    assert states == {stale: ("failed", "superseded by a new attempt of its request"), run_id: ("progress", None)}


def _delivery(request: AudienceExportRequest, offset: int) -> Delivery[AudienceExportRequest]:
    return Delivery(message=request, topic="t", partition=0, offset=offset, key=None, headers=())


async def test_requests_of_other_audiences_go_ahead_of_one_that_waits(rig: ExportRig) -> None:
    await rig.make_list("a", range(1, 5))
    await rig.make_list("b", range(5, 9))
    await rig.exporter.export(export_request("a", "crm-ids", "mirror", name="A"))
    await rig.batches(expect=1)  # A's run is under way (publish has not confirmed it)
    later_a, b = export_request("a", "crm-ids", "mirror", name="A"), export_request("b", "crm-ids", "mirror", name="B")
    # One poll: A's request waits (recorded, the handler returns), B's is emitted.
    assert await rig.exporter.handle([_delivery(later_a, 0), _delivery(b, 1)]) == []
    # Partitions are read in any order: B's batch is found by its audience.
    records = await read_topic(rig.bootstrap, rig.topic, expect=2)
    batches = [AudienceExportBatch.model_validate_json(r.value) for r in records]
    assert sorted(x.audience_id for x in batches) == sorted(export_audience_id("crm-ids", n) for n in ("A", "B"))
    waiting = await rig.campaign.pool.fetch("SELECT request_id FROM export_request WHERE waiting_since IS NOT NULL")
    assert [r["request_id"] for r in waiting] == [later_a.request_id]


async def test_a_stuck_run_ends_failed_after_the_bound_and_the_waiting_request_goes_ahead(rig: ExportRig) -> None:
    queue = ExportQueue(rig.campaign.pool, rig.exporter, rig.reporter, run_timeout_s=60)
    await rig.make_list("stuck", range(1, 5))
    stuck = await rig.exporter.export(export_request("stuck", "crm-ids", "mirror", name="S"))
    assert stuck is not None
    await rig.batches(expect=1)  # publish never finishes it (its batches refused, or lost)
    behind = export_request("stuck", "crm-ids", "mirror", name="S")
    assert await rig.exporter.export(behind) is None
    assert await queue.tick() == 0  # within the bound: the request waits
    # Its last move is put 61 s back rather than waited for.
    await rig.campaign.pool.execute(
        "UPDATE run SET updated_at = now() - interval '61 seconds' WHERE run_id = $1", stuck
    )
    async with rig.campaign.pool.acquire() as publish:
        # Publish is writing its files (it holds the run's lock): it is not stuck.
        await publish.execute("SELECT pg_advisory_lock($1)", _lock_key(stuck))
        assert await queue.tick() == 0
        assert (await run_row(rig, stuck))["state"] == "progress"
        await publish.execute("SELECT pg_advisory_unlock($1)", _lock_key(stuck))
    assert await queue.tick() == 1
    row = await run_row(rig, stuck)
    assert row["state"] == "failed"
    assert "EXPORT_RUN_TIMEOUT_S" in row["reason"]
    [emitted] = await rig.batches(expect=1)
    assert emitted.run_id == export_run_id(behind.request_id, 1)
    assert rig.runs_counted("failed") == 1


async def test_a_mass_removal_is_held_with_its_numbers_until_released(rig: ExportRig) -> None:
    exporter = rig.guarded_exporter(max_removal_share=0.5, min_size=20)
    await rig.make_list("big", range(1, 41))
    await exporter.export(export_request("big", "crm-ids", "mirror", name="Big"))
    await rig.confirm(await rig.batches(expect=1))
    await rig.make_list("big", range(1, 11))  # 30 of the 40 shared IDs leave the list: 75%
    request = export_request("big", "crm-ids", "mirror", name="Big")
    held = await exporter.export(request)
    row = await run_row(rig, held)
    assert row["state"] == "blocked"
    assert "would remove 30 of the 40 IDs" in row["reason"]
    assert "EXPORT_MAX_REMOVAL_SHARE" in row["reason"]
    assert orjson.loads(row["counts"])["to_remove"] == 30
    assert len(await read_topic(rig.bootstrap, rig.topic, expect=rig.seen + 1, timeout=2)) == rig.seen  # nothing sent
    assert rig.runs_counted("blocked") == 1
    assert await exporter.export(request) is None  # a redelivery changes nothing
    assert held is not None
    async with rig.campaign.pool.acquire() as conn:
        plan = await release_plan(conn, held)
    assert (plan.mode, plan.shared, plan.adds, plan.removes, plan.after) == ("mirror", 40, 0, 30, 10)
    outcome = await release_export(exporter, rig.campaign.pool, held, "ops")
    assert (outcome.run_id, outcome.state) == (held, "progress")
    [released] = await rig.batches(expect=1)
    assert released.run_id == held
    assert sorted(released.removes) == [f"CRM{i:06d}" for i in range(11, 41)]
    row = await run_row(rig, held)
    assert (row["state"], row["reason"], row["released_by"]) == ("progress", None, "ops")
    with pytest.raises(ReleaseRefused, match="only a held-back export run"):
        await release_export(exporter, rig.campaign.pool, held, "ops")


async def test_an_audience_belongs_to_its_list_until_an_operator_rebinds_it(rig: ExportRig) -> None:
    await rig.make_list("first", range(1, 5))
    await rig.make_list("second", range(3, 9))
    await rig.exporter.export(export_request("first", "crm-ids", "mirror", name="Owned"))
    await rig.confirm(await rig.batches(expect=1))
    other = export_request("second", "crm-ids", "mirror", name="Owned")
    refused = await rig.exporter.export(other)
    row = await run_row(rig, refused)
    assert row["state"] == "failed"
    assert "belongs to list 'first'" in row["reason"]
    assert "audience rebind" in row["reason"]
    assert await rig.exporter.export(other) is None  # refused once, whatever Kafka redelivers
    audience_id = export_audience_id("crm-ids", "Owned")
    first_id = await rig.campaign.pool.fetchval("SELECT list_id FROM list WHERE name = 'first'")
    assert (
        await rig.campaign.pool.fetchval("SELECT list_id FROM shared_audience WHERE audience_id = $1", audience_id)
        == first_id
    )
    async with rig.campaign.pool.acquire() as conn:
        rebound = await rebind(conn, "Owned", "second", rebound_by="ops")
    assert (rebound.audience_id, rebound.from_list, rebound.to_list) == (audience_id, "first", "second")
    audit = await rig.campaign.pool.fetchrow("SELECT * FROM audience_rebind WHERE audience_id = $1", audience_id)
    assert audit is not None
    assert (audit["from_list_id"], audit["rebound_by"]) == (first_id, "ops")
    await rig.exporter.export(export_request("second", "crm-ids", "mirror", name="Owned"))
    [moved] = await rig.batches(expect=1)
    assert sorted(moved.adds) == [f"CRM{i:06d}" for i in range(5, 9)]
    assert sorted(moved.removes) == ["CRM000001", "CRM000002"]
    # Not while a run of the audience is under way (it was diffed against the list of then).
    async with rig.campaign.pool.acquire() as conn:
        with pytest.raises(RebindRefused, match="under way"):
            await rebind(conn, audience_id, "first", rebound_by="ops")


async def test_cancel_ends_a_run_for_good_and_leaves_what_the_platform_applied(rig: ExportRig) -> None:
    await rig.make_list("c", range(1, 5))
    await rig.exporter.export(export_request("c", "crm-ids", "mirror", name="C"))
    await rig.confirm(await rig.batches(expect=1))
    audience_id = export_audience_id("crm-ids", "C")
    applied = await rig.campaign.pool.fetch("SELECT id FROM exported_member WHERE audience_id = $1", audience_id)
    await rig.make_list("c", range(3, 9))
    run_id = await rig.exporter.export(export_request("c", "crm-ids", "mirror", name="C"))
    assert run_id is not None
    await rig.batches(expect=1)  # under way, never finished
    assert await rig.exporter.export(export_request("c", "crm-ids", "mirror", name="C")) is None  # waits behind it
    async with rig.campaign.pool.acquire() as publish, rig.campaign.pool.acquire() as conn:
        await publish.execute("SELECT pg_advisory_lock($1)", _lock_key(run_id))
        with pytest.raises(CancelRefused, match="publish is writing"):
            await cancel_run(conn, run_id, "ops", wait_s=0.2)
        await publish.execute("SELECT pg_advisory_unlock($1)", _lock_key(run_id))
        outcome = await cancel_run(conn, run_id, "ops")
        assert (outcome.state, outcome.reason) == ("cancelled", "cancelled by ops")
        with pytest.raises(CancelRefused, match="ended already"):
            await cancel_run(conn, run_id, "ops")
    after = await rig.campaign.pool.fetch("SELECT id FROM exported_member WHERE audience_id = $1", audience_id)
    assert sorted(r["id"] for r in after) == sorted(r["id"] for r in applied)
    # The audience's waiting request goes ahead, diffed against what the platform applied.
    assert await rig.queue.tick() == 1
    [next_run] = await rig.batches(expect=1)
    assert sorted(next_run.adds) == [f"CRM{i:06d}" for i in range(5, 9)]
    assert sorted(next_run.removes) == ["CRM000001", "CRM000002"]


async def test_two_workers_handed_the_same_request_emit_it_once(rig: ExportRig) -> None:
    """A redelivery after a rebalance, or two replicas resuming the same waiting request: the second waits for
    the first and finds the request emitted, rather than superseding an attempt still being emitted."""
    await rig.make_list("twice", range(1, 5))
    request = export_request("twice", "crm-ids")
    results = await asyncio.gather(rig.exporter.export(request), rig.exporter.export(request))
    assert sorted(r is None for r in results) == [False, True]
    rows = await rig.campaign.pool.fetch("SELECT state FROM run WHERE request_id = $1", request.request_id)
    assert [r["state"] for r in rows] == ["progress"]
    await rig.batches(expect=1)


async def test_a_full_run_is_guarded_too_and_a_small_audience_is_not(rig: ExportRig) -> None:
    exporter = rig.guarded_exporter(max_removal_share=0.5, min_size=20)
    await rig.make_list("full", range(1, 31))
    await rig.make_list("small", range(1, 11))
    for list_name in ("full", "small"):
        await exporter.export(export_request(list_name, "crm-ids", "full", name=list_name))
    await rig.confirm(await rig.batches(expect=2))
    await rig.make_list("full", range(1, 11))  # 20 of 30 leave
    await rig.make_list("small", range(1, 2))  # 9 of 10 leave, but 10 < EXPORT_GUARD_MIN_SIZE
    held = await exporter.export(export_request("full", "crm-ids", "full", name="full"))
    assert (await run_row(rig, held))["state"] == "blocked"
    went = await exporter.export(export_request("small", "crm-ids", "full", name="small"))
    assert (await run_row(rig, went))["state"] == "progress"
    # Partitions are read in any order: the run's batch is found by its run id.
    records = await read_topic(rig.bootstrap, rig.topic, expect=3)
    [batch] = [b for r in records if (b := AudienceExportBatch.model_validate_json(r.value)).run_id == went]
    assert batch.adds == ["CRM000001"]
