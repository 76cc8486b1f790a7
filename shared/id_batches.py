"""One run's IDs cut into messages: at most N IDs each, ``seq`` 0..n-1, exactly one ``last``, with totals.

Used wherever IDs become batches (ingest's files and events, reconcile's exports). IDs are taken in
arrival order, adds and removes alike; a batch leaves once it is full *and* another ID follows, so the last
batch is known as such when it is sent (it carries the totals) and is never empty unless the run is. The
cut depends only on the order of the IDs, so the same input always gives the same batches: a restarted
producer re-emits exactly what it emitted before, which the consumers' ledgers recognise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from shared.kafka.producer import OutgoingMessage
from shared.kafka.window import WindowSender


@dataclass(frozen=True, slots=True)
class Cut:
    """One batch as cut: what the caller turns into its topic's message."""

    seq: int
    last: bool
    adds: list[str]
    removes: list[str]
    totals: dict[str, int] | None  # on the last batch only


BuildMessage = Callable[[Cut], OutgoingMessage]


class RunBatches:
    def __init__(self, size: int, build: BuildMessage, sender: WindowSender) -> None:
        if size < 1:
            raise ValueError("a batch holds at least one ID")
        self._size = size
        self._build = build
        self._sender = sender
        self._adds: list[str] = []
        self._removes: list[str] = []
        self.seq = 0
        self.added = 0
        self.removed = 0
        self.closed = False

    @property
    def taken(self) -> int:
        return self.added + self.removed

    async def add(self, one_id: str) -> None:
        if len(self._adds) + len(self._removes) >= self._size:
            await self._emit(last=False)
        self._adds.append(one_id)
        self.added += 1

    async def remove(self, one_id: str) -> None:
        if len(self._adds) + len(self._removes) >= self._size:
            await self._emit(last=False)
        self._removes.append(one_id)
        self.removed += 1

    async def extend(self, ids: Sequence[str], *, removes: bool = False) -> None:
        """Many IDs at once, in slices (the same batches as taking them one by one)."""
        start = 0
        while start < len(ids):
            if len(self._adds) + len(self._removes) >= self._size:
                await self._emit(last=False)
            into = self._removes if removes else self._adds  # a new list after each emit
            room = self._size - len(self._adds) - len(self._removes)
            taken = ids[start : start + room]
            into.extend(taken)
            start += len(taken)
        if removes:
            self.removed += len(ids)
        else:
            self.added += len(ids)

    async def close(self, totals: Mapping[str, int] | None = None) -> int:
        """Send the last batch, carrying ``totals`` plus ``batches``; returns how many batches the run has."""
        if self.closed:
            raise RuntimeError("the run's batches were closed already")
        await self._emit(last=True, totals={**(totals or {}), "batches": self.seq + 1})
        self.closed = True
        return self.seq

    async def _emit(self, *, last: bool, totals: dict[str, int] | None = None) -> None:
        cut = Cut(self.seq, last, self._adds, self._removes, totals if last else None)
        self._adds, self._removes = [], []
        self.seq += 1
        await self._sender.add(self._build(cut))
