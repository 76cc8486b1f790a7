"""Line-oriented building blocks shared by the platform's file formats.

* ``LineSplitter`` cuts a byte stream, fed in chunks of any size, into numbered lines. An over-long
  line is reported (as ``None``) and skipped, never buffered: a hostile or broken file cannot make a
  reader hold more than ``max_line_bytes`` + one chunk.
* ``GzipDecoder`` inflates a gzip stream (several members too, as ``cat a.gz b.gz`` makes) fed in
  chunks, in pieces of bounded size, so a small compressed file cannot blow up memory either.
* ``PartWriter`` turns a stream of lines into one or more parts below a byte limit, as a stream of
  encoded chunks, so a caller writes a part of any size to storage with constant memory.
* ``LineError`` is how parsers report one bad line without stopping.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Final, NamedTuple, TypeAlias

from shared.formats import CorruptGzip, InvalidRecord

DEFAULT_CHUNK_BYTES: Final = 1 << 20
DEFAULT_GZIP_LEVEL: Final = 6
# wbits=31: gzip container (16) + 32 KiB window (15); the only compression the platform accepts.
_GZIP_WBITS: Final = 31
UTF8_BOM: Final = b"\xef\xbb\xbf"

# (line number, line without its terminator), or (line number, None) when the line is over the limit.
Line: TypeAlias = tuple[int, bytes | None]


class LineError(NamedTuple):
    """One rejected line. ``reason`` is a stable short string (counted, sampled, asserted by tests);
    ``detail`` says what exactly was wrong (e.g. the offending token)."""

    file_name: str
    line_number: int
    reason: str
    detail: str = ""
    user_id: str | None = None


class LineSplitter:
    """Splits a byte stream into lines on ``\\n``, dropping a ``\\r`` just before it.

    Line numbers start at 1 and count every line, blank and over-long ones included, so that they match
    what ``wc -l`` and an editor show. A last line without a terminator is still a line; an empty stream
    has none. A line longer than ``max_line_bytes`` (terminator excluded) is yielded as ``None`` as soon
    as it is known to be too long, and the rest of it is skipped.
    """

    __slots__ = ("_buf", "_bytes", "_line", "_max", "_skipping")

    def __init__(self, max_line_bytes: int) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be positive")
        self._max = max_line_bytes
        self._buf = bytearray()
        self._line = 0
        self._bytes = 0
        self._skipping = False

    @property
    def line_count(self) -> int:
        return self._line

    @property
    def bytes_fed(self) -> int:
        return self._bytes

    @property
    def buffered(self) -> int:
        """Bytes held for an unfinished line: never more than ``max_line_bytes`` + 1."""
        return len(self._buf)

    @property
    def at_line_start(self) -> bool:
        """True when the next byte fed starts a new line (nothing held, no over-long line being skipped)."""
        return not self._buf and not self._skipping

    def count_whole_lines(self, block: bytes) -> int:
        """Account for ``block``, whole lines ending in ``\\n`` that the caller split itself (a parser's fast
        path); returns the number of its first line. Only valid ``at_line_start``."""
        if not self.at_line_start or block[-1:] != b"\n":
            raise ValueError("count_whole_lines takes whole lines, at the start of a line")
        first = self._line + 1
        self._line += block.count(b"\n")
        self._bytes += len(block)
        return first

    def feed(self, chunk: bytes) -> list[Line]:
        out: list[Line] = []
        if not chunk:
            return out
        self._bytes += len(chunk)
        limit = self._max
        # bytes.split runs in C: far cheaper per line than a find() loop in Python.
        pieces = chunk.split(b"\n")
        tail = pieces.pop()
        n = self._line
        if pieces:
            it = iter(pieces)
            head = next(it)
            if self._skipping:
                self._skipping = False  # the over-long line ends here; it was reported already
            else:
                n += 1
                if self._buf:
                    if len(self._buf) + len(head) > limit + 1:
                        out.append((n, None))
                    else:
                        self._buf += head
                        out.append((n, _finish(bytes(self._buf), limit)))
                    self._buf.clear()
                else:
                    out.append((n, _finish(head, limit)))
            for line in it:
                n += 1
                if line[-1:] == b"\r":
                    line = line[:-1]
                out.append((n, line if len(line) <= limit else None))
        if tail and not self._skipping:
            # limit + 1: the unfinished line may still end in the '\r' of a '\r\n'.
            if len(self._buf) + len(tail) > limit + 1:
                n += 1
                out.append((n, None))
                self._buf.clear()
                self._skipping = True
            else:
                self._buf += tail
        self._line = n
        return out

    def close(self) -> list[Line]:
        """The last line when the stream does not end with a newline."""
        out: list[Line] = []
        if self._buf and not self._skipping:
            self._line += 1
            out.append((self._line, _finish(bytes(self._buf), self._max)))
        self._buf.clear()
        self._skipping = False
        return out


def _finish(line: bytes, limit: int) -> bytes | None:
    if line[-1:] == b"\r":
        line = line[:-1]
    return line if len(line) <= limit else None


class GzipDecoder:
    """Inflates a gzip stream fed in chunks; yields pieces of at most ``max_piece_bytes``.

    Consume each returned iterator fully before feeding again. ``close`` raises ``CorruptGzip`` when
    the stream stops inside a member; garbage between or after members is reported by ``feed``.
    """

    __slots__ = ("_d", "_in_member", "_max", "members")

    def __init__(self, max_piece_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        if max_piece_bytes < 1:
            raise ValueError("max_piece_bytes must be positive")
        self._max = max_piece_bytes
        self._d = zlib.decompressobj(_GZIP_WBITS)
        self._in_member = False
        self.members = 0

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        data = chunk
        while data:
            if self._d.eof:
                self._d = zlib.decompressobj(_GZIP_WBITS)
            self._in_member = True
            try:
                out = self._d.decompress(data, self._max)
            except zlib.error as e:
                raise CorruptGzip("not a valid gzip stream", detail=str(e)) from None
            if out:
                yield out
            if self._d.eof:
                self._in_member = False
                self.members += 1
                data = self._d.unused_data
            else:
                # max_length guarantees progress: a non-empty tail means the output piece was full.
                data = self._d.unconsumed_tail

    def close(self) -> Iterator[bytes]:
        try:
            out = self._d.flush()
        except zlib.error as e:
            raise CorruptGzip("not a valid gzip stream", detail=str(e)) from None
        if out:
            yield out
        if self._in_member and not self._d.eof:
            raise CorruptGzip("truncated gzip stream")


def decode_chunks(chunks: Iterable[bytes], *, gzip: bool) -> Iterator[bytes]:
    """The file's content from its stored chunks (inflated when ``gzip``)."""
    if not gzip:
        yield from chunks
        return
    decoder = GzipDecoder()
    for chunk in chunks:
        yield from decoder.feed(chunk)
    yield from decoder.close()


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
        self._enc = zlib.compressobj(self._level, zlib.DEFLATED, _GZIP_WBITS) if self._gzip else None

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


def collect_parts(events: Iterable[PartEvent]) -> Iterator[Part]:
    """Whole parts in memory: for small runs and tests (``PartWriter.write`` streams them)."""
    chunks: list[bytes] = []
    for event in events:
        if isinstance(event, bytes):
            chunks.append(event)
        else:
            yield Part(event, b"".join(chunks))
            chunks = []


class StoredLines:
    """Lines of a stored file, gzip or not, fed in chunks as stored: what every file parser reads.

    ``feed`` and ``close`` yield lists of lines (as ``LineSplitter`` gives them); ``close`` raises
    ``CorruptGzip`` for a broken ``.gz``.
    """

    def __init__(self, *, gzip: bool, max_line_bytes: int, max_piece_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        self._gunzip = GzipDecoder(max_piece_bytes) if gzip else None
        self._splitter = LineSplitter(max_line_bytes)

    def feed(self, chunk: bytes) -> Iterator[list[Line]]:
        if self._gunzip is None:
            yield self._splitter.feed(chunk)
            return
        for piece in self._gunzip.feed(chunk):
            yield self._splitter.feed(piece)

    def close(self) -> Iterator[list[Line]]:
        if self._gunzip is not None:
            for piece in self._gunzip.close():
                yield self._splitter.feed(piece)
        yield self._splitter.close()
