"""Group commit of real-time deliveries onto ``segment-events``: the deliveries that arrive while a write is
waiting for Kafka's acknowledgement go together in the next write.

At 2,000 deliveries/s, one ``Producer.send`` per delivery (10 records, 10 futures gathered, a timeout
armed each) cost more CPU than reading the delivery. Here a delivery appends its records and waits on one
future; a single writer task sends everything pending at once as record batches
(``Producer.send_batched``), waits for ``acks=all``, resolves the waiters
and starts over with what arrived meanwhile. A delivery is answered only once its own records are
acknowledged (the write that carried them succeeded), so a ``200`` still never loses a change; a failed
write fails every delivery it carried (each answered ``503``: the platform retries, and the event ids make
the retry change nothing). A waiter that gives up (its response timeout) leaves the write going: its
records may still land, which its retry then duplicates harmlessly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from shared.kafka import OutgoingMessage, Producer
from shared.logging import get_logger

log = get_logger(__name__)


class GroupWriter:
    def __init__(self, producer: Producer, observe: Callable[[int], None] | None = None) -> None:
        """``observe``: told the number of deliveries each write carries (a metric)."""
        self._producer = producer
        self._observe = observe
        self._records: list[OutgoingMessage] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None
        self.writes = 0  # sends made, for tests and the curious: fewer than deliveries under load

    async def write(self, records: Sequence[OutgoingMessage]) -> None:
        """Return once ``records`` are acknowledged by Kafka; raise what the write that carried them raised."""
        if not records:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._records.extend(records)
        self._waiters.append(waiter)
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="realtime-group-writer")
        await waiter

    async def _drain(self) -> None:
        try:
            while self._records:
                records, waiters = self._records, self._waiters
                self._records, self._waiters = [], []
                await self._send(records, waiters)
        finally:
            self._task = None

    async def _send(self, records: list[OutgoingMessage], waiters: list[asyncio.Future[None]]) -> None:
        self.writes += 1
        if self._observe is not None:
            self._observe(len(waiters))
        try:
            await self._producer.send_batched(records)
        except asyncio.CancelledError:
            for waiter in waiters:
                waiter.cancel()
            raise
        except Exception as exc:  # every delivery of the write gets the error (a 503, or a 500 if permanent)
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
                    # Marked read: the delivery still raises it; one that gave up meanwhile is not reported.
                    waiter.exception()
            return
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def close(self) -> None:
        """Wait for the write under way (deliveries waiting on it get their answer)."""
        task = self._task
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
