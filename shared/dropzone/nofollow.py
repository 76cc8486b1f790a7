"""Paths under a folder drop zone's root, walked one component at a time and never through a link.

Filtering links when listing is not enough: a name is a path, and any folder on it (``processed/``, a
``date=…`` folder) could have been replaced by a symbolic link to somewhere else, between the listing and
the read, or before the zone was ever used. Every operation therefore opens the root once and then each
folder of the name relative to the previous one with ``O_NOFOLLOW`` (the ``openat`` walk the kernel offers),
and finally the object itself with ``O_NOFOLLOW`` or a no-follow ``lstat``: a link anywhere under the root is
refused (:class:`LinkRefused`), never followed, and nothing is read or written through it. The root itself
is the operator's choice and may be a link.

Everything here blocks: the zone calls it in a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class LinkRefused(OSError):
    """A component of the name is a symbolic link (or not a folder where one is needed)."""

    def __init__(self, name: str) -> None:
        super().__init__(errno.ELOOP, "a symbolic link is on the path and is not followed", name)


def split(name: str) -> tuple[list[str], str]:
    """The folders of a validated name and its last component."""
    *folders, base = name.split("/")
    return folders, base


def _open_child_dir(parent: int, part: str, *, create: bool, name: str) -> int:
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
    # Made meanwhile by another writer: opened below, no-follow as any other.
    with contextlib.suppress(FileExistsError):
        os.mkdir(part, 0o755, dir_fd=parent)
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        raise _refused_or(exc, parent, part, name) from exc


def _refused_or(exc: OSError, parent: int, part: str, name: str) -> OSError:
    """ELOOP (or ENOTDIR on some systems) for a link: say so; anything else as it was."""
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        try:
            if stat.S_ISLNK(os.stat(part, dir_fd=parent, follow_symlinks=False).st_mode):
                return LinkRefused(name)
        except OSError:
            pass
    return exc


@contextmanager
def folder(root: Path, folders: list[str], *, create: bool = False, name: str = "") -> Iterator[int]:
    """A descriptor of ``root/folders…``, reached without following a link under ``root``."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in folders:
            try:
                child = _open_child_dir(fd, part, create=create, name=name)
            except OSError as exc:
                raise _refused_or(exc, fd, part, name) from exc
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def lstat_in(parent: int, base: str) -> os.stat_result:
    return os.stat(base, dir_fd=parent, follow_symlinks=False)


def require_regular(parent: int, base: str, name: str) -> os.stat_result:
    """The object's own status; a link in its place is refused, a missing one raises FileNotFoundError."""
    st = lstat_in(parent, base)
    if stat.S_ISLNK(st.st_mode):
        raise LinkRefused(name)
    if not stat.S_ISREG(st.st_mode):
        raise FileNotFoundError(errno.ENOENT, "not a regular file", name)
    return st


def open_read(root: Path, name: str) -> int:
    """A descriptor to read ``name``, opened without following a link."""
    folders, base = split(name)
    with folder(root, folders, name=name) as parent:
        try:
            fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=parent)
        except OSError as exc:
            raise _refused_or(exc, parent, base, name) from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or device must not block or be read
        os.close(fd)
        raise FileNotFoundError(errno.ENOENT, "not a regular file", name)
    os.set_blocking(fd, True)
    return fd


def fsync_dir(fd: int) -> None:
    # Makes a rename durable: without it a power cut can bring back the old directory entry.
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems (certain network mounts) do not support fsync on a directory.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
