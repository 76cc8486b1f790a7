"""A drop zone in a local (or mounted) folder: ``file:///abs/path``.

Every blocking call runs in a worker thread so the event loop keeps serving other work while a large
file is copied, and is bounded by ``DROPZONE_IO_TIMEOUT_S``: a mount that hangs (NFS, a FUSE store) makes
the call fail as :class:`DropZoneIOTimeout` (the zone is unavailable, retried) instead of waiting for ever.
The thread itself cannot be interrupted; it ends whenever the file system answers. Atomicity comes from
POSIX: data goes to a temporary name in the destination folder, is fsynced, then ``os.replace``d over the
final name, which readers see all at once or not at all.
A crash mid-write can leave a ``.dropzone-tmp-*`` file behind; listings ignore it and it can be
removed by age. No operation follows a symbolic link under the root, for reads, writes, moves and listings
alike (:mod:`shared.dropzone.nofollow`): a link where a folder or an object should be is refused.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import io
import os
import stat
import threading
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, NoReturn, TypeVar

from shared.dropzone import nofollow
from shared.dropzone.base import (
    AREAS,
    CHUNK_SIZE,
    TEMP_PREFIX,
    DropZone,
    DropZoneRejected,
    DropZoneUnavailable,
    ObjectInfo,
    ObjectNotFound,
    area_of,
    check_writable,
    is_listed,
    safe_name,
    safe_prefix,
)
from shared.dropzone.nofollow import LinkRefused

T = TypeVar("T")

# DROPZONE_IO_TIMEOUT_S's default (shared/dropzone/settings.py).
DEFAULT_IO_TIMEOUT_S = 60.0


class DropZoneIOTimeout(DropZoneUnavailable):
    """A file operation did not return within DROPZONE_IO_TIMEOUT_S (a hung mount)."""


# Errors that mean "the request clashes with what is in the zone" (a folder where a file should be,
# a name too long for this file system): the same request will fail the same way, so not transient.
_REJECTED_ERRNOS = frozenset({errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG})
_MISSING_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR})


class FileDropZone(DropZone):
    """A drop zone rooted at an absolute folder, created on first use if missing."""

    def __init__(self, root: Path, *, io_timeout_s: float = DEFAULT_IO_TIMEOUT_S) -> None:
        if not root.is_absolute():
            raise ValueError(f"file drop-zone root must be absolute: {root}")
        self._root = root
        self._root_ready = False
        self._io_timeout_s = io_timeout_s

    @property
    def root(self) -> Path:
        return self._root

    @property
    def url(self) -> str:
        return self._root.as_uri()

    # ------------------------------------------------------------------ helpers

    def _unavailable(self, exc: OSError, op: str, name: str | None) -> DropZoneUnavailable:
        return DropZoneUnavailable(
            "file drop zone unavailable", url=self.url, name=name, operation=op, error=_describe(exc)
        )

    def _raise_for(self, exc: OSError, op: str, name: str, *, missing_means_absent: bool) -> NoReturn:
        if isinstance(exc, LinkRefused):
            raise DropZoneRejected(
                "a symbolic link is on the drop-zone path: not followed", url=self.url, name=name, operation=op
            ) from exc
        if missing_means_absent and exc.errno in _MISSING_ERRNOS:
            raise ObjectNotFound("drop-zone object not found", url=self.url, name=name) from exc
        if not missing_means_absent and exc.errno in _REJECTED_ERRNOS:
            raise DropZoneRejected(
                "file drop zone cannot store this name", url=self.url, name=name, error=_describe(exc)
            ) from exc
        raise self._unavailable(exc, op, name) from exc

    async def _run(self, func: Callable[[], T]) -> T:
        await self._ensure_root()
        return await self._thread(func, "io")

    async def _thread(self, func: Callable[[], T], op: str, name: str | None = None) -> T:
        """``func`` in a worker thread, waited for at most DROPZONE_IO_TIMEOUT_S."""
        call = asyncio.ensure_future(asyncio.to_thread(func))
        try:
            # Shielded: the thread runs on regardless, and what it opens once it returns must be closed.
            return await asyncio.wait_for(asyncio.shield(call), self._io_timeout_s)
        except TimeoutError as exc:
            call.add_done_callback(_close_abandoned)
            raise DropZoneIOTimeout(
                "file drop zone did not answer within DROPZONE_IO_TIMEOUT_S",
                url=self.url,
                name=name,
                operation=op,
                timeout_s=self._io_timeout_s,
            ) from exc

    async def _ensure_root(self) -> None:
        # Done lazily, not in __init__, so that a broken root surfaces as a transient error on use
        # (like an S3 endpoint that is down) rather than as a crash while wiring things up.
        if self._root_ready:
            return
        try:
            await self._thread(lambda: self._root.mkdir(parents=True, exist_ok=True), "create root")
        except OSError as exc:
            raise self._unavailable(exc, "create root", None) from exc
        self._root_ready = True

    def _path(self, name: str) -> Path:
        return self._root / name

    # ------------------------------------------------------------------ API

    async def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        safe_prefix(prefix)
        try:
            return await self._run(lambda: self._list_sync(prefix))
        except OSError as exc:
            raise self._unavailable(exc, "list", prefix) from exc

    def _list_sync(self, prefix: str) -> builtins.list[ObjectInfo]:
        # Walk only the folder the prefix points into: a poller should not crawl the archive areas.
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        skip_areas = area_of(prefix) is None
        found: builtins.list[ObjectInfo] = []
        try:
            with nofollow.folder(self._root, folder.split("/") if folder else [], name=folder) as start:
                # fwalk does not follow links to folders (nor the top, opened here without following).
                for dirpath, dirnames, filenames, dir_fd in os.fwalk(".", dir_fd=start, follow_symlinks=False):
                    if skip_areas and dirpath == "." and not folder:
                        dirnames[:] = [d for d in dirnames if d not in AREAS]
                    rel = (Path(folder) / dirpath).as_posix() if folder else Path(dirpath).as_posix()
                    found.extend(self._listed(rel, filenames, dir_fd, prefix))
        except (FileNotFoundError, NotADirectoryError, LinkRefused):
            return []  # no such folder, or a link in its place: nothing is offered from it
        found.sort(key=lambda info: info.name)
        return found

    @staticmethod
    def _listed(rel_dir: str, filenames: builtins.list[str], dir_fd: int, prefix: str) -> builtins.list[ObjectInfo]:
        found = []
        for filename in filenames:
            name = filename if rel_dir == "." else f"{rel_dir}/{filename}"
            if not is_listed(name, prefix):
                continue
            try:
                # lstat: a symbolic link is not offered, or reading it would read outside the zone.
                st = os.stat(filename, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # moved or deleted while we walked: it is simply not there any more
            if stat.S_ISREG(st.st_mode):
                found.append(ObjectInfo(name, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)))
        return found

    async def read(self, name: str) -> AsyncGenerator[bytes, None]:
        safe_name(name)
        try:
            handle = await self._run(lambda: os.fdopen(nofollow.open_read(self._root, name), "rb"))
        except OSError as exc:
            self._raise_for(exc, "read", name, missing_means_absent=True)
        hung = False
        try:
            while True:
                try:
                    chunk = await self._thread(lambda: handle.read(CHUNK_SIZE), "read", name)
                except OSError as exc:
                    raise self._unavailable(exc, "read", name) from exc
                if not chunk:
                    return
                yield chunk
        except DropZoneIOTimeout:
            hung = True
            _discard_later(handle)  # close() would wait for the hung read, here in the event loop
            raise
        finally:
            if not hung:
                handle.close()

    async def write(self, name: str, data: bytes | AsyncIterable[bytes]) -> ObjectInfo:
        check_writable(name)
        folders, base = nofollow.split(name)
        temp = f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        try:
            # The folder stays open while the data comes: the temp file and the rename are relative to it,
            # so a folder swapped for a link meanwhile changes nothing.
            parent, handle = await self._run(lambda: _create_exclusive(self._root, folders, temp, name))
        except OSError as exc:
            self._raise_for(exc, "write", name, missing_means_absent=False)
        try:
            if isinstance(data, bytes | bytearray | memoryview):
                await self._write_chunk(handle, data, name)
            else:
                # Coalesce small chunks so a line-per-chunk producer does not cost a thread hop per line.
                pending = bytearray()
                async for chunk in data:
                    pending += chunk
                    if len(pending) >= CHUNK_SIZE:
                        await self._write_chunk(handle, bytes(pending), name)
                        pending.clear()
                if pending:
                    await self._write_chunk(handle, bytes(pending), name)
            try:
                st = await self._thread(lambda: _commit(handle, parent, temp, base), "write", name)
            except OSError as exc:
                self._raise_for(exc, "write", name, missing_means_absent=False)
        except BaseException as exc:
            if isinstance(exc, DropZoneIOTimeout):
                # A call still hangs in its thread: close() would wait for it, here in the event loop.
                _discard_later(handle, temp, parent)
                parent = -1
                raise
            # Also on cancellation: done synchronously so it cannot itself be cancelled. close() waits
            # for a write still running in a worker thread (buffered files hold a lock), so the unlink
            # never races with it.
            with contextlib.suppress(OSError):
                handle.close()  # may fail flushing (disk full): the temp file must go regardless
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=parent)
            raise
        finally:
            if parent >= 0:
                os.close(parent)
        return ObjectInfo(name, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    async def _write_chunk(self, handle: BinaryIO, chunk: bytes | bytearray | memoryview, name: str) -> None:
        try:
            await self._thread(lambda: handle.write(chunk), "write", name)
        except OSError as exc:
            raise self._unavailable(exc, "write", name) from exc

    async def _move_object(self, name: str, target: str) -> None:
        (src_folders, src), (dst_folders, dst) = nofollow.split(name), nofollow.split(target)

        def move() -> None:
            with nofollow.folder(self._root, src_folders, name=name) as src_dir:
                _require_file(src_dir, src, name)
                with nofollow.folder(self._root, dst_folders, create=True, name=target) as dst_dir:
                    os.replace(src, dst, src_dir_fd=src_dir, dst_dir_fd=dst_dir)
                    nofollow.fsync_dir(dst_dir)

        try:
            await self._run(move)
        except _Missing as exc:
            raise ObjectNotFound("drop-zone object not found", url=self.url, name=name) from exc
        except OSError as exc:
            self._raise_for(exc, "move", name, missing_means_absent=False)

    async def delete(self, name: str, *, missing_ok: bool = False) -> None:
        safe_name(name)
        folders, base = nofollow.split(name)

        def delete() -> None:
            try:
                with nofollow.folder(self._root, folders, name=name) as parent:
                    _require_file(parent, base, name)
                    os.unlink(base, dir_fd=parent)
            except (FileNotFoundError, NotADirectoryError) as exc:
                raise _Missing from exc

        try:
            await self._run(delete)
        except _Missing as exc:
            if missing_ok:
                return
            raise ObjectNotFound("drop-zone object not found", url=self.url, name=name) from exc
        except OSError as exc:
            self._raise_for(exc, "delete", name, missing_means_absent=True)

    async def exists(self, name: str) -> bool:
        safe_name(name)
        folders, base = nofollow.split(name)

        def regular() -> bool:
            with nofollow.folder(self._root, folders, name=name) as parent:
                return stat.S_ISREG(nofollow.lstat_in(parent, base).st_mode)

        try:
            return await self._run(regular)
        except LinkRefused:
            return False  # not an object of the zone: a link is never one
        except OSError as exc:
            if exc.errno in _MISSING_ERRNOS:
                return False
            raise self._unavailable(exc, "exists", name) from exc

    async def close(self) -> None:
        """Nothing to release: every operation opens and closes its own files."""


def _close_abandoned(call: asyncio.Future[Any]) -> None:
    """A call given up on returned at last: a file it opened is closed (nobody else will)."""
    if call.cancelled() or call.exception() is not None:
        return
    result = call.result()
    if isinstance(result, io.IOBase):
        result.close()


def _discard_later(handle: BinaryIO, temp: str | None = None, parent: int = -1) -> None:
    """Close ``handle`` once the hung call on it returns (and remove ``temp`` from the folder open as
    ``parent``, then close that), in a daemon thread."""

    def discard() -> None:
        with contextlib.suppress(OSError):
            handle.close()
        if parent >= 0:
            with contextlib.suppress(OSError):
                os.unlink(temp or "", dir_fd=parent)
            os.close(parent)

    threading.Thread(target=discard, name="dropzone-discard", daemon=True).start()


class _Missing(Exception):
    """Raised in a worker thread when the object is absent or not a regular file."""


def _require_file(parent: int, base: str, name: str) -> None:
    try:
        nofollow.require_regular(parent, base, name)
    except LinkRefused:
        raise
    except OSError as exc:
        if exc.errno in _MISSING_ERRNOS:
            raise _Missing from exc
        raise


def _describe(exc: OSError) -> str:
    return f"{type(exc).__name__}: {exc.strerror or exc}"


def _create_exclusive(root: Path, folders: builtins.list[str], temp: str, name: str) -> tuple[int, BinaryIO]:
    """The (open) folder of ``name``, made if missing, and a new temporary file in it."""
    with nofollow.folder(root, folders, create=True, name=name) as parent:
        kept = os.dup(parent)  # the walk closes its own descriptor
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        return kept, os.fdopen(os.open(temp, flags, 0o644, dir_fd=kept), "wb")
    except BaseException:
        os.close(kept)
        raise


def _commit(handle: BinaryIO, parent: int, temp: str, base: str) -> os.stat_result:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    # A link at the final name is replaced, not followed: rename works on the entry itself.
    os.replace(temp, base, src_dir_fd=parent, dst_dir_fd=parent)
    nofollow.fsync_dir(parent)
    return nofollow.lstat_in(parent, base)
