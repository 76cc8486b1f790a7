"""IMPORT_MAX_POLL_BATCHES: how many membership batches a busy partition hands reconcile's importer at once and
queues, against real Kafka and Postgres. Each batch holds up to 10,000 IDs as Python strings: the bound is what
keeps reconcile's memory flat when a partition has a whole snapshot waiting."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest
from pydantic import SecretStr

from services.reconcile.app import ReconcileApp
from services.reconcile.importing import Importer
from services.reconcile.settings import ReconcileSettings
from shared.kafka import Delivery, OutgoingMessage, Rejected
from shared.messages import AudienceMembership
from shared.topics import AUDIENCE_MEMBERSHIP
from tests.fixtures.bridge_db import Campaign, add_import_audience, ecid_of
from tests.helpers import eventually

pytestmark = pytest.mark.integration

AUDIENCE = "seg-bound"
BATCHES = 6


def _snapshot(run_id: uuid.UUID) -> list[AudienceMembership]:
    return [
        AudienceMembership(
            run_id=run_id,
            seq=seq,
            last=seq == BATCHES - 1,
            audience_id=AUDIENCE,
            data_source="visitors",
            id_type="ecid",
            mode="full",
            adds=[ecid_of(seq + 1)],
        )
        for seq in range(BATCHES)
    ]


async def test_a_busy_partition_hands_the_importer_at_most_the_bound_of_batches(
    campaign: Campaign, database_url: str, kafka_bootstrap: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await add_import_audience(campaign.pool, AUDIENCE, "visitors", 7101)
    handed: list[int] = []
    first_call = asyncio.Event()
    release = asyncio.Event()
    original = Importer.handle

    async def handle(self: Importer, deliveries: Sequence[Delivery[AudienceMembership]]) -> list[Rejected]:
        handed.append(len(deliveries))
        first_call.set()
        await release.wait()  # the first call holds its partition's worker: the other batches queue meanwhile
        return await original(self, deliveries)

    monkeypatch.setattr(Importer, "handle", handle)
    settings = ReconcileSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        database_url=SecretStr(database_url),
        http_port=0,
        import_max_poll_batches=2,
    )
    app = ReconcileApp(settings)
    await app.start()
    try:
        topic = app.topic(AUDIENCE_MEMBERSHIP)
        batches = _snapshot(uuid.uuid4())
        await app.producer.send([OutgoingMessage.of(topic, batches[0])])
        await asyncio.wait_for(first_call.wait(), timeout=30)
        await app.producer.send([OutgoingMessage.of(topic, b) for b in batches[1:]])
        loop = next(c for c in app.consumers if c.group_id.endswith(AUDIENCE_MEMBERSHIP))
        queues = loop._workers._queues

        async def backlog() -> tuple[int, bool]:
            """Records queued behind the held call, and whether the partition was held for having too many."""
            queued = sum(len(r) for q in queues.values() for r in q)
            return queued, bool(loop._workers.held)

        # Either every other batch is queued (no bound: 5 wait) or the bound held the partition first.
        await eventually(backlog, until=lambda b: b[0] >= BATCHES - 1 or b[1], timeout=30)
        release.set()
        await eventually(
            lambda: campaign.pool.fetchval("SELECT state FROM run WHERE audience_id = $1", AUDIENCE),
            until=lambda state: state == "succeeded",
            timeout=30,
        )
    finally:
        release.set()
        await app.stop()
    assert sum(handed) >= BATCHES  # every batch was handed over (a retried poll may hand some twice)
    assert max(handed) <= 2, handed
