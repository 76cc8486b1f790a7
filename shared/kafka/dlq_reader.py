"""Reading dead letters back: what ``audience-bridge dlq`` lists, shows and replays, and what the status page
counts. A dead-letter topic (``<topic>.dlq``, written by :mod:`shared.kafka.dead_letters`) is read without a
consumer group, from a start offset (the beginning, a time, or the last ``max_per_partition`` letters) up to
the end offsets taken when reading began: a read always ends, however busy the topic, and commits nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from shared.errors import TransientError
from shared.kafka.connection import connection_kwargs
from shared.settings import KafkaSettings

DLQ_HEADER_PREFIX = "dlq."


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of a dead-letter topic, with its ``dlq.*`` headers decoded."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: Mapping[str, str]

    @property
    def error(self) -> str:
        return self.headers.get("dlq.error", "unknown")

    @property
    def kind(self) -> str:
        """The kind of failure (``content``, ``unexpected``, ...: shared.failures), when the letter says."""
        return self.headers.get("dlq.error_class", "")

    @property
    def run_id(self) -> str:
        """The run the message belongs to, when it is part of one."""
        return self.headers.get("dlq.run_id", "")

    @property
    def reason(self) -> str:
        return self.headers.get("dlq.reason", "")

    @property
    def original_topic(self) -> str:
        return self.headers.get("dlq.original.topic", self.topic.removesuffix(".dlq"))

    @property
    def original_position(self) -> str:
        partition = self.headers.get("dlq.original.partition", "?")
        return f"{self.original_topic}[{partition}]@{self.headers.get('dlq.original.offset', '?')}"

    @property
    def failed_at(self) -> datetime:
        raw = self.headers.get("dlq.failed_at", "")
        millis = int(raw) if raw.isdigit() else self.timestamp_ms
        return datetime.fromtimestamp(millis / 1000, UTC)

    @property
    def value_omitted(self) -> bool:
        """The letter was too large for Kafka with its headers: only the original (if still kept) has the value."""
        return "dlq.value_omitted" in self.headers


def letter_of(record: ConsumerRecord[bytes, bytes]) -> DeadLetter:
    headers = {name: raw.decode("utf-8", "replace") for name, raw in record.headers or ()}
    return DeadLetter(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
        key=record.key,
        value=record.value or b"",
        headers=headers,
    )


@dataclass(frozen=True, slots=True)
class ReadBounds:
    """Where reading starts: letters written at or after ``since_ms`` (all when None), and at most the last
    ``max_per_partition`` of each partition (all when None)."""

    since_ms: int | None = None
    max_per_partition: int | None = None


async def read_dead_letters(
    settings: KafkaSettings, topics: Iterable[str], bounds: ReadBounds = ReadBounds(), *, timeout_s: float = 30.0
) -> list[DeadLetter]:
    """The letters of the dead-letter ``topics`` (full names) within ``bounds``, oldest first per partition.
    A topic that does not exist holds none. Kafka unreachable or too slow: TransientError."""
    consumer = AIOKafkaConsumer(
        **connection_kwargs(settings, "audience-bridge-dlq-reader"),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        await asyncio.wait_for(consumer.start(), timeout_s)
        return await asyncio.wait_for(_read(consumer, list(topics), bounds), timeout_s)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise TransientError("cannot read the dead-letter topics", error=type(exc).__name__) from exc
    finally:
        await _stop(consumer, timeout_s)


async def _read(consumer: AIOKafkaConsumer, topics: list[str], bounds: ReadBounds) -> list[DeadLetter]:
    partitions = await _partitions(consumer, topics)
    if not partitions:
        return []
    consumer.assign(partitions)
    ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
    starts = await _starts(consumer, partitions, ends, bounds)
    pending = {tp for tp in partitions if starts[tp] < ends[tp]}
    for tp in partitions:
        consumer.seek(tp, starts[tp])
    letters: list[DeadLetter] = []
    while pending:
        batch = await consumer.getmany(*pending, timeout_ms=500, max_records=2000)
        for tp, records in batch.items():
            letters.extend(letter_of(r) for r in records if r.offset < ends[tp])
        for tp in list(pending):
            if await consumer.position(tp) >= ends[tp]:
                pending.discard(tp)
    return letters


async def _partitions(consumer: AIOKafkaConsumer, topics: list[str]) -> list[TopicPartition]:
    # consumer.topics() fetches the cluster's metadata but does not keep it, and partitions_for_topic only
    # knows the topics already in the consumer's own metadata: read the partitions from the fetched copy.
    cluster = await consumer._client.fetch_all_metadata()
    found: list[TopicPartition] = []
    for topic in topics:
        found.extend(TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ()))
    return found


async def _starts(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], ends: dict[TopicPartition, int], bounds: ReadBounds
) -> dict[TopicPartition, int]:
    starts: dict[TopicPartition, int] = await consumer.beginning_offsets(partitions)
    if bounds.since_ms is not None:
        found = await consumer.offsets_for_times(dict.fromkeys(partitions, bounds.since_ms))
        # No letter at or after the time: nothing to read in that partition.
        starts = {tp: (found[tp].offset if found.get(tp) is not None else ends[tp]) for tp in partitions}
    if bounds.max_per_partition is not None:
        starts = {tp: max(starts[tp], ends[tp] - bounds.max_per_partition) for tp in partitions}
    return starts


async def dead_letter_totals(
    settings: KafkaSettings, topics: Iterable[str], *, timeout_s: float = 10.0
) -> dict[str, int]:
    """Letters kept per dead-letter topic (end minus beginning offsets: cheap, no record is read)."""
    topics = list(topics)
    consumer = AIOKafkaConsumer(**connection_kwargs(settings, "audience-bridge-dlq-totals"), enable_auto_commit=False)
    try:
        await asyncio.wait_for(consumer.start(), timeout_s)
        partitions = await asyncio.wait_for(_partitions(consumer, list(topics)), timeout_s)
        begins = await asyncio.wait_for(consumer.beginning_offsets(partitions), timeout_s) if partitions else {}
        ends = await asyncio.wait_for(consumer.end_offsets(partitions), timeout_s) if partitions else {}
    except (KafkaError, OSError, TimeoutError) as exc:
        raise TransientError("cannot read the dead-letter topics' offsets", error=type(exc).__name__) from exc
    finally:
        await _stop(consumer, timeout_s)
    totals = dict.fromkeys(topics, 0)
    for tp in partitions:
        totals[tp.topic] = totals.get(tp.topic, 0) + ends[tp] - begins[tp]
    return totals


async def _stop(consumer: AIOKafkaConsumer, timeout_s: float) -> None:
    """Stop the reader; a broker gone meanwhile must not hide what happened before (nothing is committed)."""
    with contextlib.suppress(KafkaError, OSError, TimeoutError):
        await asyncio.wait_for(consumer.stop(), timeout_s)
