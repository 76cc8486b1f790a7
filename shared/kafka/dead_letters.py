"""Dead letters: a message the bridge gives up on goes to ``<topic>.dlq``, its value and key unchanged, with
``dlq.*`` headers saying what failed, in which service, and where the original is (the AsyncAPI document,
``shared/asyncapi_catalog.py``, describes each header)."""

from __future__ import annotations

import time
import traceback
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRecord

from shared.errors import PermanentError, PoisonMessage
from shared.failures import FailureKind, classify
from shared.kafka.deliveries import Delivery, Failure
from shared.kafka.producer import OutgoingMessage, Producer
from shared.logging import get_logger
from shared.logging import redact_text as redact  # every form the logs mask (issue 17), in the headers too
from shared.metrics import RuntimeMetrics
from shared.topics import dlq_name

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class LetterContext:
    """What the consumer knows about a dead letter beyond its error: the kind of failure (see
    :mod:`shared.failures`), the run its message belongs to, and how many times it was tried."""

    kind: FailureKind
    run_id: uuid.UUID | None = None
    attempts: int = 1


def run_of(delivery: Delivery[Any]) -> uuid.UUID | None:
    """The run a decoded message belongs to, when it is part of one (membership and export batches)."""
    run_id = getattr(delivery.message, "run_id", None)
    return run_id if isinstance(run_id, uuid.UUID) else None


def dead_letter_headers(
    record: ConsumerRecord[bytes, bytes], exc: BaseException, service: str, context: LetterContext | None = None
) -> list[tuple[str, bytes]]:
    context = context or LetterContext(kind=classify(exc))
    headers = [
        ("dlq.error", type(exc).__name__.encode()),
        ("dlq.error_class", str(context.kind).encode()),
        ("dlq.attempts", str(context.attempts).encode()),
        ("dlq.reason", redact(str(exc))[:2000].encode()),
        ("dlq.service", service.encode()),
        ("dlq.original.topic", record.topic.encode()),
        ("dlq.original.partition", str(record.partition).encode()),
        ("dlq.original.offset", str(record.offset).encode()),
        ("dlq.failed_at", str(int(time.time() * 1000)).encode()),
    ]
    if context.run_id is not None:
        headers.append(("dlq.run_id", str(context.run_id).encode()))
    if not isinstance(exc, PoisonMessage):
        # The end of the trace holds the raising frame; secrets (a DSN's password) are cut out.
        headers.append(("dlq.stacktrace", redact("".join(traceback.format_exception(exc)))[-4000:].encode()))
    return headers


def without_payload(message: OutgoingMessage) -> OutgoingMessage:
    """A dead letter too large for Kafka without its value (and a key over 1 KiB): ``dlq.value_omitted`` gives
    the original's sizes."""
    key = message.key if message.key is not None and len(message.key) <= 1024 else None
    sizes = f"value={len(message.value)} key={len(message.key or b'')} bytes"
    return OutgoingMessage(
        topic=message.topic, value=b"", key=key, headers=[*message.headers, ("dlq.value_omitted", sizes.encode())]
    )


class DeadLetters:
    """Publishes a service's dead letters, counting and logging each one."""

    def __init__(self, *, service: str, producer: Producer, metrics: RuntimeMetrics) -> None:
        self._service = service
        self._producer = producer
        self._metrics = metrics

    async def publish(self, items: Sequence[Failure], contexts: Mapping[int, LetterContext] | None = None) -> None:
        """Dead-letter ``items`` (of one partition); ``contexts``: what is known of each, by offset."""
        known = contexts or {}
        out = [self._letter(record, exc, known.get(record.offset)) for record, exc in items]
        try:
            await self._producer.send(out)
        except PermanentError:
            # The original plus the dlq.* headers is more than Kafka takes (a value just under the topic's
            # limit). Raising here would end the loop, and the uncommitted record would crash every restart:
            # dead-letter it without key and value instead; the headers say where the original still is.
            log.warning("dead_letter_too_large_value_omitted", count=len(out), sizes=[len(m.value) for m in out])
            await self._producer.send([without_payload(m) for m in out])

    def _letter(
        self, record: ConsumerRecord[bytes, bytes], exc: BaseException, context: LetterContext | None
    ) -> OutgoingMessage:
        letter = OutgoingMessage(
            topic=dlq_name(record.topic),
            value=record.value or b"",
            key=record.key,
            headers=dead_letter_headers(record, exc, self._service, context),
        )
        self._metrics.dead_lettered.labels(record.topic, type(exc).__name__).inc()
        log.warning(
            "message_dead_lettered",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            error=type(exc).__name__,
            reason=redact(str(exc))[:500],
            run_id=str(context.run_id) if context and context.run_id else None,
        )
        return letter
