"""The streaming parser of one outbound part: stored chunks in (gzip or not), records and line errors
out, with the part's counters.

LF and CRLF line ends (mixed too), a byte order mark before the first line, blank spacer lines and header
rows before the records (``headers``) are read as the platform's sample files have them: blank lines and
header rows are counted, neither records nor errors. An over-long line is an error; the grammar of a line
itself is ``records``'. An empty part is not an error here: an empty ``full`` snapshot is for the importer to
judge.

Separators: one template renders a part, so its fields are apart by the same run of spaces on every line.
Most lines show the width; a line ``u  X`` does not (X the segments after a two-space separator, or the
removals after a one-space one and an empty segment list: ``records.Ambiguous``). Such lines are held
until a line of the part shows its width, then read by it, in their place. A part that never shows one (a
delta of removals only, as the platform writes them) is read by the documented separators: the syntax's one
space, else the example's two. Once a part has shown two widths, its undecidable lines are errors
(``ambiguous separator``), as is a line that fits no width the part may have.

The fast path (``RecordBlock``): a piece's whole lines are cut into columns by a few C-level string
operations when every one of them is an ordinary one-space record, as in the platform's files; any other
block goes line by line. Both give the same records, errors and counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import repeat
from typing import Final, NamedTuple

from shared.formats.fields import BadToken
from shared.formats.lines import (
    DEFAULT_CHUNK_BYTES,
    R_INVALID_ID,
    R_NOT_UTF8,
    R_TOO_LONG,
    UTF8_BOM,
    GzipDecoder,
    Line,
    LineError,
    LineSplitter,
)
from shared.formats.outbound.headers import header_words, is_header_row
from shared.formats.outbound.names import OutboundFileName, parse_outbound_name
from shared.formats.outbound.records import (
    MAX_LINE_BYTES,
    R_AMBIGUOUS,
    Ambiguous,
    OutboundItem,
    OutboundRecord,
    read_text,
    segment_ids,
)
from shared.ids import IdType, id_problem

_FAST_MIN_BYTES: Final = 4096  # below this, a piece is not worth a block
_SEGMENT_CACHE_SIZE: Final = 4096  # distinct segment fields remembered (files repeat a few lists)
MAX_HELD_LINES: Final = 10_000  # lines held for the part's separator width at most (then: the documented one)
# The documented separators, in the order a part that shows none is read by: the syntax's one space
# ("UUID<SPACE>SEGMENT_1,SEGMENT_2<SPACE>REMOVED_SEGMENT_..."), then the example line's two.
DOCUMENTED_WIDTHS: Final = (1, 2)


class RecordBlock(NamedTuple):
    """Consecutive valid records as columns: the record of line ``first_line + i`` is
    ``(user_ids[i], segments[i], removed[i])``. Equal segment fields share one tuple object."""

    first_line: int
    user_ids: list[str]
    segments: list[tuple[int, ...]]
    removed: list[tuple[int, ...]]

    def records(self) -> Iterator[OutboundRecord]:
        lines = range(self.first_line, self.first_line + len(self.user_ids))
        # tuple.__new__ builds each record in C (a NamedTuple's own __new__ is a Python function).
        return map(
            tuple.__new__, repeat(OutboundRecord), zip(lines, self.user_ids, self.segments, self.removed, strict=True)
        )


def _unblocked(items: Iterable[OutboundItem | RecordBlock]) -> Iterator[OutboundItem]:
    """``items`` with each ``RecordBlock`` as its records."""
    for item in items:
        if type(item) is RecordBlock:
            yield from item.records()
        else:
            yield item  # type: ignore[misc]


@dataclass(slots=True)
class OutboundCounters:
    bytes_read: int = 0  # as stored (compressed when gzip)
    lines: int = 0  # every line, blank ones and headers included: what FileLineCount counts
    blank_lines: int = 0
    header_lines: int = 0
    records: int = 0  # valid records yielded
    errors: int = 0  # lines rejected, invalid ids included
    invalid_ids: int = 0
    segment_memberships: int = 0
    segment_removals: int = 0
    errors_by_reason: dict[str, int] = field(default_factory=dict)


class OutboundParser:
    """Streaming parser of one outbound part: feed stored chunks (gzip or not), get records and errors.

    Iterate each returned iterator fully before the next call. ``close`` raises ``CorruptGzip`` for a
    broken ``.gz``; an empty part is not an error. With ``id_type``, user ids of the wrong type are
    reported as ``invalid user id``. ``separator_width`` is the part's field separator when the caller knows
    it (a configured template, an earlier part of the batch); ``separator_widths`` what the part showed.
    Memory: one line and one chunk (a few times a content piece while its lines are cut into columns, see
    ``feed_blocks``), and up to ``MAX_HELD_LINES`` lines waiting for the part to show its separator.
    """

    def __init__(
        self,
        file_name: str | OutboundFileName,
        *,
        id_type: IdType | None = None,
        gzip: bool | None = None,
        max_line_bytes: int = MAX_LINE_BYTES,
        max_piece_bytes: int = DEFAULT_CHUNK_BYTES,
        separator_width: int | None = None,
    ) -> None:
        self.file_name = parse_outbound_name(file_name) if isinstance(file_name, str) else file_name
        self._name = self.file_name.name
        use_gzip = self.file_name.gzip if gzip is None else gzip
        self._gunzip = GzipDecoder(max_piece_bytes) if use_gzip else None
        self._splitter = LineSplitter(max_line_bytes)
        self._max_line = max_line_bytes
        self._id_type = id_type
        self._fast = id_type is None  # ID types are checked line by line
        self._segment_cache: dict[str, tuple[int, ...]] = {}
        self.counters = OutboundCounters()
        self._widths: set[int] = set() if separator_width is None else {separator_width}
        self._held: list[Ambiguous | LineError] = []  # in line order, waiting for the separator width
        self._assumed = False  # no line showed the width soon enough: the documented ones are taken
        self._assumed_widths: set[int] = set()  # the documented widths lines were read by meanwhile
        self._data_started = False  # a record or an error was read: no header row after it
        self._header_words: frozenset[str] | None = None

    @property
    def separator_widths(self) -> frozenset[int]:
        """The separator widths the part's lines showed (two or more: a part its template cannot explain)."""
        return frozenset(self._widths)

    def feed(self, chunk: bytes) -> Iterator[OutboundItem]:
        return _unblocked(self.feed_blocks(chunk))

    def close(self) -> Iterator[OutboundItem]:
        return _unblocked(self.close_blocks())

    def feed_blocks(self, chunk: bytes) -> Iterator[OutboundItem | RecordBlock]:
        """As ``feed``, with runs of ordinary records as ``RecordBlock`` columns: for readers of millions of
        lines, which then need no Python step per line either."""
        self.counters.bytes_read += len(chunk)
        if self._gunzip is None:
            yield from self._content(chunk)
            return
        for piece in self._gunzip.feed(chunk):
            yield from self._content(piece)

    def close_blocks(self) -> Iterator[OutboundItem | RecordBlock]:
        if self._gunzip is not None:
            for piece in self._gunzip.close():
                yield from self._content(piece)
        yield from self._items(self._splitter.close())
        if self._held:
            yield from self._assume()

    def _content(self, piece: bytes) -> Iterator[OutboundItem | RecordBlock]:
        splitter = self._splitter
        if self._fast and not self._held and len(piece) >= _FAST_MIN_BYTES:
            if not splitter.at_line_start:
                # Finish the line the previous piece cut, the careful way.
                end = piece.find(b"\n") + 1
                if not end:
                    yield from self._items(splitter.feed(piece))
                    return
                yield from self._items(splitter.feed(piece[:end]))
                piece = piece[end:]
            end = piece.rfind(b"\n") + 1
            if end:
                whole = piece[:end]
                block = self._block(whole, splitter.line_count + 1)
                if block is not None:
                    splitter.count_whole_lines(whole)
                    yield block
                    piece = piece[end:]
        if piece:
            yield from self._items(splitter.feed(piece))

    def _block(self, data: bytes, first_line: int) -> RecordBlock | None:
        """The whole lines of ``data`` as columns, or None when one of them is not an ordinary record (an
        error, a blank line, a lone CR, a field count differing from the other lines', a separator other than
        one space), or is ``u  X`` while the part has not shown one-space separators."""
        if first_line == 1 and data.startswith(UTF8_BOM):
            data = data[len(UTF8_BOM) :]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if "\r" in text:
            text = text.replace("\r\n", "\n")
            if "\r" in text:
                return None
        lines = text.split("\n")
        lines.pop()  # after the last line break
        n = len(lines)
        if len(data) > self._max_line and max(map(len, lines)) * (1 if text.isascii() else 4) > self._max_line:
            return None
        spaces = set(map(str.count, lines, repeat(" ")))
        if spaces not in ({1}, {2}):
            return None
        fields = text.replace("\n", " ").split(" ")
        if spaces == {2}:
            user_ids, seg_fields, removed_fields = fields[0 : 3 * n : 3], fields[1 : 3 * n : 3], fields[2 : 3 * n : 3]
        else:
            user_ids, seg_fields, removed_fields = fields[0 : 2 * n : 2], fields[1 : 2 * n : 2], [""] * n
        if "" in user_ids:
            return None
        cache = self._segment_cache
        if len(cache) > _SEGMENT_CACHE_SIZE:
            cache.clear()
        seg_set, removed_set = set(seg_fields), set(removed_fields)
        try:
            for f in seg_set | removed_set:
                if f not in cache:
                    cache[f] = segment_ids(f)
        except BadToken:
            return None
        segments = list(map(cache.__getitem__, seg_fields))
        removed = list(map(cache.__getitem__, removed_fields))
        if "" in seg_set and "" in removed_set and ((), ()) in set(zip(segments, removed, strict=True)):
            return None  # a line without any segment
        # "u  X" lines (an empty segment field) read X as removals only where one-space separators are the
        # part's: shown before, or by a line of this block (the lines before it would wait for it anyway).
        shown = seg_set != {""}  # a line with segments shows one-space separators
        if "" in seg_set and not (self._widths == {1} or (not self._widths and (self._assumed or shown))):
            return None
        if shown:
            self._widths |= {1, *self._assumed_widths}
        else:
            self._assumed_widths.add(1)
        self._data_started = True
        c = self.counters
        c.lines += n
        c.records += n
        c.segment_memberships += sum(map(len, segments))
        c.segment_removals += sum(map(len, removed))
        return RecordBlock(first_line, user_ids, segments, removed)

    def parse(self, chunks: Iterable[bytes]) -> Iterator[OutboundItem]:
        for chunk in chunks:
            yield from self.feed(chunk)
        yield from self.close()

    def _error(self, err: LineError) -> LineError:
        c = self.counters
        c.errors += 1
        if err.reason == R_INVALID_ID:
            c.invalid_ids += 1
        c.errors_by_reason[err.reason] = c.errors_by_reason.get(err.reason, 0) + 1
        return err

    def _items(self, lines: list[Line]) -> Iterator[OutboundItem]:
        c = self.counters
        c.lines += len(lines)
        name = self._name
        for n, data in lines:
            if data is None:
                self._data_started = True
                yield from self._emit(LineError(name, n, R_TOO_LONG, f"over {self._max_line} bytes"))
                continue
            if n == 1 and data[:3] == UTF8_BOM:
                data = data[3:]
            if not data:
                c.blank_lines += 1
                continue
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                self._data_started = True
                yield from self._emit(LineError(name, n, R_NOT_UTF8, f"invalid byte at offset {e.start}"))
                continue
            item, width = read_text(text, n, name)
            if type(item) is LineError and not self._data_started and self._is_header(text):
                c.header_lines += 1
                continue
            self._data_started = True
            if type(item) is Ambiguous:
                yield from self._ambiguous(item)
                continue
            if width:
                yield from self._shown(width)
            yield from self._emit(item)  # type: ignore[arg-type]  # a record or an error here

    def _is_header(self, text: str) -> bool:
        if self._header_words is None:
            self._header_words = header_words(self.file_name)
        return is_header_row(text, self._header_words)

    def _emit(self, item: OutboundItem) -> Iterator[OutboundItem]:
        """``item`` now, or after the lines held before it."""
        if self._held:
            assert type(item) is LineError  # a record shows the width, which releases the held lines first
            self._held.append(item)
            return
        yield self._finish(item)

    def _ambiguous(self, item: Ambiguous) -> Iterator[OutboundItem]:
        if not self._widths and not self._assumed:
            if len(self._held) < MAX_HELD_LINES:
                self._held.append(item)
                return
            yield from self._assume()  # waited long enough
        yield from self._emit(self._resolve(item))

    def _resolve(self, item: Ambiguous) -> OutboundRecord | LineError:
        if not self._widths:  # none shown: the documented separators, in order
            for width in DOCUMENTED_WIDTHS:
                if width in (item.gap, item.gap // 2):
                    self._assumed_widths.add(width)
                    return item.resolve(width, self._name)
            detail = f"fields {item.gap} spaces apart, and no line of the part shows its separator"
            return LineError(self._name, item.line_number, R_AMBIGUOUS, detail, item.user_id)
        if len(self._widths) == 1:
            return item.resolve(next(iter(self._widths)), self._name)
        widths = " and ".join(map(str, sorted(self._widths)))
        detail = f"the part's lines are separated by {widths} spaces: which field is which cannot be told"
        return LineError(self._name, item.line_number, R_AMBIGUOUS, detail, item.user_id)

    def _assume(self) -> Iterator[OutboundItem]:
        """No line showed the part's separator (by its end, or within ``MAX_HELD_LINES``): the documented
        ones are taken, for the lines held and those to come until a line shows one."""
        self._assumed = True
        yield from self._release()

    def _release(self) -> Iterator[OutboundItem]:
        held, self._held = self._held, []
        for item in held:
            yield self._finish(self._resolve(item) if type(item) is Ambiguous else item)  # type: ignore[arg-type]

    def _shown(self, width: int) -> Iterator[OutboundItem]:
        """A line showed the part's separator width: the lines held for it are read, in their place."""
        first = not self._widths
        # Lines read by an assumed width that this one contradicts make the part's undecidable lines errors.
        self._widths |= {width, *self._assumed_widths}
        if first:
            yield from self._release()

    def _finish(self, item: OutboundItem) -> OutboundItem:
        if type(item) is LineError:
            return self._error(item)
        assert type(item) is OutboundRecord
        if self._id_type is not None:
            problem = id_problem(self._id_type, item.user_id)
            if problem is not None:
                return self._error(LineError(self._name, item.line_number, R_INVALID_ID, problem, item.user_id))
        c = self.counters
        c.records += 1
        c.segment_memberships += len(item.segments)
        c.segment_removals += len(item.removed)
        return item
