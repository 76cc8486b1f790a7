"""One read for many callers: an async read's result kept for a while, and concurrent callers wait for the
read under way instead of starting their own (single flight). What pages use so that their viewers cost
one query, however many they are."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SharedRead(Generic[T]):
    """``await get()``: the last result if younger than ``ttl_s``, else the read under way (or a new one).

    A failed read is not kept: the next caller reads again. The read runs in its own task, shielded, so a
    caller who goes away (a closed connection) does not cancel it for the others."""

    def __init__(self, read: Callable[[], Awaitable[T]], *, ttl_s: float, name: str) -> None:
        self._read = read
        self._ttl_s = ttl_s
        self._name = name
        self._last: tuple[float, T] | None = None
        self._reading: asyncio.Task[T] | None = None
        self.reads = 0

    async def get(self) -> T:
        last = self._last
        if last is not None and time.monotonic() - last[0] < self._ttl_s:
            return last[1]
        if self._reading is None or self._reading.done():
            self._reading = asyncio.create_task(self._run(), name=self._name)
        return await asyncio.shield(self._reading)

    async def _run(self) -> T:
        result = await self._read()
        self.reads += 1
        self._last = (time.monotonic(), result)
        return result
