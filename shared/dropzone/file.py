"""A drop zone in a local (or mounted) folder: ``file:///abs/path``.

Every blocking call runs in a worker thread so the event loop keeps serving other work while a large
file is copied. Atomicity comes from POSIX: data goes to a temporary name in the destination folder,
is fsynced, then ``os.replace``d over the final name, which readers see all at once or not at all.
A crash mid-write can leave a ``.dropzone-tmp-*`` file behind; listings ignore it and it can be
removed by age.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import os
import stat
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, NoReturn, TypeVar

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

T = TypeVar("T")

# Errors that mean "the request clashes with what is in the zone" (a folder where a file should be,
# a name too long for this file system): the same request will fail the same way, so not transient.
_REJECTED_ERRNOS = frozenset({errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG})
_MISSING_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR})


class FileDropZone(DropZone):
    """A drop zone rooted at an absolute folder, created on first use if missing."""

    def __init__(self, root: Path) -> None:
        if not root.is_absolute():
            raise ValueError(f"file drop-zone root must be absolute: {root}")
        self._root = root
        self._root_ready = False

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
        if missing_means_absent and exc.errno in _MISSING_ERRNOS:
            raise ObjectNotFound("drop-zone object not found", url=self.url, name=name) from exc
        if not missing_means_absent and exc.errno in _REJECTED_ERRNOS:
            raise DropZoneRejected(
                "file drop zone cannot store this name", url=self.url, name=name, error=_describe(exc)
            ) from exc
        raise self._unavailable(exc, op, name) from exc

    async def _run(self, func: Callable[[], T]) -> T:
        await self._ensure_root()
        return await asyncio.to_thread(func)

    async def _ensure_root(self) -> None:
        # Done lazily, not in __init__, so that a broken root surfaces as a transient error on use
        # (like an S3 endpoint that is down) rather than as a crash while wiring things up.
        if self._root_ready:
            return
        try:
            await asyncio.to_thread(self._root.mkdir, parents=True, exist_ok=True)
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
        start = self._root / folder if folder else self._root
        skip_areas = area_of(prefix) is None

        def onerror(exc: OSError) -> None:
            if exc.errno in _MISSING_ERRNOS and Path(exc.filename or "") == start:
                return
            raise exc

        found: builtins.list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(start, onerror=onerror):
            here = Path(dirpath)
            if skip_areas and here == self._root:
                dirnames[:] = [d for d in dirnames if d not in AREAS]
            rel_dir = here.relative_to(self._root).as_posix()
            for filename in filenames:
                name = filename if rel_dir == "." else f"{rel_dir}/{filename}"
                if not is_listed(name, prefix):
                    continue
                try:
                    # lstat: a symbolic link is not offered, or reading it would read outside the zone.
                    st = os.lstat(here / filename)
                except FileNotFoundError:
                    continue  # moved or deleted while we walked: it is simply not there any more
                if stat.S_ISREG(st.st_mode):
                    found.append(ObjectInfo(name, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)))
        found.sort(key=lambda info: info.name)
        return found

    async def read(self, name: str) -> AsyncGenerator[bytes, None]:
        safe_name(name)
        path = self._path(name)
        try:
            handle = await self._run(lambda: path.open("rb"))
        except OSError as exc:
            self._raise_for(exc, "read", name, missing_means_absent=True)
        try:
            while True:
                try:
                    chunk = await asyncio.to_thread(handle.read, CHUNK_SIZE)
                except OSError as exc:
                    raise self._unavailable(exc, "read", name) from exc
                if not chunk:
                    return
                yield chunk
        finally:
            handle.close()

    async def write(self, name: str, data: bytes | AsyncIterable[bytes]) -> ObjectInfo:
        check_writable(name)
        path = self._path(name)
        temp = path.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex}")
        try:
            handle = await self._run(lambda: _create_exclusive(temp))
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
                st = await asyncio.to_thread(_commit, handle, temp, path)
            except OSError as exc:
                self._raise_for(exc, "write", name, missing_means_absent=False)
        except BaseException:
            # Also on cancellation: done synchronously so it cannot itself be cancelled. close() waits
            # for a write still running in a worker thread (buffered files hold a lock), so the unlink
            # never races with it.
            with contextlib.suppress(OSError):
                handle.close()  # may fail flushing (disk full): the temp file must go regardless
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise
        return ObjectInfo(name, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    async def _write_chunk(self, handle: BinaryIO, chunk: bytes | bytearray | memoryview, name: str) -> None:
        try:
            await asyncio.to_thread(handle.write, chunk)
        except OSError as exc:
            raise self._unavailable(exc, "write", name) from exc

    async def _move_object(self, name: str, target: str) -> None:
        src, dst = self._path(name), self._path(target)

        def move() -> None:
            _require_file(src)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
            _fsync_dir(dst.parent)

        try:
            await self._run(move)
        except _Missing as exc:
            raise ObjectNotFound("drop-zone object not found", url=self.url, name=name) from exc
        except OSError as exc:
            self._raise_for(exc, "move", name, missing_means_absent=False)

    async def delete(self, name: str, *, missing_ok: bool = False) -> None:
        safe_name(name)
        path = self._path(name)

        def delete() -> None:
            _require_file(path)
            path.unlink()

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
        path = self._path(name)
        try:
            st = await self._run(lambda: os.stat(path))
        except OSError as exc:
            if exc.errno in _MISSING_ERRNOS:
                return False
            raise self._unavailable(exc, "exists", name) from exc
        return stat.S_ISREG(st.st_mode)

    async def close(self) -> None:
        """Nothing to release: every operation opens and closes its own files."""


class _Missing(Exception):
    """Raised in a worker thread when the object is absent or not a regular file."""


def _require_file(path: Path) -> None:
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno in _MISSING_ERRNOS:
            raise _Missing from exc
        raise
    if not stat.S_ISREG(st.st_mode):
        raise _Missing


def _describe(exc: OSError) -> str:
    return f"{type(exc).__name__}: {exc.strerror or exc}"


def _create_exclusive(temp: Path) -> BinaryIO:
    temp.parent.mkdir(parents=True, exist_ok=True)
    return temp.open("xb")


def _commit(handle: BinaryIO, temp: Path, path: Path) -> os.stat_result:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    os.replace(temp, path)
    _fsync_dir(path.parent)
    return os.stat(path)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable: without it a power cut can bring back the old directory entry.
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems (certain network mounts) do not support fsync on a directory.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)
