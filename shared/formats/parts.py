"""Parts: how both directions' writers split a run of lines into stored files of bounded size.

* ``PartWriter`` turns a stream of lines into one or more parts below a byte limit, as a stream of
  encoded chunks (gzip or not), so a caller writes a part of any size to storage with constant memory.
* ``run_part_writer`` gives a format's writer its ``PartWriter``, numbering the parts of a named run.
* ``collect_parts`` gathers the whole parts in memory, for small runs and tests.

The gzip container (``GZIP_WBITS``) and the chunk size are defined here and read back by ``lines``.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Final, NamedTuple, Protocol, TypeAlias

from shared.formats import BadFileName, InvalidRecord

DEFAULT_CHUNK_BYTES: Final = 1 << 20
DEFAULT_GZIP_LEVEL: Final = 6
# wbits=31: gzip container (16) + 32 KiB window (15); the only compression the platform accepts.
GZIP_WBITS: Final = 31


class PartSummary(NamedTuple):
    """A finished part: what a consumer needs to store it and to check it (the ``.info`` fields)."""

    name: str
    number: int  # 1-based sequence number within the run
    byte_size: int  # bytes as stored (compressed when gzip)
    line_count: int
    md5: str  # hex digest of the stored bytes
    content_bytes: int  # bytes before compression


class Part(NamedTuple):
    summary: PartSummary
    data: bytes


# A writer's output: stored bytes of the current part, then its summary once the part is complete.
PartEvent: TypeAlias = bytes | PartSummary


class PartWriter:
    """Splits lines (each ending in ``\\n``) into parts of at most ``max_part_bytes`` of content.

    ``write`` yields the stored bytes of the current part in chunks of about ``chunk_bytes``, then a
    ``PartSummary`` when the part is complete; then the next part's chunks, and so on. A part's name is
    known only at its end: a run that fits one part gets ``name_for(None)`` (an unnumbered name), a
    split run ``name_for(1)``, ``name_for(2)``, …. Write chunks to a temporary object and give it its
    name on the summary, as the drop zones do anyway. No input line means no part at all.

    The limit applies to the uncompressed content, which is what the platform's size limits and line
    counts are about, and which bounds the compressed size too.
    """

    def __init__(
        self,
        name_for: Callable[[int | None], str],
        *,
        gzip: bool,
        max_part_bytes: int,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        gzip_level: int = DEFAULT_GZIP_LEVEL,
    ) -> None:
        if max_part_bytes < 1 or chunk_bytes < 1:
            raise ValueError("max_part_bytes and chunk_bytes must be positive")
        self._name_for = name_for
        self._gzip = gzip
        self._level = gzip_level
        self._max = max_part_bytes
        self._chunk = chunk_bytes
        self._parts: list[PartSummary] = []
        self._started = False
        self._done = False
        self._reset()

    @property
    def parts(self) -> list[PartSummary]:
        """Summaries of the parts finished so far."""
        return list(self._parts)

    @property
    def done(self) -> bool:
        return self._done

    def _reset(self) -> None:
        self._buf = bytearray()
        self._content = 0
        self._lines = 0
        self._stored = 0
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._enc = zlib.compressobj(self._level, zlib.DEFLATED, GZIP_WBITS) if self._gzip else None

    def _encode(self, final: bool) -> bytes:
        raw = bytes(self._buf)
        self._buf.clear()
        if self._enc is None:
            out = raw
        else:
            out = self._enc.compress(raw)
            if final:
                out += self._enc.flush()
        self._stored += len(out)
        self._md5.update(out)
        return out

    def _end_part(self, number: int, name: str) -> Iterator[PartEvent]:
        out = self._encode(final=True)
        if out:
            yield out
        summary = PartSummary(name, number, self._stored, self._lines, self._md5.hexdigest(), self._content)
        self._parts.append(summary)
        self._reset()
        yield summary

    def write(self, lines: Iterable[bytes]) -> Iterator[PartEvent]:
        if self._started:
            raise RuntimeError("a PartWriter writes one run only")
        self._started = True
        limit = self._max
        chunk_limit = self._chunk
        buf = self._buf
        for line in lines:
            size = len(line)
            if self._content + size > limit and self._lines:
                number = len(self._parts) + 1
                yield from self._end_part(number, self._name_for(number))
                buf = self._buf
            if size > limit:
                raise InvalidRecord("line longer than the part limit", line_bytes=size, max_part_bytes=limit)
            buf += line
            self._content += size
            self._lines += 1
            if len(buf) >= chunk_limit:
                out = self._encode(final=False)
                if out:
                    yield out
        if self._lines:
            if self._parts:
                number = len(self._parts) + 1
                yield from self._end_part(number, self._name_for(number))
            else:
                yield from self._end_part(1, self._name_for(None))
        self._done = True


class RunName(Protocol):
    """The name of a run that a ``PartWriter`` splits into parts, and of its parts."""

    @property
    def name(self) -> str: ...
    @property
    def part(self) -> int | None: ...
    @property
    def gzip(self) -> bool: ...
    def part_name(self, part: int | None) -> str: ...


def run_part_writer(run: RunName, *, max_part_bytes: int, chunk_bytes: int) -> PartWriter:
    """The ``PartWriter`` of the run named ``run``, which must have no part: the writer numbers parts."""
    if run.part is not None:
        raise BadFileName(run.name, "the writer numbers parts itself: give a name without part")
    return PartWriter(run.part_name, gzip=run.gzip, max_part_bytes=max_part_bytes, chunk_bytes=chunk_bytes)


def collect_parts(events: Iterable[PartEvent]) -> Iterator[Part]:
    """Whole parts in memory: for small runs and tests (``PartWriter.write`` streams them)."""
    chunks: list[bytes] = []
    for event in events:
        if isinstance(event, bytes):
            chunks.append(event)
        else:
            yield Part(event, b"".join(chunks))
            chunks = []
