"""``Producer.send_batched`` against the real broker: the same records, partitions and order as ``send``,
acknowledged before it returns, in several batches when one would be too large."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiokafka.partitioner import DefaultPartitioner

from shared.errors import PermanentError
from shared.kafka import OutgoingMessage, Producer, ensure_topics
from shared.kafka.producer import MAX_REQUEST_BYTES
from shared.metrics import RuntimeMetrics
from shared.settings import KafkaSettings
from tests.helpers import read_topic

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(kafka_bootstrap: str, topic_prefix: str) -> KafkaSettings:
    return KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix, kafka_topic_partitions=3)


@pytest_asyncio.fixture
async def producer(settings: KafkaSettings) -> AsyncIterator[Producer]:
    producer = Producer(settings, "test", RuntimeMetrics("test"))
    yield producer
    await producer.stop()


def _records(topic: str, keys: int, per_key: int, size: int = 20) -> list[OutgoingMessage]:
    return [
        OutgoingMessage(
            topic=topic,
            key=f"seg-{k}".encode(),
            value=f"{k}:{i}:".encode().ljust(size, b"x"),
            headers=[("n", str(i).encode())],
        )
        for i in range(per_key)
        for k in range(keys)
    ]


async def test_records_land_where_send_puts_them_in_order_with_keys_and_headers(
    settings: KafkaSettings, producer: Producer
) -> None:
    topic = f"{settings.topic_prefix}batched"
    await ensure_topics(settings, [topic])
    records = _records(topic, keys=7, per_key=30)
    await producer.send_batched(records)  # starts the producer itself
    read = await read_topic(settings.kafka_bootstrap_servers, topic, expect=len(records))
    assert len(read) == len(records)
    partitioner = DefaultPartitioner()
    by_key: dict[bytes, list[bytes]] = defaultdict(list)
    for record in sorted(read, key=lambda r: (r.partition, r.offset)):
        assert record.key is not None
        assert record.partition == partitioner(record.key, [0, 1, 2], [0, 1, 2])  # as send would choose
        assert record.value is not None
        by_key[record.key].append(record.value)
        assert dict(record.headers)["n"] == record.value.split(b":")[1]
    for k in range(7):
        key = f"seg-{k}".encode()
        assert by_key[key] == [r.value for r in records if r.key == key]  # each key's records in order
    assert len({r.partition for r in read}) > 1  # the keys spread over the partitions


async def test_more_than_a_batch_holds_goes_in_several_batches_in_order(
    settings: KafkaSettings, producer: Producer
) -> None:
    topic = f"{settings.topic_prefix}batched-big"
    await ensure_topics(settings, [topic])
    # 2.5 MB behind one key: more than one batch (1 MB) holds.
    records = _records(topic, keys=1, per_key=250, size=10_000)
    await producer.send_batched(records)
    read = await read_topic(settings.kafka_bootstrap_servers, topic, expect=len(records))
    assert [r.value for r in sorted(read, key=lambda r: r.offset)] == [r.value for r in records]


async def test_a_record_no_batch_can_hold_is_a_permanent_error(settings: KafkaSettings, producer: Producer) -> None:
    topic = f"{settings.topic_prefix}batched-huge"
    await ensure_topics(settings, [topic])
    with pytest.raises(PermanentError, match="too large"):
        await producer.send_batched([OutgoingMessage(topic=topic, value=b"x" * (MAX_REQUEST_BYTES + 1))])


async def test_nothing_to_send_needs_no_broker(producer: Producer) -> None:
    await producer.send_batched([])
    assert not producer.started
