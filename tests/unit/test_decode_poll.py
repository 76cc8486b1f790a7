"""A large poll is decoded by slices, the event loop served in between (the statements of partitions applying
side by side go on meanwhile), with the same deliveries and dead letters as decoded at once."""

from __future__ import annotations

import asyncio

import orjson
from aiokafka import ConsumerRecord

from shared.kafka.deliveries import DECODE_SLICE, decode_poll, decode_records
from shared.messages import RecipientChange


def _record(offset: int, value: bytes | None) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("t", 0, offset, 0, 0, b"k", value, None, 0, len(value or b""), [])


def _poll(size: int, poison: set[int]) -> list[ConsumerRecord[bytes, bytes]]:
    return [
        _record(i, b"not json" if i in poison else orjson.dumps({"recipient_id": i, "op": "upsert", "position": 1}))
        for i in range(size)
    ]


async def test_a_poll_decodes_by_slices_as_at_once() -> None:
    records = _poll(2 * DECODE_SLICE + 500, poison={3, DECODE_SLICE + 700})
    good, poison = await decode_poll(RecipientChange, records)
    want_good, want_poison = decode_records(RecipientChange, records)
    assert good == want_good
    assert [(r.offset, str(e)) for r, e in poison] == [(r.offset, str(e)) for r, e in want_poison]
    assert [r.offset for r, _ in poison] == [3, DECODE_SLICE + 700]
    assert [d.offset for d in good] == [i for i in range(len(records)) if i not in (3, DECODE_SLICE + 700)]


async def test_the_event_loop_runs_between_slices_only_of_a_large_poll() -> None:
    turns: list[int] = []

    async def other_partition() -> None:
        turns.append(1)

    for size, served in ((DECODE_SLICE, False), (DECODE_SLICE + 1, True)):
        turns.clear()
        task = asyncio.create_task(other_partition())
        await decode_poll(RecipientChange, _poll(size, poison=set()))
        assert bool(turns) is served  # a poll of one slice is decoded without a pause
        await task
