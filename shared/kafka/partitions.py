"""Partitions handled side by side: the poll loop queues each partition's records for a worker of its own.

A partition whose batch takes long (a large run's end) then holds up only itself; order holds within each
partition since one worker handles it. At most ``concurrency`` batches are handled at a time.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.kafka.batch_processor import Stopping
from shared.kafka.deliveries import Records

Process = Callable[[AIOKafkaConsumer, TopicPartition, Records], Awaitable[None]]


class PartitionWorkers:
    def __init__(
        self, *, process: Process, concurrency: int, max_poll: int, stopping: asyncio.Event, name: str
    ) -> None:
        self._process = process
        self._slots = asyncio.Semaphore(concurrency)
        self._max_poll = max_poll
        self._stopping = stopping
        self._name = name
        self._queues: dict[TopicPartition, deque[Records]] = {}
        self._workers: dict[TopicPartition, asyncio.Task[None]] = {}
        self.crashed: BaseException | None = None

    def enqueue(self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: Records) -> None:
        """Queue a partition's records for its worker (started when it has none). A partition with a poll's
        worth of records waiting is paused until its worker takes them: the backlog stays bounded, and a
        partition that keeps up is never paused (pausing drops what the consumer fetched ahead)."""
        queue = self._queues.setdefault(tp, deque())
        queue.append(records)
        if sum(len(r) for r in queue) >= self._max_poll:
            consumer.pause(tp)
        if tp not in self._workers:
            self._workers[tp] = asyncio.create_task(self._work(consumer, tp), name=f"{self._name}:{tp.partition}")

    async def _work(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
        queue = self._queues[tp]
        try:
            while queue and not self._stopping.is_set():
                # What waits is handled at once, up to a poll's worth: bigger batches, fewer transactions.
                records = queue.popleft()
                while queue and len(records) + len(queue[0]) <= self._max_poll:
                    records = records + queue.popleft()
                # Resumed as soon as less than a poll's worth waits, so that the next poll is fetched while this
                # one is handled. Resumed only once the queue was empty after handling, a partition that kept its
                # worker busy put a fetch between every two polls: a segment in one partition (the real-time
                # receiver's key) moved 10,000 events/s, half of what was offered.
                if tp in consumer.paused() and sum(len(r) for r in queue) < self._max_poll:
                    consumer.resume(tp)
                async with self._slots:
                    await self._process(consumer, tp, records)
        except Stopping:
            pass
        except Exception as exc:  # a handler bug: the poll loop re-raises it, as it would have done itself
            self.crashed = self.crashed or exc
        finally:
            # No await from the last look at the queue to here: the poll loop cannot slip records in between.
            self._workers.pop(tp, None)
            self._queues.pop(tp, None)

    async def settle(self, partitions: set[TopicPartition] | None) -> None:
        """Let the batch in flight of ``partitions`` (None: all) end; what is still queued for them is dropped
        (uncommitted: their next owner, or this consumer once they are back, fetches it again)."""
        chosen = [tp for tp in self._workers if partitions is None or tp in partitions]
        for tp in chosen:
            queue = self._queues.get(tp)
            if queue:
                queue.clear()
        tasks = [self._workers[tp] for tp in chosen if tp in self._workers]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
