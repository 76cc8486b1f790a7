"""A request the export queue hands back is not lost when its attempt fails on the way, and is never handled twice
at once; a released run whose batches cannot be sent ends at once (real Postgres and Kafka).

Found by ``make chaos``: a request that had waited for its audience was resumed, its run committed, and the
Postgres connection was cut while its batches went out. Its consumer had long moved past it, so no Kafka
redelivery would bring it back; the queue no longer saw it as waiting, and the run stayed ``progress`` with
nothing sent until ``EXPORT_RUN_TIMEOUT_S`` failed it, its export lost.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

import pytest
import pytest_asyncio
from aiokafka.errors import KafkaConnectionError

from services.reconcile.export_locks import request_lock
from services.reconcile.export_release import release_export
from services.reconcile.exporting import SUPERSEDED, export_run_id
from shared.kafka import OutgoingMessage
from shared.retry import is_transient
from tests.fixtures.bridge_db import Campaign
from tests.fixtures.export_rig import ExportRig, export_request, export_rig, run_row

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def rig(campaign: Campaign, kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[ExportRig]:
    async with export_rig(campaign, kafka_bootstrap, topic_prefix) as made:
        yield made


async def _waiting_behind_a_run(rig: ExportRig, name: str) -> uuid.UUID:
    """A request that waits for the run ahead of it, which then ends: the queue will hand it back."""
    await rig.make_list(name, range(1, 6))
    ahead = await rig.exporter.export(export_request(name, "crm-ids", "mirror", name=name))
    assert ahead is not None
    first = await rig.batches(expect=1)
    behind = export_request(name, "crm-ids", "mirror", name=name)
    assert await rig.exporter.export(behind) is None  # it waits
    await rig.make_list(name, range(1, 4))  # 4 and 5 leave the list meanwhile
    await rig.confirm(first)  # the run ahead ends
    return behind.request_id


async def _request_row(rig: ExportRig, request_id: uuid.UUID) -> tuple[int, uuid.UUID | None, bool]:
    row = await rig.campaign.pool.fetchrow(
        "SELECT attempts, emitted_run, waiting_since IS NOT NULL AS waiting FROM export_request WHERE request_id = $1",
        request_id,
    )
    assert row is not None
    return row["attempts"], row["emitted_run"], row["waiting"]


async def test_a_resumed_request_whose_batches_never_left_is_handed_back_and_emitted(
    rig: ExportRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    request_id = await _waiting_behind_a_run(rig, "lost")
    send = rig.producer.send
    lost: list[int] = []

    async def loses_the_first_batches(messages: Sequence[OutgoingMessage]) -> None:
        if not lost and any(m.topic == rig.topic for m in messages):
            lost.append(len(messages))
            raise KafkaConnectionError("the broker went away while the run's batches were sent")
        await send(messages)

    monkeypatch.setattr(rig.producer, "send", loses_the_first_batches)
    # The queue's loop logs a transient error and looks again at its next tick (ExportQueue.run).
    with pytest.raises(KafkaConnectionError) as failed:
        await rig.queue.tick()
    assert is_transient(failed.value)
    first = export_run_id(request_id, 1)
    assert (await run_row(rig, first))["state"] == "progress"  # committed, nothing of it sent
    assert await _request_row(rig, request_id) == (1, None, True)  # still waiting: the queue's to hand back

    assert await rig.queue.tick() == 1
    [batch] = await rig.batches(expect=1)
    second = export_run_id(request_id, 2)
    assert batch.run_id == second
    assert sorted(batch.removes) == ["CRM000004", "CRM000005"]
    superseded = await run_row(rig, first)
    assert (superseded["state"], superseded["reason"]) == ("failed", SUPERSEDED)
    assert (await run_row(rig, second))["state"] == "progress"
    assert await _request_row(rig, request_id) == (2, second, False)
    assert await rig.queue.tick() == 0  # emitted: nothing waits any more


async def test_the_queue_leaves_a_request_another_worker_is_handling_and_takes_it_if_that_worker_fails(
    rig: ExportRig,
) -> None:
    request_id = await _waiting_behind_a_run(rig, "busy")
    async with rig.campaign.pool.acquire() as worker:
        # Another replica (or a Kafka redelivery) has the request's turn: it is emitting it.
        await worker.execute("SELECT pg_advisory_lock($1::int, $2::int)", *request_lock(request_id))
        # Handed back, and left to that worker at once: the queue does not wait behind it.
        assert await asyncio.wait_for(rig.queue.tick(), timeout=10) == 1
        assert await _request_row(rig, request_id) == (0, None, True)
        # That worker dies without emitting it (Postgres releases its session's lock).
        await worker.execute("SELECT pg_advisory_unlock($1::int, $2::int)", *request_lock(request_id))
    assert await rig.queue.tick() == 1
    [batch] = await rig.batches(expect=1)
    assert batch.run_id == export_run_id(request_id, 1)
    assert await _request_row(rig, request_id) == (1, batch.run_id, False)


async def test_a_release_whose_batches_cannot_be_sent_ends_its_run_failed_at_once(
    rig: ExportRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = rig.guarded_exporter(max_removal_share=0.5, min_size=20)
    await rig.make_list("held", range(1, 41))
    await exporter.export(export_request("held", "crm-ids", "mirror", name="Held"))
    await rig.confirm(await rig.batches(expect=1))
    await rig.make_list("held", range(1, 11))  # 30 of 40 leave: held back by the guard
    held = await exporter.export(export_request("held", "crm-ids", "mirror", name="Held"))
    assert held is not None
    assert (await run_row(rig, held))["state"] == "blocked"
    send = rig.producer.send

    async def broker_away_for_batches(messages: Sequence[OutgoingMessage]) -> None:
        if any(m.topic == rig.topic for m in messages):
            raise KafkaConnectionError("the broker went away while the released run's batches were sent")
        await send(messages)

    monkeypatch.setattr(rig.producer, "send", broker_away_for_batches)
    with pytest.raises(KafkaConnectionError):  # the operator is told
        await release_export(exporter, rig.campaign.pool, held, "ops")
    row = await run_row(rig, held)
    # Not left in progress for EXPORT_RUN_TIMEOUT_S (a release cannot be repeated): ended, saying what to do.
    assert row["state"] == "failed"
    assert "could not all be sent (KafkaConnectionError)" in row["reason"]
    assert f"/api/runs/{held}/retry" in row["reason"]
    assert row["released_by"] == "ops"
    assert rig.runs_counted("failed") == 1
