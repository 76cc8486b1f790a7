"""The tests' background clean-up: every job runs, in order, failures are reported at the end, none piles up."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tests.fixtures.cleanup import MAX_PENDING, Cleanup


def test_every_job_runs_in_order_and_drain_waits_for_them() -> None:
    cleanup, done = Cleanup(), []

    def job(i: int) -> object:
        async def run() -> None:
            await asyncio.sleep(0.01)
            done.append(i)

        return run

    for i in range(10):
        cleanup.submit(f"job {i}", job(i))  # type: ignore[arg-type]
    cleanup.drain()
    assert done == list(range(10))
    cleanup.submit("after a drain", job(10))  # type: ignore[arg-type]  # a new worker
    cleanup.drain()
    assert done == list(range(11))


def test_a_failed_job_is_named_at_the_drain_and_the_others_still_run() -> None:
    cleanup, done = Cleanup(), []

    async def fails() -> None:
        raise OSError("the server went away")

    async def works() -> None:
        done.append("ok")

    cleanup.submit("database ab_test_1", fails)
    cleanup.submit("topics t1.*", works)
    with pytest.raises(AssertionError, match=r"database ab_test_1: OSError: the server went away"):
        cleanup.drain()
    assert done == ["ok"]
    cleanup.drain()  # reported once


def test_a_test_waits_when_too_many_clean_ups_are_pending() -> None:
    cleanup, release, started = Cleanup(), threading.Event(), threading.Event()

    async def blocked() -> None:
        started.set()
        await asyncio.to_thread(release.wait)

    cleanup.submit("first", blocked)
    assert started.wait(10)  # the worker holds the first one: the queue is empty
    for i in range(MAX_PENDING):
        cleanup.submit(f"pending {i}", blocked)
    extra = threading.Thread(target=cleanup.submit, args=("one more", blocked))
    extra.start()
    extra.join(0.3)
    assert extra.is_alive(), "a clean-up was queued beyond MAX_PENDING"
    release.set()
    extra.join(10)
    assert not extra.is_alive()
    cleanup.drain()
