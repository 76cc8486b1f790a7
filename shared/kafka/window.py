"""Sending a long stream of messages in windows: one window in flight while the next one fills.

Pipelining without unbounded memory: at most two windows are held, and windows leave in order (the next
one is launched only once the previous one was acknowledged), so a run's batches reach their partition in
the order they were cut.
"""

from __future__ import annotations

import asyncio
from typing import Final

from shared.kafka.producer import OutgoingMessage, Producer

SEND_WINDOW: Final = 8  # messages per send


class WindowSender:
    def __init__(self, producer: Producer, *, window: int = SEND_WINDOW) -> None:
        self._producer = producer
        self._size = max(1, window)
        self._window: list[OutgoingMessage] = []
        self._in_flight: asyncio.Task[None] | None = None

    async def add(self, message: OutgoingMessage) -> None:
        self._window.append(message)
        if len(self._window) >= self._size:
            await self._launch()

    async def flush(self) -> None:
        """Send what is held and wait until Kafka acknowledged everything added so far."""
        await self._launch()
        await self._wait()

    async def _launch(self) -> None:
        await self._wait()  # raises the previous window's error: nothing goes out after a failed window
        if self._window:
            window, self._window = self._window, []
            self._in_flight = asyncio.ensure_future(self._producer.send(window))

    async def _wait(self) -> None:
        if self._in_flight is not None:
            task, self._in_flight = self._in_flight, None
            await task

    async def close(self) -> None:
        """After an error: let the window in flight settle (its outcome no longer matters)."""
        task, self._in_flight = self._in_flight, None
        self._window = []
        if task is None:
            return
        if not task.done():
            task.cancel()
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it as never retrieved
