"""Waiting for a recorded set's build begun beside the files (services/publish/recorded_set.settle): whatever the
build ends in, the run's own outcome is what the caller reports, and a cancelled caller stays cancelled."""

from __future__ import annotations

import asyncio

import pytest

from services.publish.recorded_set import settle


async def test_nothing_to_wait_for() -> None:
    await settle(None)


async def test_a_finished_build_is_awaited() -> None:
    build: asyncio.Task[int | None] = asyncio.ensure_future(asyncio.sleep(0, result=3))
    await settle(build)
    assert build.result() == 3


async def test_a_failed_build_is_said_not_raised() -> None:
    async def failing() -> int | None:
        raise ConnectionResetError("Postgres went away")

    build = asyncio.ensure_future(failing())
    await settle(build)  # the files' failure is the one the run reports
    assert isinstance(build.exception(), ConnectionResetError)


async def test_a_build_under_way_is_cancelled_and_awaited() -> None:
    started = asyncio.Event()

    async def long_build() -> int | None:
        started.set()
        await asyncio.Event().wait()
        return 1

    build = asyncio.ensure_future(long_build())
    await started.wait()
    await settle(build, cancel=True)
    assert build.cancelled()


async def test_the_caller_cancelled_while_waiting_stays_cancelled() -> None:
    started = asyncio.Event()

    async def long_build() -> int | None:
        await asyncio.Event().wait()
        return 1

    build = asyncio.ensure_future(long_build())

    async def caller() -> None:
        started.set()
        await settle(build)

    waiting = asyncio.ensure_future(caller())
    await started.wait()
    await asyncio.sleep(0)  # the caller is now inside settle, awaiting the build
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    build.cancel()
