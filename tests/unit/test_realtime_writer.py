"""Group commit of real-time deliveries: concurrent deliveries share writes, each waits for its own records,
and a failed write fails exactly the deliveries it carried."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from services.ingest.realtime_writer import GroupWriter
from shared.errors import TransientError
from shared.kafka import OutgoingMessage


class SlowProducer:
    """Acknowledges a send after ``gate`` opens (one gate per send), failing the sends listed in ``fail``."""

    def __init__(self, fail: Sequence[int] = ()) -> None:
        self.sends: list[list[bytes]] = []
        self.gates: list[asyncio.Event] = []
        self.fail = set(fail)

    async def send_batched(self, messages: Sequence[OutgoingMessage]) -> None:
        number = len(self.sends)
        self.sends.append([m.value for m in messages])
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        if number in self.fail:
            raise TransientError("Kafka did not acknowledge the messages")

    async def open_all(self) -> None:
        """Open every gate, including those of sends that start meanwhile."""
        while any(not g.is_set() for g in self.gates) or not self.gates:
            for gate in self.gates:
                gate.set()
            await asyncio.sleep(0)


def _records(name: str, count: int) -> list[OutgoingMessage]:
    return [OutgoingMessage(topic="t", value=f"{name}-{i}".encode()) for i in range(count)]


def _writer(producer: SlowProducer) -> GroupWriter:
    return GroupWriter(producer)  # type: ignore[arg-type]  # duck-typed: send_batched() is all it uses


async def _until(condition: object, what: str) -> None:
    for _ in range(1000):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


async def test_deliveries_arriving_during_a_write_go_together_in_the_next() -> None:
    producer = SlowProducer()
    writer = _writer(producer)
    first = asyncio.create_task(writer.write(_records("a", 10)))
    await _until(lambda: len(producer.sends) == 1, "the first write started")
    later = [asyncio.create_task(writer.write(_records(name, 10))) for name in "bcde"]
    await asyncio.sleep(0)
    assert not first.done()  # answered only once its own records are acknowledged
    producer.gates[0].set()
    await first
    await _until(lambda: len(producer.sends) == 2, "the second write started")
    assert not any(t.done() for t in later)
    producer.gates[1].set()
    await asyncio.gather(*later)
    assert [len(s) for s in producer.sends] == [10, 40]  # five deliveries, two writes
    assert producer.sends[1] == [r.value for name in "bcde" for r in _records(name, 10)]
    assert writer.writes == 2


async def test_a_failed_write_fails_the_deliveries_it_carried_and_no_other() -> None:
    producer = SlowProducer(fail=[1])
    writer = _writer(producer)
    first = asyncio.create_task(writer.write(_records("a", 3)))
    await _until(lambda: len(producer.sends) == 1, "the first write started")
    carried = [asyncio.create_task(writer.write(_records(name, 3))) for name in "bc"]
    await asyncio.sleep(0)
    producer.gates[0].set()
    await first
    await _until(lambda: len(producer.sends) == 2, "the second write started")
    after = asyncio.create_task(writer.write(_records("d", 3)))
    await asyncio.sleep(0)
    producer.gates[1].set()
    for task in carried:
        with pytest.raises(TransientError):
            await task
    await _until(lambda: len(producer.sends) == 3, "the third write started")
    producer.gates[2].set()
    await after  # the next write is not poisoned by the failed one
    assert producer.sends[2] == [r.value for r in _records("d", 3)]


async def test_a_delivery_that_gives_up_leaves_the_write_and_the_others_going() -> None:
    producer = SlowProducer()
    writer = _writer(producer)
    impatient = asyncio.create_task(writer.write(_records("a", 2)))
    patient = asyncio.create_task(writer.write(_records("b", 2)))
    await _until(lambda: len(producer.sends) == 1, "the write started")
    impatient.cancel()  # its response timeout
    with pytest.raises(asyncio.CancelledError):
        await impatient
    producer.gates[0].set()
    await patient
    assert producer.sends == [[b"a-0", b"a-1", b"b-0", b"b-1"]]  # its records were written all the same


async def test_close_waits_for_the_write_under_way() -> None:
    producer = SlowProducer()
    writer = _writer(producer)
    delivery = asyncio.create_task(writer.write(_records("a", 1)))
    await _until(lambda: len(producer.sends) == 1, "the write started")
    closing = asyncio.create_task(writer.close())
    await asyncio.sleep(0)
    assert not closing.done()
    await producer.open_all()
    await closing
    await delivery


async def test_nothing_to_write_writes_nothing() -> None:
    producer = SlowProducer()
    writer = _writer(producer)
    await writer.write([])
    assert producer.sends == []
    assert writer.writes == 0
