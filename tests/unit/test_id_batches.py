"""One run's IDs cut into batches: reassembled they are the same IDs, seq 0..n-1, one last, true totals."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.id_batches import Cut, RunBatches
from shared.kafka.producer import OutgoingMessage
from shared.kafka.window import WindowSender


class _Producer:
    def __init__(self) -> None:
        self.sent: list[OutgoingMessage] = []

    async def send(self, messages: list[OutgoingMessage]) -> None:
        await asyncio.sleep(0)
        self.sent.extend(messages)


def _cuts(steps: list[tuple[str, list[str]]], size: int, window: int) -> tuple[list[Cut], RunBatches]:
    cuts: dict[bytes, Cut] = {}

    def build(cut: Cut) -> OutgoingMessage:
        key = str(cut.seq).encode()
        cuts[key] = cut
        return OutgoingMessage(topic="t", value=b"", key=key)

    producer = _Producer()

    async def run() -> RunBatches:
        sender = WindowSender(producer, window=window)  # type: ignore[arg-type]
        batches = RunBatches(size, build, sender)
        for kind, ids in steps:
            if kind == "add":
                for one in ids:
                    await batches.add(one)
            elif kind == "remove":
                for one in ids:
                    await batches.remove(one)
            else:
                await batches.extend(ids, removes=kind == "extend_removes")
        await batches.close({"received": batches.taken})
        await sender.flush()
        return batches

    batches = asyncio.run(run())
    # What reached the producer, in the order it was sent.
    return [cuts[m.key or b""] for m in producer.sent], batches


_ids = st.lists(st.text("abc0123456789", min_size=1, max_size=4), max_size=30)
_steps = st.lists(st.tuples(st.sampled_from(["add", "remove", "extend_adds", "extend_removes"]), _ids), max_size=12)


@given(steps=_steps, size=st.integers(1, 12), window=st.integers(1, 4))
def test_batches_reassemble_to_the_same_ids(steps: list[tuple[str, list[str]]], size: int, window: int) -> None:
    cuts, batches = _cuts(steps, size, window)
    adds = [i for kind, ids in steps if kind in ("add", "extend_adds") for i in ids]
    removes = [i for kind, ids in steps if kind in ("remove", "extend_removes") for i in ids]
    assert [c.seq for c in cuts] == list(range(len(cuts)))
    assert [c.last for c in cuts].count(True) == 1
    assert cuts[-1].last
    assert [i for c in cuts for i in c.adds] == adds
    assert [i for c in cuts for i in c.removes] == removes
    assert all(len(c.adds) + len(c.removes) <= size for c in cuts)
    # Full batches only, but for the last one; the last one is empty only when the run is.
    assert all(len(c.adds) + len(c.removes) == size for c in cuts[:-1])
    assert (len(cuts[-1].adds) + len(cuts[-1].removes) == 0) == (not adds and not removes)
    assert cuts[-1].totals == {"received": len(adds) + len(removes), "batches": len(cuts)}
    assert all(c.totals is None for c in cuts[:-1])
    assert (batches.added, batches.removed) == (len(adds), len(removes))


@given(ids=_ids, size=st.integers(1, 12))
def test_extend_cuts_where_one_by_one_cuts(ids: list[str], size: int) -> None:
    one_by_one, _ = _cuts([("add", ids)], size, 2)
    sliced, _ = _cuts([("extend_adds", ids)], size, 2)
    assert [(c.adds, c.removes, c.last) for c in one_by_one] == [(c.adds, c.removes, c.last) for c in sliced]


def test_a_closed_run_cannot_close_again() -> None:
    async def run() -> Any:
        batches = RunBatches(3, lambda c: OutgoingMessage("t", b""), WindowSender(_Producer()))  # type: ignore[arg-type]
        await batches.close()
        await batches.close()

    with pytest.raises(RuntimeError, match="closed already"):
        asyncio.run(run())
