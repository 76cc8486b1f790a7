"""The poll loop's partition workers: a busy partition's backlog stays bounded by holding it out of the polls
(never pausing it), and its next poll is read while the one before is handled."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition

from shared.kafka.partitions import PartitionWorkers
from tests.helpers import eventually

TP = TopicPartition("segment-events", 0)


class Consumer:
    """An AIOKafkaConsumer's pausing, to show the workers never use it (a paused partition's fetched records are
    dropped, in a reference cycle only a full collection frees)."""

    def __init__(self) -> None:
        self._paused: set[TopicPartition] = set()

    def pause(self, *partitions: TopicPartition) -> None:
        self._paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self._paused.difference_update(partitions)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)


class Handler:
    """Handles each batch once released (one ``release()`` a batch); records the batches and whether the
    partition was held meanwhile."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.held_while_handling: list[bool] = []
        self.workers: PartitionWorkers | None = None
        self._releases = asyncio.Semaphore(0)

    async def __call__(self, consumer: Any, tp: TopicPartition, records: Any) -> None:
        assert self.workers is not None
        self.batches.append(list(records))
        self.held_while_handling.append(tp in self.workers.held)
        await self._releases.acquire()

    def release(self) -> None:
        self._releases.release()

    async def handling(self, count: int) -> None:
        """Wait until the ``count``-th batch is being handled."""

        async def handled() -> int:
            return len(self.batches)

        await eventually(handled, until=lambda n: n >= count, timeout=5, interval=0.001)


def _workers(handler: Handler) -> PartitionWorkers:
    workers = PartitionWorkers(process=handler, concurrency=2, max_poll=10, stopping=asyncio.Event(), name="test")
    handler.workers = workers
    return workers


async def test_a_busy_partition_is_polled_again_while_its_poll_is_handled() -> None:
    consumer, handler = Consumer(), Handler()
    workers = _workers(handler)
    workers.enqueue(consumer, TP, list(range(10)))
    assert workers.held == {TP}  # a poll's worth waits: left out of the polls
    await handler.handling(1)
    # Taken by its worker: the poll loop is told (room) and reads the next poll meanwhile.
    assert handler.held_while_handling == [False]
    assert workers.held == set()
    assert workers.room.is_set()

    workers.room.clear()
    workers.enqueue(consumer, TP, list(range(10, 20)))
    assert workers.held == {TP}  # a poll's worth waits again: the backlog stays bounded
    handler.release()
    await handler.handling(2)
    assert handler.batches == [list(range(10)), list(range(10, 20))]
    assert handler.held_while_handling == [False, False]
    assert workers.room.is_set()
    handler.release()
    await workers.settle(None)
    assert workers.held == set()
    assert consumer.paused() == set()  # never paused


async def test_what_waits_is_handled_together_up_to_a_poll() -> None:
    consumer, handler = Consumer(), Handler()
    workers = _workers(handler)
    workers.enqueue(consumer, TP, [0])
    await handler.handling(1)
    for first in (1, 5, 9):
        workers.enqueue(consumer, TP, list(range(first, first + 4)))
    for _ in range(3):
        handler.release()
    await handler.handling(3)
    await workers.settle(None)
    assert handler.batches == [[0], list(range(1, 9)), list(range(9, 13))]


async def test_a_partition_whose_queue_is_dropped_is_no_longer_held() -> None:
    consumer, handler = Consumer(), Handler()
    workers = _workers(handler)
    workers.enqueue(consumer, TP, list(range(10)))
    await handler.handling(1)
    workers.enqueue(consumer, TP, list(range(10, 20)))
    assert workers.held == {TP}
    workers.room.clear()
    settling = asyncio.create_task(workers.settle({TP}))  # revoked: its queue dropped, its batch in flight ends
    handler.release()
    await settling
    assert workers.held == set()
    assert workers.room.is_set()
    assert handler.batches == [list(range(10))]
