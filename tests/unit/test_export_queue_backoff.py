"""The export queue's loop looks again later after each failure in a row, and at its pace once a look works."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaConnectionError

from services.reconcile.export_waiting import ExportQueue

INTERVAL = 1.0
CAP = 10.0


class _ScriptedQueue(ExportQueue):
    """A queue whose looks fail or work as scripted (True: works), with no database behind it."""

    def __init__(self, script: list[bool | Exception]) -> None:
        self.script = script

    async def tick(self) -> int:
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return 0


async def _delays(script: list[bool | Exception]) -> list[float]:
    """The waits before each look, until the script is played out."""
    delays: list[float] = []
    queue = _ScriptedQueue(script)

    async def sleep(delay: float) -> None:
        delays.append(delay)
        if not queue.script:
            raise asyncio.CancelledError  # the service stopping

    with pytest.raises(asyncio.CancelledError):
        await queue.run(INTERVAL, backoff_max_s=CAP, sleep=sleep)
    return delays


async def test_failed_looks_in_a_row_wait_longer_and_a_working_look_resets_the_pace() -> None:
    lost = KafkaConnectionError("broker away")
    delays = await _delays([lost, lost, lost, lost, lost, True, True, lost])
    assert delays[0] == INTERVAL
    assert INTERVAL < delays[1] <= INTERVAL + 1.0  # first failure: at most one interval more
    # Fifth failure in a row: the jitter's ceiling is the cap, its floor a tenth of it.
    assert INTERVAL + CAP / 10 <= delays[5] <= INTERVAL + CAP
    assert all(INTERVAL <= d <= INTERVAL + CAP for d in delays)
    assert delays[6] == INTERVAL  # a look worked: back to the pace
    assert delays[7] == INTERVAL
    assert INTERVAL < delays[8] <= INTERVAL + 1.0  # a new failure starts the backoff again


async def test_an_error_that_waiting_cannot_mend_stops_the_loop() -> None:
    with pytest.raises(ValueError, match="a bug"):
        await _delays([ValueError("a bug"), True])
