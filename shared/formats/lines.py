"""Line-oriented building blocks shared by the platform's file formats.

* ``LineSplitter`` cuts a byte stream, fed in chunks of any size, into numbered lines. An over-long
  line is reported (as ``None``) and skipped, never buffered: a hostile or broken file cannot make a
  reader hold more than ``max_line_bytes`` + one chunk.
* ``GzipDecoder`` inflates a gzip stream (several members too, as ``cat a.gz b.gz`` makes) fed in
  chunks, in pieces of bounded size, so a small compressed file cannot blow up memory either.
* ``StoredLines`` puts the two together: the lines of a stored file, gzip or not, as a parser reads them.
* ``LineError`` is how parsers report one bad line without stopping; the ``R_*`` reasons here are those
  of both directions' parsers, each format adds its own.

The writing side, ``PartWriter`` and its summaries, is ``parts``; its names are importable from here too.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from typing import Final, NamedTuple, TypeAlias

from shared.formats import CorruptGzip, DecompressedTooLarge
from shared.formats.parts import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_GZIP_LEVEL,
    GZIP_WBITS,
    Part,
    PartEvent,
    PartSummary,
    PartWriter,
    collect_parts,
)

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


# Reasons (``LineError.reason``) of both directions' parsers.
R_NOT_UTF8: Final = "not UTF-8"
R_TOO_LONG: Final = "line too long"
R_EMPTY_USER_ID: Final = "empty user id"
R_INVALID_ID: Final = "invalid user id"


__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_GZIP_LEVEL",
    "GZIP_WBITS",
    "R_EMPTY_USER_ID",
    "R_INVALID_ID",
    "R_NOT_UTF8",
    "R_TOO_LONG",
    "UTF8_BOM",
    "GzipDecoder",
    "Line",
    "LineError",
    "LineSplitter",
    "Part",
    "PartEvent",
    "PartSummary",
    "PartWriter",
    "StoredLines",
    "collect_parts",
    "decode_chunks",
]


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
    the stream stops inside a member; garbage between or after members is reported by ``feed``. With
    ``max_total_bytes``, a stream inflating to more raises ``DecompressedTooLarge`` as soon as it does
    (a gzip bomb is stopped after that many bytes, not after all of them).
    """

    __slots__ = ("_d", "_in_member", "_max", "_max_total", "members", "total")

    def __init__(self, max_piece_bytes: int = DEFAULT_CHUNK_BYTES, *, max_total_bytes: int | None = None) -> None:
        if max_piece_bytes < 1:
            raise ValueError("max_piece_bytes must be positive")
        self._max = max_piece_bytes
        self._max_total = max_total_bytes
        self._d = zlib.decompressobj(GZIP_WBITS)
        self._in_member = False
        self.members = 0
        self.total = 0

    def _counted(self, out: bytes) -> bytes:
        self.total += len(out)
        if self._max_total is not None and self.total > self._max_total:
            raise DecompressedTooLarge(
                f"the content inflates to more than {self._max_total} bytes", max_bytes=self._max_total
            )
        return out

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        data = chunk
        while data:
            if self._d.eof:
                self._d = zlib.decompressobj(GZIP_WBITS)
            self._in_member = True
            try:
                out = self._d.decompress(data, self._max)
            except zlib.error as e:
                raise CorruptGzip("not a valid gzip stream", detail=str(e)) from None
            if out:
                yield self._counted(out)
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
            yield self._counted(out)
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
