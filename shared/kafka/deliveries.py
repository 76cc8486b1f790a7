"""What a consumer's handler receives and answers: decoded deliveries in, rejected ones out."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

from aiokafka import ConsumerRecord

from shared.errors import PoisonMessage
from shared.message_batches import decode_all
from shared.messages import Message, decode

M = TypeVar("M", bound=Message)

# One partition's records from a poll, in offset order.
Records = list[ConsumerRecord[bytes, bytes]]
# A record that is dead-lettered, and why.
Failure = tuple[ConsumerRecord[bytes, bytes], BaseException]


class Delivery(NamedTuple, Generic[M]):
    """A decoded message and where it came from. A named tuple, immutable: a frozen dataclass took four times as
    long to build (one per message: a tenth of reconcile's time on a stream of small messages)."""

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


def _delivery(record: ConsumerRecord[bytes, bytes], message: Message) -> Delivery[Any]:
    return Delivery(
        message=message,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        headers=tuple(record.headers or ()),
    )


def decode_records(model: type[Message], records: Records) -> tuple[list[Delivery[Any]], list[Failure]]:
    """The records ``model`` can read, as deliveries, and the poison ones with the reason each is unreadable.

    The whole poll is validated at once (:func:`shared.message_batches.decode_all`); a poll holding a message
    that is not valid is decoded one message at a time, so each poison one gets its own reason."""
    kept = [r for r in records if not (r.value is None and model.skips_tombstones)]
    messages = decode_all(model, [r.value for r in kept])
    if messages is not None:
        return [_delivery(r, m) for r, m in zip(kept, messages, strict=True)], []
    good: list[Delivery[Any]] = []
    poison: list[Failure] = []
    for record in kept:
        try:
            good.append(_delivery(record, decode(model, record.value)))
        except PoisonMessage as exc:
            poison.append((record, exc))
    return good, poison


# A poll is decoded this many records at a time, the event loop served in between: decoding 5,000 recipient
# changes at once held it ~10 ms, while the statements of the partitions applying side by side waited for it
# to send their next one (issue 18).
DECODE_SLICE = 1000


async def decode_poll(model: type[Message], records: Records) -> tuple[list[Delivery[Any]], list[Failure]]:
    """:func:`decode_records` of ``records`` by slices of :data:`DECODE_SLICE`, in order (a poison message sends
    only its slice one message at a time)."""
    if len(records) <= DECODE_SLICE:
        return decode_records(model, records)
    good: list[Delivery[Any]] = []
    poison: list[Failure] = []
    for start in range(0, len(records), DECODE_SLICE):
        if start:
            await asyncio.sleep(0)
        decoded, refused = decode_records(model, records[start : start + DECODE_SLICE])
        good += decoded
        poison += refused
    return good, poison
