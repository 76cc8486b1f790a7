"""One segment's events over several partitions, against real Kafka and Postgres.

``segment-events`` is keyed by segment and ID: a segment's events spread over the partitions, each (segment, ID)
in one, in order. Ingest then handles polls of the same segment, feeding the same audience, side by side; their
batches reach reconcile as runs of their own. A producer still keying by segment alone (or switching keys) can put
one ID's events on two partitions at once: the ledger orders them by ``occurred_at`` across the partitions.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.ingest.audiences import AudienceDirectory, ImportAudience
from services.ingest.event_ledger import EventLedger
from services.ingest.events import SegmentEventHandler
from services.ingest.flush_window import FlushWindow, ended_runs_in
from services.reconcile.importing import Importer, ImportGuards
from shared.errors import TransientError
from shared.kafka import Delivery, OutgoingMessage, Producer, ensure_topics
from shared.messages import AudienceMembership, SegmentEvent
from shared.metrics import RuntimeMetrics
from shared.runs.reporter import RunReporter
from shared.segment_event_key import segment_event_key
from shared.settings import KafkaSettings
from tests.fixtures.bridge_db import Campaign, add_import_audience, ecid_of
from tests.helpers import eventually, read_topic

pytestmark = pytest.mark.integration

SEGMENT = "7201"
AUDIENCE = "spread-visitors"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def event(n: int, op: str, at: datetime = T0) -> SegmentEvent:
    return SegmentEvent.model_validate(
        {
            "event_id": f"ev-{uuid.uuid4().hex}",
            "segment_id": SEGMENT,
            "id_type": "ecid",
            "data_source": "visitors",
            "id": ecid_of(n),
            "op": op,
            "occurred_at": at,
        }
    )


def poll(partition: int, events: Sequence[SegmentEvent]) -> list[Delivery[SegmentEvent]]:
    """A poll of one partition, from its offset 0."""
    return [
        Delivery(message=e, topic="segment-events", partition=partition, offset=k, key=None, headers=())
        for k, e in enumerate(events)
    ]


async def _no_governance(_audience: ImportAudience) -> str | None:
    return None


class GatedProducer:
    """A producer whose sends wait for ``release`` (Kafka slow to acknowledge a poll's batches)."""

    def __init__(self, producer: Producer | _Refusing) -> None:
        self._producer = producer
        self.waiting = asyncio.Event()
        self.release = asyncio.Event()

    async def send(self, messages: Sequence[OutgoingMessage]) -> None:
        self.waiting.set()
        await self.release.wait()
        await self._producer.send(messages)


@dataclass
class Ingest:
    campaign: Campaign
    producer: Producer
    ledger: EventLedger
    topic: str
    bootstrap: str
    prefix: str

    def handler(
        self, producer: Producer | GatedProducer | None = None, window: FlushWindow | None = None
    ) -> SegmentEventHandler:
        return SegmentEventHandler(
            directory=AudienceDirectory(self.campaign.pool, refresh_s=60),
            producer=producer or self.producer,  # type: ignore[arg-type]  # GatedProducer sends as Producer does
            membership_topic=self.topic,
            status=RunReporter(self.producer, service="test", topic_prefix=self.prefix),
            governance=_no_governance,
            ledger=self.ledger,
            window=window,
        )

    async def batches(self, expect: int) -> list[AudienceMembership]:
        records = await read_topic(self.bootstrap, self.topic, expect=expect, timeout=10)
        assert len(records) == expect
        return [AudienceMembership.model_validate_json(r.value or b"") for r in records]


@pytest_asyncio.fixture
async def ingest(campaign: Campaign, kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[Ingest]:
    await add_import_audience(campaign.pool, AUDIENCE, "visitors", int(SEGMENT))
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    topic = f"{topic_prefix}audience-membership"
    await ensure_topics(settings, [topic, f"{topic_prefix}audience-sync-status"])
    producer = Producer(settings, "test", RuntimeMetrics("test"))
    await producer.start()
    ledger = EventLedger(campaign.pool, retention_h=1)
    yield Ingest(campaign, producer, ledger, topic, kafka_bootstrap, topic_prefix)
    await producer.stop()


async def _members(pool: asyncpg.Pool) -> set[int]:
    rows = await pool.fetch(
        "SELECT recipient_id FROM list_member JOIN shared_audience USING (list_id) WHERE audience_id = $1", AUDIENCE
    )
    return {r["recipient_id"] for r in rows}


async def test_a_segments_events_spread_over_the_partitions_each_id_in_order_in_one(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    topic = f"{topic_prefix}segment-events"
    await ensure_topics(settings, [topic])
    # Each ID added, then removed, then added again: its three events must stay in one partition, in that order.
    ops = ("add", "remove", "add")
    sent = [event(n, op, T0 + timedelta(seconds=k)) for k, op in enumerate(ops) for n in range(1, 61)]
    producer = Producer(settings, "test", RuntimeMetrics("test"))
    try:
        await producer.send([OutgoingMessage.of(topic, e) for e in sent])
    finally:
        await producer.stop()
    records = await read_topic(kafka_bootstrap, topic, expect=len(sent))
    assert len(records) == len(sent)
    assert {r.key for r in records} == {segment_event_key(SEGMENT, ecid_of(n)) for n in range(1, 61)}
    partitions_of: dict[str, set[int]] = {}
    ops_of: dict[str, list[str]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        got = SegmentEvent.model_validate_json(record.value or b"")
        partitions_of.setdefault(got.id, set()).add(record.partition)
        ops_of.setdefault(got.id, []).append(got.op)
    assert len({p for ps in partitions_of.values() for p in ps}) == settings.kafka_topic_partitions
    assert all(len(ps) == 1 for ps in partitions_of.values())
    assert all(tuple(o) == ops for o in ops_of.values())


async def test_polls_of_two_partitions_feeding_one_audience_all_reach_the_list(
    ingest: Ingest, campaign: Campaign
) -> None:
    """Both polls start at offset 0 of their partition and feed the same audience: two runs of disjoint IDs, both
    applied by reconcile (one run id for both would have it skip the second's batch)."""
    odd = [event(n, "add") for n in range(1, 40, 2)] + [event(5, "remove", T0 + timedelta(seconds=1))]
    even = [event(n, "add") for n in range(2, 41, 2)] + [event(6, "remove", T0 + timedelta(seconds=1))]
    handler = ingest.handler()
    assert await handler(poll(0, odd)) == []
    assert await handler(poll(1, even)) == []
    batches = await ingest.batches(expect=2)
    assert len({b.run_id for b in batches}) == 2
    assert {frozenset(b.adds) for b in batches} == {
        frozenset(ecid_of(n) for n in range(1, 40, 2) if n != 5),
        frozenset(ecid_of(n) for n in range(2, 41, 2) if n != 6),
    }
    importer = Importer(
        campaign.pool,
        RunReporter(ingest.producer, service="test", topic_prefix=ingest.prefix),
        ImportGuards(max_removal_share=0.5, min_list_size=10),
    )
    await importer.handle(
        [
            Delivery(message=b, topic="audience-membership", partition=0, offset=k, key=None, headers=())
            for k, b in enumerate(batches)
        ]
    )
    assert await _members(campaign.pool) == set(range(1, 41)) - {5, 6}


async def test_polls_of_partitions_waiting_meanwhile_are_handled_together_as_one_run(ingest: Ingest) -> None:
    """While partition 0's poll waits for Kafka, polls of partitions 1 and 2 arrive: they are handled next, as one
    run for the audience (a run per partition and poll would swamp reconcile), and each caller gets its own
    rejections back."""
    gated = GatedProducer(ingest.producer)
    handler = ingest.handler(gated)
    first = asyncio.create_task(handler(poll(0, [event(1, "add")])))
    await asyncio.wait_for(gated.waiting.wait(), timeout=10)
    unknown = event(9, "add").model_copy(update={"segment_id": "9999"})
    second = asyncio.create_task(handler(poll(1, [event(2, "add"), event(3, "add")])))
    third = asyncio.create_task(handler(poll(2, [event(4, "add"), unknown])))
    await asyncio.sleep(0)  # one turn of the loop: both are queued behind the first
    gated.release.set()
    results = await asyncio.gather(first, second, third)
    assert [[(r.delivery.partition, r.delivery.offset) for r in got] for got in results] == [[], [], [(2, 1)]]
    batches = await ingest.batches(expect=2)
    assert [sorted(b.adds) for b in batches] == [[ecid_of(1)], [ecid_of(2), ecid_of(3), ecid_of(4)]]
    assert len({b.run_id for b in batches}) == 2


async def _apply(ingest: Ingest, batches: Sequence[AudienceMembership]) -> None:
    """What reconcile does with them: the runs applied and ended (``succeeded`` in ``run``)."""
    importer = Importer(
        ingest.campaign.pool,
        RunReporter(ingest.producer, service="test", topic_prefix=ingest.prefix),
        ImportGuards(max_removal_share=0.5, min_list_size=10),
    )
    await importer.handle(
        [
            Delivery(message=b, topic="audience-membership", partition=0, offset=k, key=None, headers=())
            for k, b in enumerate(batches)
        ]
    )


async def test_a_flush_waits_for_reconcile_to_end_the_last_ones_and_takes_the_polls_arriving_meanwhile(
    ingest: Ingest,
) -> None:
    """One flush allowed in flight: the first poll's run goes out; the next poll's flush waits until reconcile ended
    that run (its state in ``run``), and a poll arriving meanwhile joins it: one run for both, not a run each."""
    lookup = ended_runs_in(ingest.campaign.pool)
    looks: list[int] = []

    async def ended(run_ids: list[uuid.UUID]) -> Collection[uuid.UUID]:
        found = await lookup(run_ids)
        looks.append(len(found))
        return found

    async def looked() -> int:
        return len(looks)

    window = FlushWindow(ended, limit=1, max_wait_s=30, poll_s=0.01)
    handler = ingest.handler(window=window)
    assert await handler(poll(0, [event(1, "add")])) == []
    [first] = await ingest.batches(expect=1)
    second = asyncio.create_task(handler(poll(1, [event(2, "add"), event(3, "add")])))
    await eventually(looked, until=lambda n: n >= 3, timeout=10, interval=0.01)  # it looked, and looks again
    assert not second.done(), "the flush went out while reconcile had not ended the last one"
    assert set(looks) == {0}
    third = asyncio.create_task(handler(poll(2, [event(4, "add")])))
    await asyncio.sleep(0)  # queued behind the waiting flush
    await _apply(ingest, [first])
    assert list(await asyncio.wait_for(asyncio.gather(second, third), timeout=10)) == [[], []]
    batches = await ingest.batches(expect=2)
    assert sorted(batches[1].adds) == [ecid_of(2), ecid_of(3), ecid_of(4)]
    assert window.in_flight == 1
    await _no_more_batches(ingest, after=2)
    await _apply(ingest, batches[1:])
    assert await _members(ingest.campaign.pool) == {1, 2, 3, 4}


async def test_a_failed_group_fails_each_of_its_polls(ingest: Ingest) -> None:
    """Kafka refusing the group's batches: every poll of the group gets the error (each is retried), nothing is
    recorded in the ledger."""
    gated = GatedProducer(_Refusing())
    handler = ingest.handler(gated)
    first = asyncio.create_task(handler(poll(0, [event(1, "add")])))
    await asyncio.wait_for(gated.waiting.wait(), timeout=10)
    queued = [event(2, "add"), event(3, "add")]
    second = asyncio.create_task(handler(poll(1, queued[:1])))
    third = asyncio.create_task(handler(poll(2, queued[1:])))
    await asyncio.sleep(0)
    gated.release.set()
    results = await asyncio.gather(first, second, third, return_exceptions=True)
    assert [type(r) for r in results] == [TransientError] * 3
    assert await ingest.ledger.admit(queued) == {e.event_id for e in queued}


class _Refusing:
    async def send(self, _messages: Sequence[OutgoingMessage]) -> None:
        raise TransientError("Kafka did not acknowledge")


async def _waits_for_a_lock(pool: asyncpg.Pool) -> bool:
    return bool(
        await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
    )


async def test_one_ids_changes_on_two_partitions_at_once_apply_in_time_order(ingest: Ingest) -> None:
    """Partition 0 holds an older remove of ID 1, partition 1 a newer add (the producer keyed them differently).
    Partition 0's poll is waiting for Kafka when partition 1's comes: the latter's claim waits for the former's
    commit, then goes out after it. Applied in order, the newer add wins; checked in the ledger before either."""
    older, newer = event(1, "remove", T0), event(1, "add", T0 + timedelta(seconds=5))
    gated = GatedProducer(ingest.producer)
    slow = asyncio.create_task(ingest.handler(gated)(poll(0, [older])))
    await asyncio.wait_for(gated.waiting.wait(), timeout=10)
    fast = asyncio.create_task(ingest.handler()(poll(1, [newer])))
    try:
        await eventually(lambda: _waits_for_a_lock(ingest.campaign.pool), until=bool, timeout=10)
        assert not fast.done()
    finally:
        gated.release.set()
    assert list(await asyncio.gather(slow, fast)) == [[], []]
    batches = await ingest.batches(expect=2)
    assert [(b.adds, b.removes) for b in batches] == [([], [ecid_of(1)]), ([ecid_of(1)], [])]


async def test_an_older_change_on_another_partition_after_a_newer_one_is_ignored(ingest: Ingest) -> None:
    """The other way round: the newer add is claimed first and waits for Kafka; the older remove, on another
    partition, waits for that claim's commit and is then ignored: nothing of it is emitted."""
    newer, older = event(1, "add", T0 + timedelta(seconds=5)), event(1, "remove", T0)
    gated = GatedProducer(ingest.producer)
    slow = asyncio.create_task(ingest.handler(gated)(poll(0, [newer])))
    await asyncio.wait_for(gated.waiting.wait(), timeout=10)
    late = asyncio.create_task(ingest.handler()(poll(1, [older])))
    try:
        await eventually(lambda: _waits_for_a_lock(ingest.campaign.pool), until=bool, timeout=10)
    finally:
        gated.release.set()
    assert list(await asyncio.gather(slow, late)) == [[], []]
    batches = await ingest.batches(expect=1)
    assert [(b.adds, b.removes) for b in batches] == [([ecid_of(1)], [])]
    await _no_more_batches(ingest, after=1)


async def _no_more_batches(ingest: Ingest, *, after: int) -> None:
    """Nothing beyond the first ``after`` batches: the topic's end offsets add up to ``after``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=ingest.bootstrap)
    await consumer.start()
    try:
        partitions = KafkaSettings().kafka_topic_partitions  # the topic was created with the default
        ends = await consumer.end_offsets([TopicPartition(ingest.topic, p) for p in range(partitions)])
    finally:
        await consumer.stop()
    assert sum(ends.values()) == after
