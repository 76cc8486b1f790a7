"""One partition's batch, from poll to commit: decode, hand to the handler, dead-letter what is refused,
retry transient failures, commit.

The offset is committed only once every record was handled or dead-lettered; a permanent failure of a
whole batch is narrowed down to the guilty message(s) by handing the messages over one at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from shared.kafka.dead_letters import DeadLetters
from shared.kafka.deliveries import Delivery, Failure, Handler, Records, decode_records
from shared.logging import get_logger
from shared.messages import Message
from shared.metrics import RuntimeMetrics
from shared.retry import Backoff, is_transient
from shared.settings import KafkaSettings

log = get_logger(__name__)


class Stopping(Exception):
    """Raised inside the loop when stop was requested while a batch waited for a retry."""


async def pause(stopping: asyncio.Event, delay: float) -> None:
    """Sleep ``delay`` seconds, cut short by a stop request (then :class:`Stopping` is raised)."""
    try:
        await asyncio.wait_for(stopping.wait(), delay)
    except TimeoutError:
        return
    raise Stopping


class BatchProcessor:
    def __init__(
        self,
        *,
        settings: KafkaSettings,
        models: Mapping[str, type[Message]],
        handler: Handler,
        dead_letters: DeadLetters,
        metrics: RuntimeMetrics,
        stopping: asyncio.Event,
        on_commit: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._models = dict(models)
        self._handler = handler
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._stopping = stopping
        self._on_commit = on_commit
        # Next offset of each partition this consumer handled: its lag needs no position() round trip.
        self.positions: dict[TopicPartition, int] = {}
        # Monotonic start of each partition's batch in flight: how long a handler has been busy.
        self.inflight: dict[TopicPartition, float] = {}

    async def process(self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: Records) -> None:
        started = time.perf_counter()
        self.inflight[tp] = time.monotonic()
        try:
            await self._process(consumer, tp, records, started)
        finally:
            self.inflight.pop(tp, None)

    async def _process(self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: Records, started: float) -> None:
        model = self._models[tp.topic]
        self._metrics.consumed.labels(tp.topic).inc(len(records))
        good, poison = decode_records(model, records)
        if not await self._deliver(consumer, tp, records, good, poison):
            return
        self.positions[tp] = records[-1].offset + 1
        await self._commit(consumer, tp, records[-1].offset + 1)
        self._metrics.batch_seconds.labels(tp.topic).observe(time.perf_counter() - started)

    async def _deliver(
        self,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        records: Records,
        good: list[Delivery[Any]],
        poison: list[Failure],
    ) -> bool:
        """Dead-letter ``poison`` and hand ``good`` over until both went through. False if the partition was
        revoked while waiting for a retry."""
        backoff = Backoff(self._settings.retry_backoff_initial_s, self._settings.retry_backoff_max_s)
        while True:
            try:
                # Each part is cleared once done, so a retry does not dead-letter or hand over anything twice.
                if poison:
                    await self._dead_letters.publish(poison)
                    poison = []
                if good:
                    await self._handle_batch(records, good)
                    good = []
                return True
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if not await self._wait_to_retry(consumer, tp, records, exc, backoff):
                    return False

    async def _wait_to_retry(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: Records, exc: Exception, backoff: Backoff
    ) -> bool:
        self._metrics.handler_retries.labels(tp.topic).inc()
        if tp not in consumer.assignment():
            # The partition moved to another consumer, which will redeliver these records.
            log.info("retry_dropped_partition_revoked", topic=tp.topic, partition=tp.partition)
            return False
        delay = backoff.next_delay()
        log.warning(
            "batch_retry",
            topic=tp.topic,
            partition=tp.partition,
            first_offset=records[0].offset,
            error=type(exc).__name__,
            detail=str(exc)[:300],
            retry_in_s=round(delay, 2),
        )
        await pause(self._stopping, delay)
        return True

    async def _handle_batch(self, records: Records, deliveries: list[Delivery[Any]]) -> None:
        rejected = await self._handle(deliveries)
        if rejected:
            by_offset = {r.offset: r for r in records}
            await self._dead_letters.publish([(by_offset[o], e) for o, e in rejected])

    async def _handle(self, deliveries: list[Delivery[Any]]) -> list[tuple[int, BaseException]]:
        """Run the handler; on a permanent failure of a batch, isolate the guilty message(s).

        Returns (offset, error) of each message rejected permanently. Transient errors propagate.
        """
        try:
            refused = await self._handler(deliveries)
            return [(r.delivery.offset, r.error) for r in refused or ()]
        except Exception as exc:
            if is_transient(exc):
                raise
            if len(deliveries) == 1:
                log.error(
                    "message_rejected",
                    topic=deliveries[0].topic,
                    offset=deliveries[0].offset,
                    error=type(exc).__name__,
                    detail=str(exc)[:500],
                )
                return [(deliveries[0].offset, exc)]
            log.warning("batch_rejected_isolating", size=len(deliveries), error=type(exc).__name__)
        rejected: list[tuple[int, BaseException]] = []
        for delivery in deliveries:
            rejected.extend(await self._handle([delivery]))
        return rejected

    async def _commit(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
        try:
            await asyncio.wait_for(consumer.commit({tp: offset}), self._settings.kafka_send_timeout_s)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group rebalanced under us: the new owner redelivers, and handlers are idempotent.
            log.warning(
                "commit_failed_redelivery_expected",
                topic=tp.topic,
                partition=tp.partition,
                error=type(exc).__name__,
            )
            return
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("commit_failed", topic=tp.topic, partition=tp.partition, error=type(exc).__name__)
            return
        self._on_commit()
        self._metrics.last_commit.labels(tp.topic).set(time.time())
