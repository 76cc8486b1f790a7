"""The poll loop's polls while partitions are held (a poll's worth of their records waits for their worker):
only the others are polled, and a partition released ends the wait at once so that it is polled again."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition

from shared.kafka.consumer import ConsumerLoop
from shared.messages import SegmentEvent
from shared.metrics import RuntimeMetrics
from shared.settings import KafkaSettings

A, B = TopicPartition("t", 0), TopicPartition("t", 1)


class Consumer:
    """An AIOKafkaConsumer's assignment and getmany: answers ``records`` when it has some, else waits (as a
    poll of partitions without records does) until cancelled."""

    def __init__(self, records: dict[TopicPartition, list[Any]] | None = None) -> None:
        self.records = records or {}
        self.polls: list[tuple[TopicPartition, ...]] = []
        self.cancelled = 0

    def assignment(self) -> set[TopicPartition]:
        return {A, B}

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int, max_records: int) -> Any:
        self.polls.append(partitions)
        if self.records:
            return self.records
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        raise AssertionError("unreachable")


async def _polled(consumer: Consumer) -> None:
    while not consumer.polls:
        await asyncio.sleep(0)


async def _handler(deliveries: Any) -> None:
    return None


def _loop() -> ConsumerLoop:
    return ConsumerLoop(
        settings=KafkaSettings(),
        service="test",
        models={"t": SegmentEvent},
        handler=_handler,
        producer=object(),  # type: ignore[arg-type]
        metrics=RuntimeMetrics("test"),
        partition_concurrency=2,
    )


async def test_every_partition_is_polled_when_none_is_held() -> None:
    loop, consumer = _loop(), Consumer({A: [1]})
    assert await loop._poll(consumer) == {A: [1]}
    assert consumer.polls == [()]


async def test_a_held_partition_is_left_out_of_the_poll() -> None:
    loop, consumer = _loop(), Consumer({B: [2]})
    loop._workers.held.add(A)
    assert await loop._poll(consumer) == {B: [2]}
    assert consumer.polls == [(B,)]


async def test_a_partition_released_ends_the_wait_for_the_others() -> None:
    loop, consumer = _loop(), Consumer()
    workers = loop._workers
    workers.held.add(A)
    polling = asyncio.create_task(loop._poll(consumer))
    await asyncio.wait_for(_polled(consumer), 5)
    assert consumer.polls == [(B,)]
    workers._release(A)  # its worker took its records: it is polled again at once, not after B's wait
    assert await asyncio.wait_for(polling, 5) == {}
    assert consumer.cancelled == 1
    assert workers.held == set()


async def test_with_every_partition_held_nothing_is_polled_until_one_is_released() -> None:
    loop, consumer = _loop(), Consumer({A: [1]})
    workers = loop._workers
    workers.held.update({A, B})
    polling = asyncio.create_task(loop._poll(consumer))
    await asyncio.sleep(0)
    workers._release(B)
    assert await asyncio.wait_for(polling, 5) == {}
    assert consumer.polls == []
    assert await loop._poll(consumer) == {A: [1]}
    assert consumer.polls == [(B,)]
