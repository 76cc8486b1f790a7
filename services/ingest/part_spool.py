"""Where a gzip part's content waits between the batch's check and its parse, so it is inflated once.

A batch is checked whole (every part against its ``.info``) before anything is emitted, and the check of a
gzip part needs its content (the line count). Rather than inflate the part a second time for the parse,
the check writes the content it inflates to a spool file, and the parse reads that plain file.

Each spool is an anonymous file (``O_TMPFILE``: it has no name in the folder) in a private folder (0700,
owned by this user, never a link). Its space is freed by the kernel as soon as it is closed, which the
batch does whatever way it ends (processed, rejected, failed, cancelled), and also when the process dies:
a crash leaves nothing behind. Where ``O_TMPFILE`` is not supported (some filesystems), the file is
created under a :data:`LEFTOVER_PREFIX` name and unlinked at once; the few left by a crash in between are
removed when the folder is prepared at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from shared.errors import ConfigError
from shared.formats.lines import DEFAULT_CHUNK_BYTES
from shared.logging import get_logger

log = get_logger(__name__)

LEFTOVER_PREFIX = "part-spool-"


def default_spool_dir() -> Path:
    """The system temp dir's folder for this user (``IMPORT_SPOOL_DIR`` unset)."""
    return Path(tempfile.gettempdir()) / f"audience-bridge-ingest-spool-{os.getuid()}"


def prepare_spool_dir(folder: Path) -> Path:
    """The spool folder, created private (0700) if missing, its leftovers removed. Refused (a clear
    ``ConfigError``) when it is a link, not a folder, or another user's: the spool holds IDs."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(folder)
    except OSError as exc:
        raise ConfigError(f"cannot create the import spool folder: {exc}", folder=str(folder)) from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise ConfigError("the import spool folder is a link or not a folder", folder=str(folder))
    if st.st_uid != os.getuid():
        raise ConfigError("the import spool folder belongs to another user", folder=str(folder))
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(folder, 0o700)
    removed = 0
    for entry in os.scandir(folder):
        if entry.name.startswith(LEFTOVER_PREFIX) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
    if removed:
        log.info("spool_leftovers_removed", folder=str(folder), files=removed)
    return folder


def _anonymous_file(folder: Path) -> BinaryIO:
    try:
        fd = os.open(folder, os.O_TMPFILE | os.O_RDWR | os.O_NOFOLLOW, 0o600)
    except OSError:  # the filesystem has no O_TMPFILE: a name, unlinked at once
        fd, name = tempfile.mkstemp(dir=folder, prefix=LEFTOVER_PREFIX)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
    return os.fdopen(fd, "w+b")


class BatchSpools:
    """The spooled content of one batch's gzip parts; closing it frees them all (``async with``)."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._files: dict[str, BinaryIO] = {}

    def new(self, part: str) -> BinaryIO:
        """A fresh spool for ``part`` (one spooled earlier under that name is dropped)."""
        self.drop(part)
        spool = self._files[part] = _anonymous_file(self._folder)
        return spool

    def drop(self, part: str) -> None:
        spool = self._files.pop(part, None)
        if spool is not None:
            spool.close()

    def has(self, part: str) -> bool:
        return part in self._files

    async def content(self, part: str) -> AsyncIterator[bytes]:
        """The part's spooled content, read a piece at a time in a worker thread (memory holds one piece);
        the spool is freed once read to the end (its disk space is not held while the next parts are read)."""
        spool = self._files[part]
        await asyncio.to_thread(spool.seek, 0)
        while piece := await asyncio.to_thread(spool.read, DEFAULT_CHUNK_BYTES):
            yield piece
        self.drop(part)

    def close(self) -> None:
        for part in list(self._files):
            self.drop(part)

    async def __aenter__(self) -> BatchSpools:
        return self

    async def __aexit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()
