"""Which files of the import zone are the platform's deliveries yet, and which are still being written.

Writers rarely make a file appear whole. SFTP clients, ``aws s3 cp`` wrappers and most tools upload to a
hidden or partial name (``.x``, ``x.tmp``, ``x.part``, WinSCP's ``x.filepart``, ``x.partial``, editors'
``x~``) and rename it when it is complete; the rename fails if the file was moved away meanwhile, and the
delivery is lost. So:

* such names are left alone: never grouped, never rejected, never moved (:func:`left_alone`);
* a name that breaks the platform's grammar is rejected only once it has stopped changing (same size and
  modification time) for a quiet period (:class:`QuietPeriod`): a writer that names a file in place may
  still be appending to it, and rejecting a growing file would cut the upload.

The quiet period is measured on this process's monotonic clock between scans, not from the file's
modification time: the zone's clock (NFS, S3) need not agree with ours. A restart only starts the wait over.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from shared.dropzone import ObjectInfo

# Suffixes of partial uploads (compared case-insensitively: Windows clients write ``.TMP`` too).
PARTIAL_SUFFIXES: Final = (".tmp", ".part", ".filepart", ".partial", "~")


def left_alone(name: str) -> bool:
    """Whether a listed name is someone's file in the making (or a hidden one): never to be touched.

    Hidden means any path segment starting with ``.`` (a dot-file, or a file in a hidden folder), which
    covers the bridge's own temporary prefix (``.dropzone-tmp-``) as well.
    """
    if any(segment.startswith(".") for segment in name.split("/")):
        return True
    return name.lower().endswith(PARTIAL_SUFFIXES)


def split_arrivals(listing: Iterable[ObjectInfo]) -> tuple[list[ObjectInfo], list[ObjectInfo]]:
    """The listing as (files to consider, files left alone), each in listing order."""
    considered: list[ObjectInfo] = []
    alone: list[ObjectInfo] = []
    for obj in listing:
        (alone if left_alone(obj.name) else considered).append(obj)
    return considered, alone


@dataclass(slots=True)
class _Seen:
    size: int
    mtime: float
    since: float  # when this process first saw the file as it is now


class QuietPeriod:
    """Remembers how long each offered file has stayed unchanged; says which have settled.

    Only the names offered at the last call are remembered, so the memory is bounded by the zone's listing.
    """

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if seconds < 0:
            raise ValueError("a quiet period cannot be negative")
        self._seconds = seconds
        self._clock = clock
        self._seen: dict[str, _Seen] = {}

    def settled(self, objects: Iterable[ObjectInfo]) -> set[str]:
        """The names among ``objects`` that have not changed for the quiet period (observing them all)."""
        now = self._clock()
        seen: dict[str, _Seen] = {}
        quiet: set[str] = set()
        for obj in objects:
            mtime = obj.mtime.timestamp()
            before = self._seen.get(obj.name)
            if before is None or before.size != obj.size or before.mtime != mtime:
                before = _Seen(obj.size, mtime, now)  # new, or it changed: the wait starts over
            seen[obj.name] = before
            if now - before.since >= self._seconds:
                quiet.add(obj.name)
        self._seen = seen
        return quiet
