"""The poll loop's partition workers: a busy partition's backlog stays bounded by pausing it, and its next poll
is fetched while the one before is handled."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition

from shared.kafka.partitions import PartitionWorkers

TP = TopicPartition("segment-events", 0)


class Consumer:
    """What the workers use of an AIOKafkaConsumer: pausing and resuming partitions."""

    def __init__(self) -> None:
        self._paused: set[TopicPartition] = set()

    def pause(self, *partitions: TopicPartition) -> None:
        self._paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self._paused.difference_update(partitions)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)


class Handler:
    """Handles each batch once released; records the batches and whether the partition was paused meanwhile."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.paused_while_handling: list[bool] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, consumer: Any, tp: TopicPartition, records: Any) -> None:
        self.batches.append(list(records))
        self.paused_while_handling.append(tp in consumer.paused())
        self.started.set()
        await self.release.wait()
        self.release.clear()
        self.started.clear()


def _workers(handler: Handler) -> PartitionWorkers:
    return PartitionWorkers(process=handler, concurrency=2, max_poll=10, stopping=asyncio.Event(), name="test")


async def test_a_busy_partition_is_fetched_again_while_its_poll_is_handled() -> None:
    consumer, handler = Consumer(), Handler()
    workers = _workers(handler)
    workers.enqueue(consumer, TP, list(range(10)))
    assert TP in consumer.paused()  # a poll's worth waits
    await asyncio.wait_for(handler.started.wait(), 5)
    # Taken by its worker: the consumer fetches the next poll meanwhile.
    assert handler.paused_while_handling == [False]
    assert TP not in consumer.paused()

    workers.enqueue(consumer, TP, list(range(10, 20)))
    assert TP in consumer.paused()  # a poll's worth waits again: the backlog stays bounded
    handler.release.set()
    await asyncio.wait_for(handler.started.wait(), 5)
    assert handler.batches == [list(range(10)), list(range(10, 20))]
    assert TP not in consumer.paused()
    handler.release.set()
    await workers.settle(None)
    assert TP not in consumer.paused()


async def test_what_waits_is_handled_together_up_to_a_poll() -> None:
    consumer, handler = Consumer(), Handler()
    workers = _workers(handler)
    workers.enqueue(consumer, TP, [0])
    await asyncio.wait_for(handler.started.wait(), 5)
    for first in (1, 5, 9):
        workers.enqueue(consumer, TP, list(range(first, first + 4)))
    handler.release.set()
    await asyncio.wait_for(handler.started.wait(), 5)
    handler.release.set()
    await asyncio.wait_for(handler.started.wait(), 5)
    handler.release.set()
    await workers.settle(None)
    assert handler.batches == [[0], list(range(1, 9)), list(range(9, 13))]
