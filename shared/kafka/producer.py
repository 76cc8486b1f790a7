"""The producer every service uses, with the safe settings aiokafka does not default to.

``acks=all`` and idempotence are explicit; every start, send, flush and stop is bounded by a timeout
(aiokafka can hang forever when the broker is gone, issue #1101). A timed-out or fatally failed send has
an unknown outcome: the producer is recreated and the caller gets a TransientError, so the message is
retried and consumers deduplicate by run/seq or event id.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from shared.errors import PermanentError, TransientError
from shared.kafka.connection import connection_kwargs
from shared.kafka.murmur import partition_of
from shared.logging import get_logger
from shared.messages import Message
from shared.metrics import RuntimeMetrics
from shared.settings import KafkaSettings

log = get_logger(__name__)

MAX_REQUEST_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    topic: str
    value: bytes
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)

    @classmethod
    def of(cls, topic: str, message: Message, headers: list[tuple[str, bytes]] | None = None) -> OutgoingMessage:
        return cls(topic=topic, value=message.to_bytes(), key=message.key(), headers=headers or [])


class Producer:
    def __init__(self, settings: KafkaSettings, service: str, metrics: RuntimeMetrics | None = None) -> None:
        self._settings = settings
        self._service = service
        self._metrics = metrics
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    def _create(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **connection_kwargs(self._settings, f"{self._service}-producer"),
            acks="all",
            enable_idempotence=True,
            partitioner=partition_of,  # Kafka's partitions, hashed faster (shared/kafka/murmur.py)
            linger_ms=5,
            max_batch_size=1024 * 1024,
            max_request_size=MAX_REQUEST_BYTES,
            compression_type=None
            if self._settings.kafka_compression_type == "none"
            else self._settings.kafka_compression_type,
            request_timeout_ms=int(self._settings.kafka_send_timeout_s * 1000),
        )

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        async with self._lock:
            if self._producer is None:
                self._producer = await self._start_new()

    async def _start_new(self) -> AIOKafkaProducer:
        producer = self._create()
        try:
            await asyncio.wait_for(producer.start(), self._settings.kafka_send_timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            await self._stop_quietly(producer)
            raise TransientError("Kafka producer cannot start", error=type(exc).__name__) from exc
        return producer

    async def send(self, messages: Sequence[OutgoingMessage]) -> None:
        """Send all ``messages`` and wait until Kafka acknowledged every one (or raise)."""
        await self._acknowledged(messages, _send_one_by_one)

    async def send_batched(self, messages: Sequence[OutgoingMessage]) -> None:
        """As :meth:`send` (same partitions, order, acknowledgement and errors), but built into one record batch
        per partition: for thousands of small records a second, aiokafka's per-record ``send`` (metadata
        check, partitioner, a future each) is the cost; appending to a batch builder is a fraction of it."""
        await self._acknowledged(messages, _send_in_batches)

    async def _acknowledged(self, messages: Sequence[OutgoingMessage], write: _Write) -> None:
        """``write`` the messages and wait for their acknowledgement within ``kafka_send_timeout_s``; a failure
        of unknown outcome is a TransientError, a message too large a PermanentError."""
        if not messages:
            return
        if self._producer is None:
            await self.start()
        producer = self._producer
        assert producer is not None
        try:
            await write(producer, messages, self._settings.kafka_send_timeout_s)
        except MessageSizeTooLargeError as exc:
            raise PermanentError("message too large for Kafka", topic=messages[0].topic) from exc
        except (KafkaError, OSError, TimeoutError) as exc:
            # Unknown outcome: some messages may have been written. Recreate the producer so a wedged
            # idempotent sequence (aiokafka #1017) cannot poison later sends; the caller retries.
            log.warning("produce_failed", error=type(exc).__name__, detail=str(exc)[:300], count=len(messages))
            await self._reset(producer)
            raise TransientError("Kafka did not acknowledge the messages", error=type(exc).__name__) from exc
        if self._metrics is not None:
            for topic, count in Counter(m.topic for m in messages).items():
                self._metrics.produced.labels(topic).inc(count)

    async def send_model(self, topic: str, message: Message, headers: list[tuple[str, bytes]] | None = None) -> None:
        await self.send([OutgoingMessage.of(topic, message, headers)])

    async def check(self, timeout_s: float = 3.0) -> bool:
        """True when the cluster answers a metadata request."""
        producer = self._producer
        if producer is None:
            return False
        try:
            return bool(await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout_s) is not None)
        except (KafkaError, OSError, TimeoutError):
            return False

    async def _reset(self, failed: AIOKafkaProducer) -> None:
        async with self._lock:
            if self._producer is failed:
                self._producer = None
        await self._stop_quietly(failed)

    async def _stop_quietly(self, producer: AIOKafkaProducer) -> None:
        try:
            await asyncio.wait_for(producer.stop(), self._settings.kafka_send_timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("producer_stop_failed", error=type(exc).__name__)

    async def stop(self) -> None:
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await self._stop_quietly(producer)


async def _enqueue_batches(
    producer: AIOKafkaProducer, messages: Sequence[OutgoingMessage]
) -> list[asyncio.Future[Any]]:
    """Queue ``messages`` as record batches, one per partition (more when one fills up), in their order; the
    futures resolve when Kafka acknowledged each batch. The partition is the one ``send`` would pick: the
    producer's partitioner on the key."""
    builders: dict[tuple[str, int], Any] = {}
    futures: list[asyncio.Future[Any]] = []
    partitions: dict[tuple[str, bytes], int] = {}  # (topic, key) -> partition: a key's is fixed within the call
    known: set[str] = set()  # topics whose metadata is known: looked up once a call, not once a key
    for m in messages:
        if m.key is None or (partition := partitions.get((m.topic, m.key), -1)) < 0:
            if m.topic not in known:
                await producer.partitions_for(m.topic)
                known.add(m.topic)
            # aiokafka's own choice of partition (private, but the only way to agree with ``send``).
            partition = producer._partition(m.topic, None, m.key, m.value, m.key, m.value)
            if m.key is not None:
                partitions[(m.topic, m.key)] = partition
        builder = builders.get((m.topic, partition))
        if builder is None:
            builder = builders[(m.topic, partition)] = producer.create_batch()
        if builder.append(timestamp=None, key=m.key, value=m.value, headers=m.headers) is None:
            futures.append(await producer.send_batch(builder, m.topic, partition=partition))
            builder = builders[(m.topic, partition)] = producer.create_batch()
            if builder.append(timestamp=None, key=m.key, value=m.value, headers=m.headers) is None:
                raise MessageSizeTooLargeError()
    for (topic, partition), builder in builders.items():
        # Closed: nothing more is coming, and aiokafka holds an open batch for linger_ms (5 ms) in case
        # another send appends to it, which the caller, waiting for the acknowledgement, only pays for.
        builder.close()
        futures.append(await producer.send_batch(builder, topic, partition=partition))
    return futures


# How a send writes its messages and waits for their acknowledgement, within the timeout (seconds).
_Write = Callable[[AIOKafkaProducer, Sequence[OutgoingMessage], float], Awaitable[None]]


async def _send_one_by_one(producer: AIOKafkaProducer, messages: Sequence[OutgoingMessage], timeout_s: float) -> None:
    # Each enqueue is bounded (it blocks while the accumulator is full): one deadline re-armed after every
    # message costs far less than a wait_for (a task) per message, which dominated small sends.
    loop = asyncio.get_running_loop()
    futures = []
    async with asyncio.timeout(timeout_s) as deadline:
        for m in messages:
            futures.append(await producer.send(m.topic, m.value, key=m.key, headers=m.headers))
            deadline.reschedule(loop.time() + timeout_s)
    await asyncio.wait_for(asyncio.gather(*futures), timeout_s)


async def _send_in_batches(producer: AIOKafkaProducer, messages: Sequence[OutgoingMessage], timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        futures = await _enqueue_batches(producer, messages)
        await asyncio.gather(*futures)
