"""A delivered batch of outbound files: grouped by name, complete once its parts are in, checked whole.

A batch is its ``.info`` control file plus the parts it lists (the ``.info`` may come first). It is ready
when every listed part is present, and trusted only once every part matches the ``.info`` (size, line
count, md5): a batch that lies or is damaged is rejected whole, never half-imported.

Names are read by the deployment's :class:`~shared.formats.outbound.OutboundNames` (``IMPORT_NAME_TEMPLATES``:
each destination's name template, the documented default for the others; :func:`names_from_settings`).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from services.ingest.part_spool import BatchSpools
from shared.dropzone import DropZone, ObjectInfo, UnsafeName, safe_name
from shared.errors import PermanentError
from shared.formats import BadFileName
from shared.formats.lines import GzipDecoder
from shared.formats.outbound.info import InfoFile, parse_info
from shared.formats.outbound.name_grammar import DEFAULT_NAMES, OutboundNames
from shared.formats.outbound.names import OutboundFileName, is_info_name

Parts = list[tuple[ObjectInfo, OutboundFileName]]

# A .info lists a batch's parts (a few hundred bytes each): 4 MiB is thousands of parts. A larger one is
# refused before it is read, and a read stops there whatever the listing said.
MAX_INFO_BYTES = 4 * 1024 * 1024


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
    info = parse_info(await read_info(zone, batch.info), file_name=batch.info.name)
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


async def read_info(zone: DropZone, info: ObjectInfo) -> bytes:
    """The ``.info``'s bytes, refused beyond :data:`MAX_INFO_BYTES` (listed or read)."""
    if info.size > MAX_INFO_BYTES:
        raise BatchRejected(f"the .info is larger than {MAX_INFO_BYTES} bytes", info=info.name, size=info.size)
    data = bytearray()
    async for chunk in zone.read(info.name):
        data += chunk
        if len(data) > MAX_INFO_BYTES:
            raise BatchRejected(f"the .info is larger than {MAX_INFO_BYTES} bytes", info=info.name)
    return bytes(data)


async def verify_parts(
    zone: DropZone,
    info: InfoFile,
    parts: Parts,
    *,
    max_part_bytes: int | None = None,
    spools: BatchSpools | None = None,
) -> None:
    """Every part as the ``.info`` describes it (size, md5 of the stored bytes, lines of the content). A gzip
    part inflating to more than ``max_part_bytes`` is rejected (``DecompressedTooLarge``, a format error).
    With ``spools``, each gzip part's content is kept there as it is inflated: the parse reads it from
    there instead of inflating the part again."""
    for obj, parsed in parts:
        entry = info.entry(parsed.name) or next(e for e in info.files if e.file_name.endswith(parsed.name))
        if obj.size != entry.byte_size:
            raise BatchRejected(
                "part size differs from the .info", part=parsed.name, size=obj.size, expected=entry.byte_size
            )
        md5 = hashlib.md5(usedforsecurity=False)
        sink = spools.new(parsed.name) if parsed.gzip and spools is not None else None
        counter = _LineCounter(GzipDecoder(max_total_bytes=max_part_bytes) if parsed.gzip else None, sink)
        async for chunk in _Tee(zone.read(obj.name), md5):
            # Inflating and counting are CPU work: off the event loop, a stored chunk at a time.
            await asyncio.to_thread(counter.feed, chunk)
        lines = await asyncio.to_thread(counter.close)
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


class _LineCounter:
    """Lines of a part's content, fed its stored chunks (inflated on the way when gzip, and the content
    written to ``sink`` when there is one: called in a worker thread, so the writes are off the loop too)."""

    def __init__(self, decoder: GzipDecoder | None, sink: BinaryIO | None = None) -> None:
        self._decoder = decoder
        self._sink = sink
        self.lines = 0
        self._last = b"\n"

    def _count(self, piece: bytes) -> None:
        if self._sink is not None:
            self._sink.write(piece)
        self.lines += piece.count(b"\n")
        if piece:
            self._last = piece[-1:]

    def feed(self, chunk: bytes) -> None:
        for piece in self._decoder.feed(chunk) if self._decoder is not None else (chunk,):
            self._count(piece)

    def close(self) -> int:
        for piece in self._decoder.close() if self._decoder is not None else ():
            self._count(piece)
        return self.lines + (self._last != b"\n")


async def inflated(chunks: AsyncIterator[bytes], *, max_total_bytes: int | None = None) -> AsyncIterator[bytes]:
    """A gzip part's content from its stored chunks, inflated in a worker thread a piece (1 MiB) at a time:
    the event loop never inflates, and memory holds one piece."""
    decoder = GzipDecoder(max_total_bytes=max_total_bytes)
    async for chunk in chunks:
        pieces = decoder.feed(chunk)
        while (piece := await asyncio.to_thread(next, pieces, None)) is not None:
            yield piece
    for piece in await asyncio.to_thread(list, decoder.close()):  # what the last member still held
        yield piece
