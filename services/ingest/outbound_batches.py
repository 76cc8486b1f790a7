"""A delivered batch of outbound files: grouped by name, complete once its parts are in, checked whole.

A batch is its ``.info`` control file plus the parts it lists (the ``.info`` may come first). It is ready
when every listed part is present, and trusted only once every part matches the ``.info`` (size, line
count, md5): a batch that lies or is damaged is rejected whole, never half-imported.

Names are read by the deployment's :class:`~shared.formats.outbound.OutboundNames` (``IMPORT_NAME_TEMPLATES``:
each destination's name template, the documented default for the others; :func:`names_from_settings`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from shared.dropzone import DropZone, ObjectInfo, UnsafeName, safe_name
from shared.errors import PermanentError
from shared.formats import BadFileName
from shared.formats.lines import GzipDecoder
from shared.formats.outbound.info import InfoFile, parse_info
from shared.formats.outbound.name_grammar import DEFAULT_NAMES, OutboundNames
from shared.formats.outbound.names import OutboundFileName, is_info_name

Parts = list[tuple[ObjectInfo, OutboundFileName]]


class BatchRejected(PermanentError):
    """The batch cannot be imported as delivered (it lies, is damaged, or is incomplete for too long)."""


@dataclass
class OutboundBatch:
    root: str
    info: ObjectInfo | None = None
    parts: dict[str, ObjectInfo] = field(default_factory=dict)

    def files(self) -> list[str]:
        return ([self.info.name] if self.info else []) + sorted(self.parts)

    def oldest(self) -> float:
        times = [o.mtime.timestamp() for o in ([self.info] if self.info else []) + list(self.parts.values())]
        return min(times) if times else time.time()


def names_from_settings(templates: dict[str, str]) -> OutboundNames:
    """The names ingest reads, from ``IMPORT_NAME_TEMPLATES`` (validated by the settings model already)."""
    return OutboundNames(templates)


def group_names(
    objects: list[ObjectInfo], names: OutboundNames = DEFAULT_NAMES
) -> tuple[dict[str, OutboundBatch], list[tuple[ObjectInfo, str]]]:
    """Group a listing into batches by root; names that break the grammar come back with the reason."""
    batches: dict[str, OutboundBatch] = {}
    bad: list[tuple[ObjectInfo, str]] = []
    for obj in objects:
        base = obj.name.rsplit("/", 1)[-1]
        try:
            root = names.batch_root_of(base)
        except BadFileName as exc:
            bad.append((obj, str(exc)))
            continue
        prefix = obj.name[: len(obj.name) - len(base)]
        batch = batches.setdefault(prefix + root, OutboundBatch(root=prefix + root))
        if is_info_name(base):
            batch.info = obj
        else:
            batch.parts[base] = obj
    return batches, bad


async def ready_parts(
    zone: DropZone, batch: OutboundBatch, *, parts_timeout_s: float, names: OutboundNames = DEFAULT_NAMES
) -> tuple[InfoFile, Parts] | None:
    """The batch's ``.info`` and its parts in order, or None while some are still to come. Raises
    :class:`BatchRejected` when the batch cannot become whole (lies, strays, or waited too long)."""
    overdue = time.time() - batch.oldest() > parts_timeout_s
    if batch.info is None:
        if overdue:
            raise BatchRejected("no .info control file arrived for these parts", batch=batch.root)
        return None
    info = parse_info(await zone.read_bytes(batch.info.name), file_name=batch.info.name)
    problems = info.inconsistencies()
    if problems:
        raise BatchRejected("the .info file does not add up: " + "; ".join(problems), batch=batch.root)
    parts: Parts = []
    missing = []
    for entry in sorted(info.files, key=lambda e: e.sequence_number):
        # Checked before looking for the part: a name that cannot be one of this batch's parts (a path
        # out of the zone, another batch's part, no part name at all) will never arrive.
        try:
            safe_name(entry.file_name)
        except UnsafeName:
            raise BatchRejected(
                "the .info names a file outside the drop zone", file_name=entry.file_name[:200]
            ) from None
        name = entry.file_name.rsplit("/", 1)[-1]
        parsed = names.parse(name)
        if parsed.batch_root != batch.root.rsplit("/", 1)[-1]:
            raise BatchRejected("the .info lists a part of another batch", part=name)
        obj = batch.parts.get(name)
        if obj is None:
            missing.append(name)
            continue
        parts.append((obj, parsed))
    if missing:
        if overdue:
            raise BatchRejected("parts listed in the .info never arrived", missing=missing[:10])
        return None
    extra = sorted(set(batch.parts) - {p.name.rsplit("/", 1)[-1] for p, _ in parts})
    if extra:
        raise BatchRejected("parts not listed in the .info", extra=extra[:10])
    return info, parts


async def verify_parts(zone: DropZone, info: InfoFile, parts: Parts) -> None:
    """Every part as the ``.info`` describes it (size, md5 of the stored bytes, lines of the content)."""
    for obj, parsed in parts:
        entry = info.entry(parsed.name) or next(e for e in info.files if e.file_name.endswith(parsed.name))
        if obj.size != entry.byte_size:
            raise BatchRejected(
                "part size differs from the .info", part=parsed.name, size=obj.size, expected=entry.byte_size
            )
        md5 = hashlib.md5(usedforsecurity=False)
        lines = 0
        last = b"\n"
        async for piece in _decoded(_Tee(zone.read(obj.name), md5), gzip=parsed.gzip):
            lines += piece.count(b"\n")
            if piece:
                last = piece[-1:]
        if last != b"\n":
            lines += 1
        if md5.hexdigest() != entry.md5.lower():
            raise BatchRejected("part md5 differs from the .info", part=parsed.name)
        if lines != entry.line_count:
            raise BatchRejected(
                "part line count differs from the .info", part=parsed.name, lines=lines, expected=entry.line_count
            )


class _Tee:
    """Passes a stream's chunks through while feeding them to a hash."""

    def __init__(self, source: AsyncIterator[bytes], digest: Any) -> None:
        self._source = source
        self._digest = digest

    def __aiter__(self) -> _Tee:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._source.__anext__()
        self._digest.update(chunk)
        return chunk


async def _decoded(chunks: _Tee, *, gzip: bool) -> AsyncIterator[bytes]:
    """Stored chunks in, content chunks out."""
    if not gzip:
        async for chunk in chunks:
            yield chunk
        return
    decoder = GzipDecoder()
    async for chunk in chunks:
        for piece in decoder.feed(chunk):
            yield piece
    for piece in decoder.close():
        yield piece
