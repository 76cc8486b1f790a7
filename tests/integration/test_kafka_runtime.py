"""The shared Kafka runtime against the real broker: commit after success, redelivery, DLQ, retries."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.partitioner import DefaultPartitioner

from shared.errors import PermanentError, TransientError
from shared.kafka import ConsumerLoop, Delivery, OutgoingMessage, Producer, Rejected, ensure_topics
from shared.kafka.producer import MAX_REQUEST_BYTES
from shared.messages import SegmentEvent
from shared.metrics import RuntimeMetrics
from shared.settings import KafkaSettings
from shared.topics import dlq_name
from tests.helpers import committed_offsets, eventually, read_topic, segment_event

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(kafka_bootstrap: str, topic_prefix: str) -> KafkaSettings:
    return KafkaSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        kafka_topic_partitions=3,
        retry_backoff_initial_s=0.05,
        retry_backoff_max_s=0.2,
        shutdown_grace_s=0.5,
    )


@pytest.fixture
def topic(settings: KafkaSettings) -> str:
    return f"{settings.topic_prefix}segment-events"


@pytest_asyncio.fixture
async def producer(settings: KafkaSettings, topic: str) -> AsyncIterator[Producer]:
    await ensure_topics(settings, [topic, dlq_name(topic)])
    producer = Producer(settings, "test", RuntimeMetrics("test"))
    await producer.start()
    yield producer
    await producer.stop()


def _by_segment(topic: str, event: SegmentEvent) -> OutgoingMessage:
    """The event keyed the old way, by its segment alone (still accepted): these tests need a segment's events in
    one partition, in order."""
    return OutgoingMessage(topic=topic, value=event.to_bytes(), key=event.segment_id.encode())


def _loop(
    settings: KafkaSettings, topic: str, producer: Producer, handler: Any, group: str, **options: Any
) -> ConsumerLoop:
    return ConsumerLoop(
        settings=settings,
        service="test",
        models={topic: SegmentEvent},
        handler=handler,
        producer=producer,
        metrics=RuntimeMetrics("test"),
        group_id=group,
        **options,
    )


async def test_batch_is_handled_then_committed(settings: KafkaSettings, topic: str, producer: Producer) -> None:
    events = [segment_event(i) for i in range(20)]
    await producer.send([_by_segment(topic, e) for e in events])
    seen: list[SegmentEvent] = []

    async def handler(deliveries: Sequence[Delivery[SegmentEvent]]) -> None:
        seen.extend(d.message for d in deliveries)

    group = f"g-{uuid.uuid4().hex[:8]}"
    loop = _loop(settings, topic, producer, handler, group)
    await loop.start()
    try:
        offsets = await eventually(
            lambda: committed_offsets(settings.kafka_bootstrap_servers, group),
            until=lambda o: sum(o.values()) == 20,
        )
    finally:
        await loop.stop()
    assert sorted(e.event_id for e in seen) == sorted(e.event_id for e in events)
    assert len(offsets) == 1  # one segment id -> one key -> one partition, in order
    assert [e.id for e in seen] == [e.id for e in events]


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_crash_before_commit_redelivers(
    settings: KafkaSettings, topic: str, producer: Producer, concurrency: int
) -> None:
    events = [segment_event(i) for i in range(5)]
    await producer.send([_by_segment(topic, e) for e in events])
    group = f"g-{uuid.uuid4().hex[:8]}"
    entered = asyncio.Event()

    async def stuck_handler(deliveries: Sequence[Delivery[SegmentEvent]]) -> None:
        entered.set()
        await asyncio.Event().wait()  # the work never finishes: the process "dies" mid-batch

    first = _loop(settings, topic, producer, stuck_handler, group, partition_concurrency=concurrency)
    await first.start()
    await asyncio.wait_for(entered.wait(), 30)
    await first.stop(grace_s=0.2)
    assert await committed_offsets(settings.kafka_bootstrap_servers, group) == {}

    seen: list[str] = []

    async def handler(deliveries: Sequence[Delivery[SegmentEvent]]) -> None:
        seen.extend(d.message.event_id for d in deliveries)

    second = _loop(settings, topic, producer, handler, group)
    await second.start()
    try:
        await eventually(
            lambda: committed_offsets(settings.kafka_bootstrap_servers, group),
            until=lambda o: sum(o.values()) == 5,
        )
    finally:
        await second.stop()
    assert sorted(seen) == sorted(e.event_id for e in events)


def _segments_on_distinct_partitions(count: int, partitions: int) -> list[str]:
    """Segment ids whose keys the producer's default partitioner puts on ``count`` different partitions."""
    partitioner = DefaultPartitioner()
    chosen: dict[int, str] = {}
    for i in range(1000):
        segment = f"seg-{i}"
        chosen.setdefault(partitioner(segment.encode(), list(range(partitions)), list(range(partitions))), segment)
        if len(chosen) == count:
            return list(chosen.values())
    raise AssertionError("no such segments")


async def test_partitions_are_handled_side_by_side_and_each_in_order(
    settings: KafkaSettings, topic: str, producer: Producer
) -> None:
    slow, quick = _segments_on_distinct_partitions(2, 3)
    slow_events = [segment_event(i, segment=slow) for i in range(10)]
    quick_events = [segment_event(i, segment=quick) for i in range(10)]
    await producer.send([_by_segment(topic, e) for e in slow_events])
    slow_entered, quick_done = asyncio.Event(), asyncio.Event()
    seen: dict[str, list[str]] = {slow: [], quick: []}
    overtaken = False

    async def handler(deliveries: Sequence[Delivery[SegmentEvent]]) -> None:
        nonlocal overtaken
        segment = deliveries[0].message.segment_id
        if segment == slow and not seen[slow]:
            # The slow partition's first batch waits for work that arrives only once it is in flight: only
            # handling partitions side by side lets that work through (one after the other, it waits in vain).
            slow_entered.set()
            try:
                await asyncio.wait_for(quick_done.wait(), 10)
                overtaken = True
            except TimeoutError:
                pass
        seen[segment].extend(d.message.event_id for d in deliveries)
        if len(seen[quick]) == len(quick_events):
            quick_done.set()

    group = f"g-{uuid.uuid4().hex[:8]}"
    loop = _loop(settings, topic, producer, handler, group, partition_concurrency=3)
    await loop.start()
    try:
        await asyncio.wait_for(slow_entered.wait(), 30)
        await producer.send([_by_segment(topic, e) for e in quick_events])
        await eventually(
            lambda: committed_offsets(settings.kafka_bootstrap_servers, group),
            until=lambda o: sum(o.values()) == 20,
        )
    finally:
        await loop.stop()
    assert overtaken
    assert seen[slow] == [e.event_id for e in slow_events]
    assert seen[quick] == [e.event_id for e in quick_events]


async def test_a_partition_falling_behind_is_held_until_its_worker_catches_up(
    settings: KafkaSettings, topic: str, producer: Producer
) -> None:
    (segment,) = _segments_on_distinct_partitions(1, 3)
    events = [segment_event(i, segment=segment) for i in range(12)]
    await producer.send([_by_segment(topic, e) for e in events])
    release = asyncio.Event()
    seen: list[str] = []

    async def handler(deliveries: Sequence[Delivery[SegmentEvent]]) -> None:
        await release.wait()
        seen.extend(d.message.event_id for d in deliveries)

    group = f"g-{uuid.uuid4().hex[:8]}"
    loop = _loop(settings, topic, producer, handler, group, partition_concurrency=3, max_poll_records=2)
    await loop.start()
    try:
        # The worker is stuck on its first batch while the poll loop queues more: past a poll's worth, the
        # partition is held out of the polls instead of being read ahead without bound, and never paused (its
        # fetched records would be dropped, to be fetched again).
        consumer = loop._consumer
        assert consumer is not None
        held = loop._workers.held
        await eventually(lambda: _async(set(held)), until=lambda now: len(now) == 1, timeout=30)
        assert consumer.paused() == set()
        release.set()
        await eventually(
            lambda: committed_offsets(settings.kafka_bootstrap_servers, group),
            until=lambda o: sum(o.values()) == 12,
        )
        assert held == set()
        assert consumer.paused() == set()
    finally:
        await loop.stop()
    assert seen == [e.event_id for e in events]


async def _async(value: Any) -> Any:
    return value


async def test_poison_message_goes_to_dlq_and_the_loop_goes_on(
    settings: KafkaSettings, topic: str, producer: Producer
) -> None:
    good_before, good_after = segment_event(1), segment_event(2)
    invalid = orjson.dumps({**orjson.loads(segment_event(3).to_bytes()), "id_type": "phone"})
    await producer.send(
        [
            _by_segment(topic, good_before),
            OutgoingMessage(topic=topic, value=b"\xff not json", key=b"seg-1"),
            OutgoingMessage(topic=topic, value=invalid, key=b"seg-1"),
            _by_segment(topic, good_after),
        ]
    )
    seen: list[str] = []

    async def handler(deliveries: Sequence[Delivery[SegmentEvent]]) -> None:
        seen.extend(d.message.event_id for d in deliveries)

    group = f"g-{uuid.uuid4().hex[:8]}"
    loop = _loop(settings, topic, producer, handler, group)
    await loop.start()
    try:
        await eventually(
            lambda: committed_offsets(settings.kafka_bootstrap_servers, group),
            until=lambda o: sum(o.values()) == 4,
        )
    finally:
        await loop.stop()
    assert seen == [good_before.event_id, good_after.event_id]

    dead = await read_topic(settings.kafka_bootstrap_servers, dlq_name(topic), expect=2)
    assert [r.value for r in dead] == [b"\xff not json", invalid]
    for record in dead:
        headers = {k: v.decode() for k, v in record.headers}
        assert record.key == b"seg-1"
        assert headers["dlq.error"] == "PoisonMessage"
        assert headers["dlq.service"] == "test"
        assert headers["dlq.original.topic"] == topic
        assert headers["dlq.original.partition"].isdigit()
        assert headers["dlq.original.offset"] in {"1", "2"}
    reasons = [dict(r.headers)["dlq.reason"].decode() for r in dead]
    assert "not JSON" in reasons[0]
    assert "id_type" in reasons[1]


async def test_transient_errors_are_retried_without_skipping(
    settings: KafkaSettings, topic: str, producer: Producer
) -> None:
    events = [segment_event(i) for i in range(3)]
    await producer.send([_by_segment(topic, e) for e in events])
    calls = 0
    handled: list[str] = []

    async def flaky(deliveries: Sequence[Delivery[SegmentEvent]]) -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise TransientError("postgres unavailable") if calls == 1 else ConnectionRefusedError("db down")
        handled.extend(d.message.event_id for d in deliveries)

    group = f"g-{uuid.uuid4().hex[:8]}"
    loop = _loop(settings, topic, producer, flaky, group)
    await loop.start()
    try:
        await eventually(
            lambda: committed_offsets(settings.kafka_bootstrap_servers, group),
            until=lambda o: sum(o.values()) == 3,
        )
    finally:
        await loop.stop()
    assert calls >= 3
    assert sorted(handled) == sorted(e.event_id for e in events)
    assert await read_topic(settings.kafka_bootstrap_servers, dlq_name(topic), expect=1, timeout=2) == []


async def test_permanent_handler_error_dead_letters_only_the_guilty_message(
    settings: KafkaSettings, topic: str, producer: Producer
) -> None:
    events = [segment_event(i) for i in range(5)]
    guilty = events[2].event_id
    await producer.send([_by_segment(topic, e) for e in events])
    handled: list[str] = []

    async def picky(deliveries: Sequence[Delivery[SegmentEvent]]) -> None:
        if any(d.message.event_id == guilty for d in deliveries):
            raise PermanentError("unknown data source", data_source="visitors")
        handled.extend(d.message.event_id for d in deliveries)

    group = f"g-{uuid.uuid4().hex[:8]}"
    loop = _loop(settings, topic, producer, picky, group)
    await loop.start()
    try:
        await eventually(
            lambda: committed_offsets(settings.kafka_bootstrap_servers, group),
            until=lambda o: sum(o.values()) == 5,
        )
    finally:
        await loop.stop()
    assert sorted(handled) == sorted(e.event_id for e in events if e.event_id != guilty)
    dead = await read_topic(settings.kafka_bootstrap_servers, dlq_name(topic), expect=1)
    assert len(dead) == 1
    assert orjson.loads(dead[0].value)["event_id"] == guilty
    assert dict(dead[0].headers)["dlq.error"] == b"PermanentError"


async def test_handler_can_reject_single_messages(settings: KafkaSettings, topic: str, producer: Producer) -> None:
    events = [segment_event(i) for i in range(6)]
    await producer.send([_by_segment(topic, e) for e in events])
    calls: list[int] = []

    async def rejecting(deliveries: Sequence[Delivery[SegmentEvent]]) -> list[Rejected]:
        calls.append(len(deliveries))
        return [Rejected(d, PermanentError("unknown segment")) for d in deliveries if d.offset % 2 == 1]

    group = f"g-{uuid.uuid4().hex[:8]}"
    loop = _loop(settings, topic, producer, rejecting, group)
    await loop.start()
    try:
        await eventually(
            lambda: committed_offsets(settings.kafka_bootstrap_servers, group),
            until=lambda o: sum(o.values()) == 6,
        )
    finally:
        await loop.stop()
    assert sum(calls) == 6  # no one-by-one retries: the handler said which ones it rejects
    dead = await read_topic(settings.kafka_bootstrap_servers, dlq_name(topic), expect=3)
    assert sorted(int(dict(r.headers)["dlq.original.offset"]) for r in dead) == [1, 3, 5]
    assert {dict(r.headers)["dlq.reason"] for r in dead} == {b"unknown segment"}


async def test_linger_coalesces_a_trickle_into_one_batch(
    settings: KafkaSettings, topic: str, producer: Producer
) -> None:
    sizes: list[int] = []

    async def handler(deliveries: Sequence[Delivery[SegmentEvent]]) -> None:
        sizes.append(len(deliveries))

    group = f"g-{uuid.uuid4().hex[:8]}"
    loop = _loop(settings, topic, producer, handler, group, max_poll_records=1000, linger_s=3.0)
    await loop.start()
    try:
        await eventually(lambda: _joined(loop), until=bool)
        # Three small sends in quick succession, well inside the linger window.
        for burst in range(3):
            await producer.send([_by_segment(topic, segment_event(burst * 10 + i)) for i in range(10)])
        await eventually(
            lambda: committed_offsets(settings.kafka_bootstrap_servers, group), until=lambda o: sum(o.values()) == 30
        )
    finally:
        await loop.stop()
    assert sizes == [30]


async def _joined(loop: ConsumerLoop) -> bool:
    return loop.joined


async def test_topics_take_the_largest_message_the_producer_sends(settings: KafkaSettings, topic: str) -> None:
    # A batch of long declared IDs may pass the 1 MB a cluster allows by default: the bridge's topics say
    # themselves what they take, whatever the cluster's default.
    await ensure_topics(settings, [topic])
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        response = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    configs = {entry[0]: entry for resource in response for result in resource.resources for entry in result[4]}
    _, value, _, source, *_ = configs["max.message.bytes"]
    assert value == str(MAX_REQUEST_BYTES)
    assert source == 1  # DYNAMIC_TOPIC_CONFIG: set on the topic, not inherited from this broker's own setting


@pytest.mark.parametrize("compression", ["none", "snappy", "lz4", "zstd", "gzip"])
async def test_every_compression_setting_round_trips(settings: KafkaSettings, topic: str, compression: str) -> None:
    # KAFKA_COMPRESSION_TYPE: each codec must be available here (cramjam) and taken by the broker.
    compressed = settings.model_copy(update={"kafka_compression_type": compression})
    await ensure_topics(compressed, [topic])
    producer = Producer(compressed, "test", RuntimeMetrics("test"))
    events = [segment_event(i) for i in range(200)]
    try:
        await producer.send([_by_segment(topic, e) for e in events])
    finally:
        await producer.stop()
    records = await read_topic(settings.kafka_bootstrap_servers, topic, expect=len(events))
    assert sorted(SegmentEvent.model_validate_json(r.value or b"").event_id for r in records) == sorted(
        e.event_id for e in events
    )
