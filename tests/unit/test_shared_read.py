"""SharedRead: one read for concurrent callers, kept for its time, a failure not kept, a leaver harmless."""

from __future__ import annotations

import asyncio

import pytest

from shared.shared_read import SharedRead


class Source:
    def __init__(self) -> None:
        self.calls = 0
        self.gate = asyncio.Event()
        self.fail = False

    async def read(self) -> int:
        self.calls += 1
        await self.gate.wait()
        if self.fail:
            raise OSError("away")
        return self.calls


async def test_concurrent_callers_share_one_read_kept_for_its_time() -> None:
    source = Source()
    shared = SharedRead(source.read, ttl_s=60, name="t")
    waiting = [asyncio.create_task(shared.get()) for _ in range(50)]
    await asyncio.sleep(0)
    source.gate.set()
    assert await asyncio.gather(*waiting) == [1] * 50
    assert await shared.get() == 1
    assert (source.calls, shared.reads) == (1, 1)
    fresh = SharedRead(source.read, ttl_s=0, name="t")
    assert [await fresh.get(), await fresh.get()] == [2, 3]


async def test_a_failed_read_is_not_kept_and_a_leaving_caller_does_not_cancel_it() -> None:
    source = Source()
    shared = SharedRead(source.read, ttl_s=60, name="t")
    source.fail = True
    source.gate.set()
    with pytest.raises(OSError, match="away"):
        await shared.get()
    source.fail, source.gate = False, asyncio.Event()
    leaver = asyncio.create_task(shared.get())
    stayer = asyncio.create_task(shared.get())
    await asyncio.sleep(0)
    leaver.cancel()
    source.gate.set()
    assert await stayer == 2
    assert leaver.cancelled()
