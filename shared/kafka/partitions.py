"""Partitions handled side by side: the poll loop queues each partition's records for a worker of its own.

A partition whose batch takes long (a large run's end) then holds up only itself; order holds within each
partition since one worker handles it. At most ``concurrency`` batches are handled at a time.

A partition with a poll's worth of records queued is *held*: the poll loop leaves it out of its polls
(``ConsumerLoop._poll`` in :mod:`shared.kafka.consumer`) until its worker takes them. Not paused: aiokafka drops
what it fetched ahead for a paused partition (fetched again on resume), in a reference cycle of the records and
the generator unpacking them that only a full collection frees (with full collections ten times rarer, a
harness of reconcile's consumer peaked at 200 MB paused against 158 MB held, issue 18). A held partition's
next records wait in the consumer's fetch buffer as the bytes fetched (one fetch a partition, so the backlog
stays bounded), and are read from there.
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
        # Partitions not to poll: a poll's worth of their records waits for their worker.
        self.held: set[TopicPartition] = set()
        # Set when a partition stops being held: a poll waiting on the others is cut short to poll it again.
        self.room = asyncio.Event()

    def enqueue(self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: Records) -> None:
        """Queue a partition's records for its worker (started when it has none). A partition with a poll's
        worth of records waiting is held until its worker takes them: the backlog stays bounded, and a
        partition that keeps up is never held."""
        queue = self._queues.setdefault(tp, deque())
        queue.append(records)
        if sum(len(r) for r in queue) >= self._max_poll:
            self.held.add(tp)
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
                # Released as soon as less than a poll's worth waits, so that the next poll is read while this
                # one is handled. Released only once the queue was empty after handling, a partition that kept its
                # worker busy put a fetch between every two polls: a segment in one partition (the real-time
                # receiver's key) moved 10,000 events/s, half of what was offered.
                if tp in self.held and sum(len(r) for r in queue) < self._max_poll:
                    self._release(tp)
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
            self._release(tp)

    def _release(self, tp: TopicPartition) -> None:
        if tp in self.held:
            self.held.discard(tp)
            self.room.set()

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
