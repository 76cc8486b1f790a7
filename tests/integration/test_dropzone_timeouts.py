"""A file:// drop zone whose file system hangs: every operation is bounded by DROPZONE_IO_TIMEOUT_S and fails as
the zone being unavailable (retried, never dead-lettered), instead of waiting for ever. The hang is a blocking
call patched into the worker thread's path, released at the end (a hung mount as far as the caller can tell)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from shared.dropzone import file as file_zone
from shared.dropzone import nofollow, open_dropzone
from shared.dropzone.base import TEMP_PREFIX
from shared.dropzone.file import DropZoneIOTimeout
from shared.dropzone.s3_options import S3Options
from shared.dropzone.settings import S3Settings
from shared.failures import FailureKind, classify
from tests.helpers import eventually

pytestmark = pytest.mark.integration


async def test_a_read_that_hangs_fails_within_the_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    zone = open_dropzone(tmp_path.as_uri(), s3=S3Options(file_io_timeout_s=0.3))
    await zone.write("a.sync", b"ok\n")
    released = threading.Event()
    opened: list[int] = []
    open_read = nofollow.open_read

    def hanging_open(*args: Any) -> int:
        released.wait()
        fd = open_read(*args)
        opened.append(fd)
        return fd

    monkeypatch.setattr(nofollow, "open_read", hanging_open)
    try:
        with pytest.raises(DropZoneIOTimeout) as raised:
            await zone.read_bytes("a.sync")
        assert classify(raised.value) is FailureKind.DEPENDENCY
        assert "DROPZONE_IO_TIMEOUT_S" in str(raised.value)
        assert await zone.exists("a.sync")  # the zone still answers what does not hang
    finally:
        released.set()

    async def still_open() -> bool:
        # The abandoned open returns once released; the zone closes what it opened (nobody else will).
        target = str(tmp_path / "a.sync")
        return any(_points_to(fd, target) for fd in opened) or not opened

    await eventually(still_open, until=lambda is_open: not is_open)


def _points_to(fd: int, target: str) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == target
    except OSError:
        return False


async def test_a_write_that_hangs_fails_within_the_timeout_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    released = threading.Event()
    commit = file_zone._commit

    def hanging_commit(*args: Any) -> Any:
        released.wait()
        return commit(*args)

    monkeypatch.setattr(file_zone, "_commit", hanging_commit)
    zone = open_dropzone(tmp_path.as_uri(), s3=S3Options(file_io_timeout_s=0.3))
    try:
        with pytest.raises(DropZoneIOTimeout):
            await zone.write("b.sync", b"data\n")
    finally:
        released.set()

    async def leftovers() -> list[str]:
        return sorted(os.listdir(tmp_path))

    # The hung commit finishes once released; the temporary file is removed after it, off the event loop.
    await eventually(leftovers, until=lambda names: not any(n.startswith(TEMP_PREFIX) for n in names))


def test_the_setting_reaches_the_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROPZONE_IO_TIMEOUT_S", "7.5")
    assert S3Settings().s3_options().file_io_timeout_s == 7.5
