"""The consumer loop: poll a bounded batch, decode, hand it to the service's handler, commit after success.

Guarantees (see ../engineering-notes.md for the aiokafka pitfalls they avoid):

* auto-commit is off; a partition's offset is committed only after the handler returned for its records,
  so a crash before the commit redelivers them (handlers are idempotent through Postgres);
* a message that cannot be decoded or validated goes to ``<topic>.dlq`` with provenance headers and the
  loop goes on with the rest of the batch;
* a transient failure (Postgres or the broker briefly gone) retries the same records with capped,
  jittered backoff and never skips them;
* a handler may return the messages it rejects (they are dead-lettered, the rest is committed); a
  handler that raises a permanent error for a batch is retried one message at a time, so only the
  guilty message is dead-lettered;
* on stop, the in-flight batch may finish within the grace period, otherwise it is abandoned uncommitted.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from shared.errors import PermanentError, PoisonMessage, TransientError
from shared.kafka.connection import connection_kwargs
from shared.kafka.producer import OutgoingMessage, Producer
from shared.logging import get_logger
from shared.messages import Message, decode
from shared.metrics import RuntimeMetrics
from shared.retry import Backoff, is_transient
from shared.settings import KafkaSettings
from shared.topics import dlq_name

log = get_logger(__name__)

M = TypeVar("M", bound=Message)


@dataclass(frozen=True, slots=True)
class Delivery(Generic[M]):
    """A decoded message and where it came from."""

    message: M
    topic: str
    partition: int
    offset: int
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message the handler refuses for good (it goes to the DLQ) while the rest of its batch goes on."""

    delivery: Delivery[Any]
    error: BaseException


# A handler processes a batch of one partition, in order. It may return the messages it rejects;
# raising a transient error retries the whole batch, raising a permanent one isolates the guilty message.
Handler = Callable[[Sequence[Delivery[Any]]], Awaitable[Sequence[Rejected] | None]]


class _Stopping(Exception):
    """Raised inside the loop when stop was requested while a batch waited for a retry."""


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: ConsumerLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Offsets are committed after each handled batch: only batches still in flight (partitions handled
        # side by side) must end, and commit, before the partitions go to their new owner.
        if revoked:
            log.info("partitions_revoked", partitions=_fmt(revoked), group=self._loop.group_id)
            await self._loop.settle(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._loop.joined = True
        self._loop.touch()
        log.info("partitions_assigned", partitions=_fmt(assigned), group=self._loop.group_id)


def _fmt(tps: set[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}:{tp.partition}" for tp in tps)


def _without_payload(message: OutgoingMessage) -> OutgoingMessage:
    """A dead letter too large for Kafka without its value (and a key over 1 KiB): ``dlq.value_omitted`` gives
    the original's sizes."""
    key = message.key if message.key is not None and len(message.key) <= 1024 else None
    sizes = f"value={len(message.value)} key={len(message.key or b'')} bytes"
    return OutgoingMessage(
        topic=message.topic, value=b"", key=key, headers=[*message.headers, ("dlq.value_omitted", sizes.encode())]
    )


class ConsumerLoop:
    """Consumes ``models`` (prefixed topic -> message model) and hands decoded batches to ``handler``."""

    def __init__(
        self,
        *,
        settings: KafkaSettings,
        service: str,
        models: Mapping[str, type[Message]],
        handler: Handler,
        producer: Producer,
        metrics: RuntimeMetrics,
        group_id: str | None = None,
        max_poll_records: int | None = None,
        linger_s: float = 0.0,
        partition_concurrency: int = 1,
    ) -> None:
        self._settings = settings
        # Above 1, partitions are handled side by side, each by a worker of its own fed by the poll loop: a
        # partition whose batch takes long (a large run's end) holds up only itself. Ordering holds within
        # each partition.
        self._concurrency = max(1, partition_concurrency)
        self._slots = asyncio.Semaphore(self._concurrency)
        self._queues: dict[TopicPartition, deque[list[ConsumerRecord[bytes, bytes]]]] = {}
        self._workers: dict[TopicPartition, asyncio.Task[None]] = {}
        self._crashed: BaseException | None = None
        self._max_poll = max_poll_records or settings.kafka_max_poll_records
        # Small messages (single events) are worth coalescing: wait this long after the first record for
        # more, so the handler gets one batch per linger period instead of one per trickle.
        self._linger_s = linger_s
        self._service = service
        self._models = dict(models)
        self._handler = handler
        self._producer = producer
        self._metrics = metrics
        self.group_id = group_id or settings.kafka_consumer_group or f"audience-bridge-{service}"
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.joined = False
        self.last_progress = time.monotonic()
        self.lag: dict[TopicPartition, int] = {}
        self._positions: dict[TopicPartition, int] = {}
        self._inflight: dict[TopicPartition, float] = {}

    def touch(self) -> None:
        self.last_progress = time.monotonic()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def stuck_for(self) -> float:
        """Seconds without progress while there is work: a batch in flight, or lag behind the partition's end
        (0 when caught up or progressing). A hung handler or a consumer that stopped fetching stays alive
        but must not look healthy."""
        now = time.monotonic()
        inflight = now - min(self._inflight.values()) if self._inflight else 0.0
        lagging = now - self.last_progress if any(lag > 0 for lag in self.lag.values()) else 0.0
        return max(inflight, lagging)

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            **connection_kwargs(self._settings, f"{self._service}-consumer"),
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=self._max_poll,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=16 * 1024 * 1024,
        )
        try:
            await asyncio.wait_for(consumer.start(), self._settings.kafka_send_timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            await self._stop_consumer(consumer)
            raise TransientError("Kafka consumer cannot start", error=type(exc).__name__) from exc
        consumer.subscribe(topics=sorted(self._models), listener=_Listener(self))
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(), name=f"consume:{self.group_id}")

    async def wait(self) -> None:
        """Return when the loop ended (after stop, or on a crash, which is re-raised)."""
        if self._task is not None:
            await self._task

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop polling; let the in-flight batch finish within ``grace_s``, else abandon it uncommitted."""
        self._stopping.set()
        task = self._task
        if task is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=grace_s or self._settings.shutdown_grace_s)
            if not done:
                log.warning("batch_abandoned_on_stop", group=self.group_id)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._consumer is not None:
            await self._stop_consumer(self._consumer)
            self._consumer = None

    async def _stop_consumer(self, consumer: AIOKafkaConsumer) -> None:
        try:
            await asyncio.wait_for(consumer.stop(), self._settings.kafka_send_timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("consumer_stop_failed", error=type(exc).__name__)

    async def _run(self) -> None:
        try:
            await self._poll_and_handle()
        finally:
            await self.settle(None)

    async def _poll_and_handle(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        backoff = Backoff(self._settings.retry_backoff_initial_s, self._settings.retry_backoff_max_s)
        while not self._stopping.is_set():
            if self._crashed is not None:
                raise self._crashed
            try:
                polled = await consumer.getmany(timeout_ms=500, max_records=self._max_poll)
            except KafkaError as exc:
                log.warning("poll_failed", error=type(exc).__name__, detail=str(exc)[:300])
                await self._sleep(backoff.next_delay())
                continue
            backoff.reset()
            if polled and self._linger_s > 0:
                polled = await self._linger(consumer, polled)
            if not polled:
                await self._update_lag(consumer)
                if not any(self.lag.values()):
                    self.touch()
                continue
            for tp, records in polled.items():
                if self._stopping.is_set():
                    return
                if self._concurrency > 1:
                    self._enqueue(consumer, tp, records)
                    continue
                try:
                    await self._process_partition(consumer, tp, records)
                except _Stopping:
                    return
            await self._update_lag(consumer)

    def _enqueue(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]
    ) -> None:
        """Queue a partition's records for its worker (started when it has none). A partition with a poll's
        worth of records waiting is paused until its worker catches up: the backlog stays bounded, and a
        partition that keeps up is never paused (pausing drops what the consumer fetched ahead)."""
        queue = self._queues.setdefault(tp, deque())
        queue.append(records)
        if sum(len(r) for r in queue) >= self._max_poll:
            consumer.pause(tp)
        if tp not in self._workers:
            self._workers[tp] = asyncio.create_task(
                self._partition_worker(consumer, tp), name=f"consume:{self.group_id}:{tp.partition}"
            )

    async def _partition_worker(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
        queue = self._queues[tp]
        try:
            while queue and not self._stopping.is_set():
                # What waits is handled at once, up to a poll's worth: bigger batches, fewer transactions.
                records = queue.popleft()
                while queue and len(records) + len(queue[0]) <= self._max_poll:
                    records = records + queue.popleft()
                async with self._slots:
                    await self._process_partition(consumer, tp, records)
                if not queue and tp in consumer.paused():
                    consumer.resume(tp)
        except _Stopping:
            pass
        except Exception as exc:  # a handler bug: the poll loop re-raises it, as it would have done itself
            self._crashed = self._crashed or exc
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

    async def _linger(
        self, consumer: AIOKafkaConsumer, polled: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        deadline = time.monotonic() + self._linger_s
        count = sum(len(records) for records in polled.values())
        while count < self._max_poll and not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                more = await consumer.getmany(timeout_ms=max(1, int(left * 1000)), max_records=self._max_poll - count)
            except KafkaError:
                break  # what we have is handled now; the error shows again at the next poll
            for tp, records in more.items():
                # Later polls continue each partition where the previous one stopped: appending keeps order.
                polled.setdefault(tp, []).extend(records)
                count += len(records)
        return polled

    async def _update_lag(self, consumer: AIOKafkaConsumer) -> None:
        assignment = consumer.assignment()
        for tp in assignment:
            high = consumer.highwater(tp)
            if high is None:
                continue
            position = self._positions.get(tp)
            if position is None:
                try:
                    position = await asyncio.wait_for(consumer.position(tp), 1.0)
                except (KafkaError, TimeoutError, IllegalStateError):
                    continue
            lag = max(0, high - position)
            self.lag[tp] = lag
            self._metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
        for tp in list(self.lag):
            if tp not in assignment:
                del self.lag[tp]
                self._positions.pop(tp, None)

    async def _process_partition(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]
    ) -> None:
        started = time.perf_counter()
        self._inflight[tp] = time.monotonic()
        try:
            await self._process_records(consumer, tp, records, started)
        finally:
            self._inflight.pop(tp, None)

    async def _process_records(
        self,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        records: list[ConsumerRecord[bytes, bytes]],
        started: float,
    ) -> None:
        model = self._models[tp.topic]
        self._metrics.consumed.labels(tp.topic).inc(len(records))
        good: list[Delivery[Any]] = []
        poison: list[tuple[ConsumerRecord[bytes, bytes], BaseException]] = []
        for record in records:
            try:
                message = decode(model, record.value)
            except PoisonMessage as exc:
                poison.append((record, exc))
                continue
            good.append(
                Delivery(
                    message=message,
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    key=record.key,
                    headers=tuple(record.headers or ()),
                )
            )
        backoff = Backoff(self._settings.retry_backoff_initial_s, self._settings.retry_backoff_max_s)
        while True:
            try:
                if poison:
                    await self._dead_letter(poison)
                    poison = []
                if good:
                    rejected = await self._handle(good)
                    if rejected:
                        by_offset = {r.offset: r for r in records}
                        await self._dead_letter([(by_offset[o], e) for o, e in rejected])
                    good = []
                break
            except _Stopping:
                raise
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self._metrics.handler_retries.labels(tp.topic).inc()
                if tp not in consumer.assignment():
                    # The partition moved to another consumer, which will redeliver these records.
                    log.info("retry_dropped_partition_revoked", topic=tp.topic, partition=tp.partition)
                    return
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
                await self._sleep(delay)
        self._positions[tp] = records[-1].offset + 1
        await self._commit(consumer, tp, records[-1].offset + 1)
        self._metrics.batch_seconds.labels(tp.topic).observe(time.perf_counter() - started)

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

    async def _dead_letter(self, items: Sequence[tuple[ConsumerRecord[bytes, bytes], BaseException]]) -> None:
        out = []
        for record, exc in items:
            headers = [
                ("dlq.error", type(exc).__name__.encode()),
                ("dlq.reason", str(exc)[:2000].encode()),
                ("dlq.service", self._service.encode()),
                ("dlq.original.topic", record.topic.encode()),
                ("dlq.original.partition", str(record.partition).encode()),
                ("dlq.original.offset", str(record.offset).encode()),
                ("dlq.failed_at", str(int(time.time() * 1000)).encode()),
            ]
            if not isinstance(exc, PoisonMessage):
                headers.append(("dlq.stacktrace", "".join(traceback.format_exception(exc))[-4000:].encode()))
            out.append(
                OutgoingMessage(
                    topic=dlq_name(record.topic), value=record.value or b"", key=record.key, headers=headers
                )
            )
            self._metrics.dead_lettered.labels(record.topic, type(exc).__name__).inc()
            log.warning(
                "message_dead_lettered",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                error=type(exc).__name__,
                reason=str(exc)[:500],
            )
        try:
            await self._producer.send(out)
        except PermanentError:
            # The original plus the dlq.* headers is more than Kafka takes (a value just under the topic's
            # limit). Raising here would end the loop, and the uncommitted record would crash every restart:
            # dead-letter it without key and value instead; the headers say where the original still is.
            log.warning("dead_letter_too_large_value_omitted", count=len(out), sizes=[len(m.value) for m in out])
            await self._producer.send([_without_payload(m) for m in out])

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
        self.touch()
        self._metrics.last_commit.labels(tp.topic).set(time.time())

    async def _sleep(self, delay: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), delay)
        except TimeoutError:
            return
        raise _Stopping
