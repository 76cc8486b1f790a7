"""``Producer.send_batched`` hands aiokafka closed record batches, which its sender takes at once: an open one
is held for ``linger_ms`` in case another send appends to it, a wait the caller (the real-time receiver,
answering once the write is acknowledged) would pay on every write."""

from __future__ import annotations

from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder, MessageBatch
from aiokafka.structs import TopicPartition

from shared.kafka import OutgoingMessage
from shared.kafka.producer import _enqueue_batches


class _Producer:
    """What ``_enqueue_batches`` uses of AIOKafkaProducer: batches of a small size, so that some fill up."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.sent: list[tuple[str, int, BatchBuilder]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def _partition(self, topic: str, partition: Any, key: bytes | None, *_: Any) -> int:
        return 0 if key is None else key[-1] % 3

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0)  # 0: no compression

    async def send_batch(self, builder: BatchBuilder, topic: str, *, partition: int) -> Any:
        self.sent.append((topic, partition, builder))
        return None


async def test_every_batch_is_handed_over_closed_so_that_it_does_not_wait_for_the_linger() -> None:
    producer = _Producer(batch_size=600)
    messages = [
        OutgoingMessage(topic=topic, key=f"k{k}".encode(), value=b"v" * 100) for topic in ("a", "b") for k in range(40)
    ]
    await _enqueue_batches(producer, messages)  # duck-typed: aiokafka is untyped
    assert sum(b.record_count() for _, _, b in producer.sent) == len(messages)
    assert len(producer.sent) > 6  # some batches filled up, the last of each partition did not
    for topic, partition, builder in producer.sent:
        assert builder.closed()
        # aiokafka's own readiness: a batch with linger left is not drained; these are ready at once.
        batch = MessageBatch(TopicPartition(topic, partition), builder, ttl=60, linger_time=60)
        assert batch.remaining_linger() is None
