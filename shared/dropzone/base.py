"""The drop-zone contract: a flat namespace of immutable files, shared by every implementation.

A drop zone is where the bridge and the platform hand files to each other. Readers poll it, so two
guarantees matter more than anything else:

* a file is visible only once it is complete (``write`` is atomic), and
* a file that has been handled leaves the inbox (``move`` to ``processed/`` or ``rejected/``), while
  staying inspectable there.

Names are relative, ``/``-separated and validated by :func:`safe_name` before any I/O, so a name that
comes from a remote party (an ``.info`` control file, a listing) can never address anything outside the
zone's root.
"""

from __future__ import annotations

import abc
import builtins
import unicodedata
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Final, Literal, Self

from shared.errors import PermanentError, TransientError

Area = Literal["processed", "rejected"]
AREAS: Final[tuple[Area, ...]] = ("processed", "rejected")

# A file zone writes to such a name first and renames it when complete. Listings hide it, and callers
# cannot write it, so an in-progress file can never be mistaken for a finished one.
TEMP_PREFIX: Final = ".dropzone-tmp-"

REASON_SUFFIX: Final = ".reason.txt"
MAX_NAME_BYTES: Final = 1024
# Streaming granularity: large enough to keep per-chunk overhead (thread hops, syscalls) negligible,
# small enough that many concurrent readers stay cheap.
CHUNK_SIZE: Final = 1024 * 1024

_NO_REASON: Final = "no reason given"


class UnsafeName(PermanentError):
    """The name could escape the zone's root or is not a plain relative path."""


class ObjectNotFound(PermanentError):
    """No object of that name exists in the zone."""


class DropZoneUnavailable(TransientError):
    """The zone cannot be reached or used right now (I/O error, permission, endpoint down)."""


class DropZoneRejected(PermanentError):
    """The zone refuses this request as made (e.g. a name clashes with a folder); retrying cannot help."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object in a zone. ``name`` is relative to the zone's root; ``mtime`` is timezone-aware UTC."""

    name: str
    size: int
    mtime: datetime


def _short(name: str) -> str:
    # Names land in error context and logs; a hostile megabyte-long name must not flood them.
    return name if len(name) <= 200 else name[:200] + "…"


def safe_name(name: str) -> str:
    """Return ``name`` unchanged if it is a safe relative object name, else raise :class:`UnsafeName`.

    Safe means: non-empty, valid UTF-8 of at most 1024 bytes, ``/``-separated segments that are neither
    empty nor ``.``/``..``, not absolute, and no backslash or control character. Such a name joined to
    any root stays inside that root on every backend and means the same object on all of them.
    """
    if not isinstance(name, str):
        raise UnsafeName("drop-zone name must be a string", name=repr(name)[:200])

    def unsafe(reason: str) -> UnsafeName:
        return UnsafeName(f"unsafe drop-zone name: {reason}", name=_short(name))

    if not name:
        raise unsafe("empty")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise unsafe("not encodable as UTF-8") from None
    if len(encoded) > MAX_NAME_BYTES:
        raise unsafe(f"longer than {MAX_NAME_BYTES} bytes")
    if "\\" in name:
        # A backslash is a separator on Windows tools and in some S3 clients: forbid the ambiguity.
        raise unsafe("contains a backslash")
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise unsafe("contains a control character")
    if name.startswith("/"):
        raise unsafe("absolute")
    for segment in name.split("/"):
        if segment == "":
            raise unsafe("empty path segment")
        if segment in (".", ".."):
            raise unsafe(f"'{segment}' path segment")
    return name


def safe_prefix(prefix: str) -> str:
    """Validate a listing prefix: empty, or a safe name optionally followed by ``/``."""
    if prefix == "":
        return prefix
    safe_name(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def redact_url(url: str) -> str:
    """``url`` fit for logs: user info and query values (presigned signatures) replaced by ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = "***@" + netloc.rsplit("@", 1)[1]
        query = parts.query
        if query:
            pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
            query = "&".join(f"{urllib.parse.quote(k)}=***" for k, _ in pairs) or "***"
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        # Logging must never fail because of the very value it is trying to describe.
        return "<unparseable url>"


def is_temporary(name: str) -> bool:
    return name.rsplit("/", 1)[-1].startswith(TEMP_PREFIX)


def area_of(name: str) -> Area | None:
    head = name.split("/", 1)[0]
    for area in AREAS:
        if head == area and "/" in name:
            return area
    return None


def is_listed(name: str, prefix: str) -> bool:
    """Whether a stored name shows up in ``list(prefix)``.

    Areas are shown only when the prefix points into them (``processed/…``), so a poller listing the
    inbox does not see what it has already handled. Names that are not safe cannot be addressed through
    this API, so they are not offered either.
    """
    if not name.startswith(prefix) or is_temporary(name):
        return False
    if area_of(name) is not None and area_of(prefix) is None:
        return False
    try:
        safe_name(name)
    except UnsafeName:
        return False
    return True


def check_writable(name: str) -> str:
    safe_name(name)
    if is_temporary(name):
        raise UnsafeName("name is reserved for in-progress writes", name=_short(name), prefix=TEMP_PREFIX)
    return name


class DropZone(abc.ABC):
    """A place to exchange complete files. Use as ``async with`` or call :meth:`close`.

    All names are relative to the zone's root and checked with :func:`safe_name`.
    Errors: :class:`UnsafeName`, :class:`ObjectNotFound`, :class:`DropZoneRejected` (permanent) and
    :class:`DropZoneUnavailable` (transient, retry later).
    """

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The zone's URL, free of credentials: safe to log."""

    @abc.abstractmethod
    async def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        """Complete objects whose name starts with ``prefix``, sorted by name.

        In-progress temporary names are never listed; ``processed/`` and ``rejected/`` only when
        ``prefix`` starts with ``processed/`` or ``rejected/``.
        """

    @abc.abstractmethod
    def read(self, name: str) -> AsyncGenerator[bytes, None]:
        """Stream the object in chunks of at most ~1 MiB; memory use does not grow with its size.

        This is an async generator: errors (including :class:`ObjectNotFound`) surface on the first
        iteration. Wrap it in ``contextlib.aclosing`` when you may stop early, so the underlying file or
        connection is released at once.
        """

    async def read_bytes(self, name: str) -> bytes:
        """The whole object in memory: for small files only (control files, reasons)."""
        chunks: builtins.list[bytes] = []
        async for chunk in self.read(name):
            chunks.append(chunk)
        return b"".join(chunks)

    @abc.abstractmethod
    async def write(self, name: str, data: bytes | AsyncIterable[bytes]) -> ObjectInfo:
        """Store ``data`` under ``name``, replacing any existing object, atomically.

        The object becomes visible only once complete; if ``data`` raises or the task is cancelled,
        nothing is left behind and the iterable's own exception propagates unchanged.
        """

    async def move(self, name: str, area: Area, reason: str | None = None) -> str:
        """Move ``name`` to ``<area>/<name>`` and return the new name.

        For ``rejected`` (or whenever a reason is given) ``<area>/<name>.reason.txt`` is written first,
        so whoever sees the rejected file can also read why.
        """
        safe_name(name)
        if area not in AREAS:
            raise DropZoneRejected("unknown drop-zone area", name=_short(name), area=area)
        target = check_writable(f"{area}/{name}")
        if area == "rejected" or reason is not None:
            reason_name = check_writable(target + REASON_SUFFIX)
            # Checked first so that a missing object does not leave an orphan reason behind.
            if not await self.exists(name):
                raise ObjectNotFound("drop-zone object not found", url=self.url, name=_short(name))
            text = reason if reason is not None else _NO_REASON
            await self.write(reason_name, text.encode("utf-8"))
        await self._move_object(name, target)
        return target

    @abc.abstractmethod
    async def _move_object(self, name: str, target: str) -> None:
        """Rename one validated object; raise :class:`ObjectNotFound` if it is missing."""

    @abc.abstractmethod
    async def delete(self, name: str, *, missing_ok: bool = False) -> None:
        """Remove the object. Missing: :class:`ObjectNotFound` unless ``missing_ok``."""

    @abc.abstractmethod
    async def exists(self, name: str) -> bool:
        """Whether a complete object of that name exists."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections. Idempotent."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
