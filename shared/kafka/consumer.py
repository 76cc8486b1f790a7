"""The consumer loop: poll a bounded batch, decode, hand it to the service's handler, commit after success.

Guarantees (they also avoid known aiokafka traps: auto-commit, which commits consumed but unhandled
offsets on stop; ``auto_offset_reset="latest"``, which jumps past unread records when an offset is out of
range; and awaits on start, commit and stop that can hang forever, hence the timeouts):

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

This module polls and dispatches; one partition's batch is handled in ``batch_processor.py``, partitions handled
side by side in ``partitions.py``, dead letters in ``dead_letters.py``; what handlers see in ``deliveries.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

from shared.errors import TransientError
from shared.kafka.batch_processor import BatchProcessor, GiveUpHook, Stopping, pause
from shared.kafka.connection import connection_kwargs
from shared.kafka.dead_letters import DeadLetters
from shared.kafka.deliveries import Delivery, Handler, Records, Rejected
from shared.kafka.partitions import PartitionWorkers
from shared.kafka.producer import Producer
from shared.logging import get_logger
from shared.messages import Message
from shared.metrics import RuntimeMetrics
from shared.retry import Backoff
from shared.settings import KafkaSettings

__all__ = ["ConsumerLoop", "Delivery", "Handler", "Rejected"]

log = get_logger(__name__)

Polled = dict[TopicPartition, Records]


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
        on_given_up: GiveUpHook | None = None,
    ) -> None:
        """``on_given_up``: told of each message given up after HANDLER_MAX_ATTEMPTS (to fail its run)."""
        self._settings = settings
        self._max_poll = max_poll_records or settings.kafka_max_poll_records
        # Small messages (single events) are worth coalescing: wait this long after the first record for
        # more, so the handler gets one batch per linger period instead of one per trickle.
        self._linger_s = linger_s
        self._service = service
        self._models = dict(models)
        self._metrics = metrics
        self.group_id = group_id or settings.kafka_consumer_group or f"audience-bridge-{service}"
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.joined = False
        self.last_progress = time.monotonic()
        self.lag: dict[TopicPartition, int] = {}
        self._batches = BatchProcessor(
            settings=settings,
            models=models,
            handler=handler,
            dead_letters=DeadLetters(service=service, producer=producer, metrics=metrics),
            metrics=metrics,
            stopping=self._stopping,
            on_commit=self.touch,
            on_given_up=on_given_up,
        )
        # Above 1, partitions are handled side by side, each by a worker of its own fed by the poll loop.
        self._concurrency = max(1, partition_concurrency)
        self._workers = PartitionWorkers(
            process=self._batches.process,
            concurrency=self._concurrency,
            max_poll=self._max_poll,
            stopping=self._stopping,
            name=f"consume:{self.group_id}",
        )

    def touch(self) -> None:
        self.last_progress = time.monotonic()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def waiting_on(self) -> set[str]:
        """The dependencies (postgres, kafka, other) a batch of this consumer is waiting for right now."""
        return set(self._batches.waiting_on.values())

    def stuck_for(self) -> float:
        """Seconds without progress while there is work: a batch in flight, or lag behind the partition's end
        (0 when caught up or progressing). A hung handler or a consumer that stopped fetching stays alive
        but must not look healthy."""
        now = time.monotonic()
        inflight = self._batches.inflight
        busy = now - min(inflight.values()) if inflight else 0.0
        lagging = now - self.last_progress if any(lag > 0 for lag in self.lag.values()) else 0.0
        return max(busy, lagging)

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
            session_timeout_ms=round(self._settings.kafka_session_timeout_s * 1000),
            heartbeat_interval_ms=round(self._settings.kafka_session_timeout_s * 1000 / 3),
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

    async def settle(self, partitions: set[TopicPartition] | None) -> None:
        """Let the batch in flight of ``partitions`` (None: all) end; what is still queued for them is dropped
        (uncommitted: their next owner, or this consumer once they are back, fetches it again)."""
        await self._workers.settle(partitions)

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
            if self._workers.crashed is not None:
                raise self._workers.crashed
            try:
                polled = await self._poll(consumer)
            except KafkaError as exc:
                log.warning("poll_failed", error=type(exc).__name__, detail=str(exc)[:300])
                await pause(self._stopping, backoff.next_delay())
                continue
            backoff.reset()
            if polled and self._linger_s > 0:
                polled = await self._linger(consumer, polled)
            if not polled:
                await self._update_lag(consumer)
                if not any(self.lag.values()):
                    self.touch()
                continue
            if not await self._dispatch(consumer, polled):
                return
            await self._update_lag(consumer)

    async def _poll(self, consumer: AIOKafkaConsumer) -> Polled:
        """The records of a poll of every partition not held (:mod:`shared.kafka.partitions`). While some are held,
        the wait for records ends as soon as one of them is released: it is polled again at once."""
        held = self._workers.held
        if not held:
            polled: Polled = await consumer.getmany(timeout_ms=500, max_records=self._max_poll)
            return polled
        room = self._workers.room
        room.clear()
        ready = consumer.assignment() - held
        if not ready:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(room.wait(), 0.5)
            return {}
        poll = asyncio.ensure_future(consumer.getmany(*ready, timeout_ms=500, max_records=self._max_poll))
        released = asyncio.ensure_future(room.wait())
        try:
            await asyncio.wait((poll, released), return_when=asyncio.FIRST_COMPLETED)
        finally:
            released.cancel()
            # getmany only awaits while it holds no records (it returns as soon as it took some): cancelled
            # there, it loses none.
            poll.cancel()
            outcome = (await asyncio.gather(poll, return_exceptions=True))[0]
        if isinstance(outcome, asyncio.CancelledError):
            return {}
        if isinstance(outcome, BaseException):
            raise outcome
        records: Polled = outcome
        return records

    async def _dispatch(self, consumer: AIOKafkaConsumer, polled: Polled) -> bool:
        """Hand each partition's records to its worker, or handle them here one partition after the other.
        False when stop was requested meanwhile."""
        for tp, records in polled.items():
            if self._stopping.is_set():
                return False
            if self._concurrency > 1:
                self._workers.enqueue(consumer, tp, records)
                continue
            try:
                await self._batches.process(consumer, tp, records)
            except Stopping:
                return False
        return True

    async def _linger(self, consumer: AIOKafkaConsumer, polled: Polled) -> Polled:
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
        positions = self._batches.positions
        for tp in assignment:
            high = consumer.highwater(tp)
            if high is None:
                continue
            position = positions.get(tp)
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
                positions.pop(tp, None)
