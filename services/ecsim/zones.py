"""ecsim's two drop zones, and the "briefly unavailable" fault that can be injected into them.

* the **export** zone is where the bridge puts inbound data files for the platform (ecsim reads it);
* the **import** zone is where the platform delivers outbound batches to the bridge (ecsim writes it).

While a fault is active every operation on the zone (list, each chunk read, write, move, delete, exists)
raises :class:`~shared.dropzone.DropZoneUnavailable`, exactly what a real zone raises when a disk is full
or S3 is down, so the code under test takes its normal retry path.
"""

from __future__ import annotations

import builtins
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from typing import Any, Literal

from shared.dropzone import DropZone, DropZoneUnavailable, ObjectInfo

ZoneName = Literal["export", "import"]


class ZoneFault:
    """Unavailability until a deadline (monotonic clock)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.until = 0.0
        self.injected = 0

    def set(self, seconds: float) -> None:
        self.until = self._clock() + seconds

    def clear(self) -> None:
        self.until = 0.0

    @property
    def active(self) -> bool:
        return self._clock() < self.until

    def remaining(self) -> float:
        return max(0.0, self.until - self._clock())

    def check(self, url: str, operation: str, name: str | None = None) -> None:
        if self.active:
            self.injected += 1
            raise DropZoneUnavailable("drop zone unavailable (injected fault)", url=url, operation=operation, name=name)

    def state(self) -> dict[str, Any]:
        return {"unavailable": self.active, "remaining_s": round(self.remaining(), 3), "injected": self.injected}


class FaultyDropZone(DropZone):
    """A zone that delegates to ``inner`` unless its :class:`ZoneFault` is active."""

    def __init__(self, inner: DropZone, fault: ZoneFault) -> None:
        self.inner = inner
        self.fault = fault

    @property
    def url(self) -> str:
        return self.inner.url

    async def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        self.fault.check(self.url, "list", prefix)
        return await self.inner.list(prefix)

    async def read(self, name: str) -> AsyncGenerator[bytes, None]:
        self.fault.check(self.url, "read", name)
        async with contextlib.aclosing(self.inner.read(name)) as chunks:
            async for chunk in chunks:
                # Checked per chunk as well: an outage can start in the middle of a large file.
                self.fault.check(self.url, "read", name)
                yield chunk

    async def write(self, name: str, data: bytes | AsyncIterable[bytes]) -> ObjectInfo:
        self.fault.check(self.url, "write", name)
        return await self.inner.write(name, data)

    async def _move_object(self, name: str, target: str) -> None:
        self.fault.check(self.url, "move", name)
        await self.inner._move_object(name, target)

    async def delete(self, name: str, *, missing_ok: bool = False) -> None:
        self.fault.check(self.url, "delete", name)
        await self.inner.delete(name, missing_ok=missing_ok)

    async def exists(self, name: str) -> bool:
        self.fault.check(self.url, "exists", name)
        return await self.inner.exists(name)

    async def close(self) -> None:
        await self.inner.close()
