"""One partition's batch, from poll to commit: decode, hand to the handler, dead-letter what is refused,
retry what failed for another reason, commit.

The offset is committed only once every record was handled or dead-lettered; a content failure of a
whole batch is narrowed down to the guilty message(s) by handing the messages over one at a time. What a
failure means (retry for ever, dead-letter, retry a few times then give up) is :mod:`shared.failures`'s rule.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from shared.failures import FailureKind, classify, dependency_of, give_up_reason, redact
from shared.kafka.dead_letters import DeadLetters, LetterContext, run_of
from shared.kafka.deliveries import Delivery, Failure, Handler, Records, decode_poll
from shared.logging import get_logger
from shared.messages import Message
from shared.metrics import RuntimeMetrics
from shared.retry import Backoff
from shared.settings import KafkaSettings

log = get_logger(__name__)


# A message refused for good: its offset, the error, and what kind of failure that was.
Refusal = tuple[int, BaseException, FailureKind]


@dataclass(frozen=True, slots=True)
class GivenUp:
    """A message that kept failing unexpectedly (or ran out of time) and is dead-lettered: its run must end."""

    delivery: Delivery[Any]
    kind: FailureKind
    error: BaseException
    reason: str

    @property
    def run_id(self) -> uuid.UUID | None:
        return run_of(self.delivery)


# Told about the messages given up before they are dead-lettered (to end their runs as failed).
GiveUpHook = Callable[[Sequence[GivenUp]], Awaitable[None]]


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
        on_given_up: GiveUpHook | None = None,
    ) -> None:
        self._settings = settings
        self._models = dict(models)
        self._handler = handler
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._stopping = stopping
        self._on_commit = on_commit
        self._on_given_up = on_given_up
        # Partitions whose batch waits for a failing dependency (postgres, kafka, other): /readyz says so.
        self.waiting_on: dict[TopicPartition, str] = {}
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
        good, poison = await decode_poll(model, records)
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
        revoked while waiting for a retry.

        A dependency failure is retried for as long as it lasts. An unexpected failure (or a statement
        timeout) is retried ``HANDLER_MAX_ATTEMPTS`` times; then the batch is handed over message by message
        once more and what still fails is given up: its run failed, the message dead-lettered."""
        backoff = Backoff(self._settings.retry_backoff_initial_s, self._settings.retry_backoff_max_s)
        failed_attempts = 0
        while True:
            try:
                # Each part is cleared once done, so a retry does not dead-letter or hand over anything twice.
                if poison:
                    await self._dead_letters.publish(poison)
                    poison = []
                if good:
                    await self._handle_batch(records, good, failed_attempts)
                    good = []
                self.waiting_on.pop(tp, None)
                return True
            except Exception as exc:
                kind = classify(exc)
                if kind is FailureKind.CONTENT:
                    raise  # _handle isolates content failures: one escaping here is a bug of the loop itself
                if kind is FailureKind.DEPENDENCY:
                    dependency = dependency_of(exc)
                    self.waiting_on[tp] = dependency
                    self._metrics.dependency_failures.labels(tp.topic, dependency).inc()
                else:
                    failed_attempts += 1
                if not await self._wait_to_retry(consumer, tp, records, exc, kind, backoff):
                    self.waiting_on.pop(tp, None)
                    return False

    async def _wait_to_retry(
        self,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        records: Records,
        exc: Exception,
        kind: FailureKind,
        backoff: Backoff,
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
            failure=str(kind),
            error=type(exc).__name__,
            detail=redact(str(exc))[:300],
            retry_in_s=round(delay, 2),
        )
        await pause(self._stopping, delay)
        return True

    async def _handle_batch(self, records: Records, deliveries: list[Delivery[Any]], failed_attempts: int) -> None:
        give_up = failed_attempts >= self._settings.handler_max_attempts
        rejected = await self._handle(deliveries, give_up=give_up)
        if not rejected:
            return
        by_offset = {d.offset: d for d in deliveries}
        given_up = [
            GivenUp(by_offset[o], kind, exc, give_up_reason(kind, exc, failed_attempts + 1))
            for o, exc, kind in rejected
            if kind is not FailureKind.CONTENT
        ]
        # Runs first: a failure here retries the batch before anything is dead-lettered twice.
        if given_up and self._on_given_up is not None:
            await self._on_given_up(given_up)
        records_by_offset = {r.offset: r for r in records}
        await self._dead_letters.publish(
            [(records_by_offset[o], exc) for o, exc, _kind in rejected],
            {
                o: LetterContext(kind=kind, run_id=run_of(by_offset[o]), attempts=failed_attempts + 1)
                for o, _exc, kind in rejected
            },
        )

    async def _handle(self, deliveries: list[Delivery[Any]], *, give_up: bool) -> list[Refusal]:
        """Run the handler; on a content failure of a batch (or any failure once ``give_up``), isolate the
        guilty message(s).

        Returns (offset, error, kind) of each message refused for good. Dependency failures propagate, and
        unexpected ones too until ``give_up``.
        """
        if give_up and len(deliveries) > 1:
            # The batch failed HANDLER_MAX_ATTEMPTS times already: straight to one message at a time.
            return await self._one_by_one(deliveries, give_up=give_up)
        try:
            refused = await self._handler(deliveries)
            return [(r.delivery.offset, r.error, FailureKind.CONTENT) for r in refused or ()]
        except Exception as exc:
            kind = classify(exc)
            if kind is FailureKind.DEPENDENCY or (kind is not FailureKind.CONTENT and not give_up):
                raise
            if len(deliveries) == 1:
                log.error(
                    "message_rejected",
                    topic=deliveries[0].topic,
                    offset=deliveries[0].offset,
                    failure=str(kind),
                    error=type(exc).__name__,
                    detail=redact(str(exc))[:500],
                )
                return [(deliveries[0].offset, exc, kind)]
            log.warning("batch_rejected_isolating", size=len(deliveries), failure=str(kind), error=type(exc).__name__)
        return await self._one_by_one(deliveries, give_up=give_up)

    async def _one_by_one(self, deliveries: list[Delivery[Any]], *, give_up: bool) -> list[Refusal]:
        rejected: list[Refusal] = []
        for delivery in deliveries:
            rejected.extend(await self._handle([delivery], give_up=give_up))
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
