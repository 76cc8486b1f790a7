"""The streaming parser of one inbound file: stored chunks in (gzip or not), records and line errors
out, with the counters a processing receipt reports.

Per-file rules: a line is at most 102,400 bytes; lines after a user's 200th in one file are discarded;
an empty file (no record: blank lines do not count) is invalid. A byte order mark before the first line
is dropped. The grammar of a line itself is ``records``'.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

from shared.formats import EmptyFile
from shared.formats.fields import BadToken, clip
from shared.formats.inbound.names import InboundFileName, parse_inbound_name
from shared.formats.inbound.records import (
    MAX_LINE_BYTES,
    R_BAD_TOKEN,
    R_NO_TAB,
    R_TWO_TABS,
    InboundItem,
    InboundRecord,
    parse_traits,
)
from shared.formats.lines import (
    DEFAULT_CHUNK_BYTES,
    R_EMPTY_USER_ID,
    R_INVALID_ID,
    R_NOT_UTF8,
    R_TOO_LONG,
    UTF8_BOM,
    Line,
    LineError,
    StoredLines,
)
from shared.ids import IdType, id_problem

MAX_LINES_PER_USER: Final = 200

R_OVER_USER_LIMIT: Final = "too many lines for user"


@dataclass(slots=True)
class InboundCounters:
    """What a processing receipt reports, as far as the file alone can tell."""

    bytes_read: int = 0  # as stored (compressed when gzip)
    lines: int = 0  # every line, blank ones included
    blank_lines: int = 0
    records_received: int = 0  # non-blank lines
    format_errors: int = 0
    invalid_ids: int = 0  # user id not of the expected type ("Invalid AAM ID")
    discarded_over_user_limit: int = 0
    records_parsed: int = 0  # records yielded
    traits_added: int = 0
    traits_removed: int = 0
    removals_ignored: int = 0  # removal tokens in .overwrite files
    signals: int = 0
    errors_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def records_processed(self) -> int:
        """Lines the platform looks at: every record but those past a user's line limit."""
        return self.records_received - self.discarded_over_user_limit

    def receipt(self) -> dict[str, int]:
        """The receipt fields the file alone determines, under the platform's names."""
        return {
            "Records received": self.records_received,
            "Format Errors": self.format_errors,
            "Invalid AAM ID": self.invalid_ids,
            "Records processed": self.records_processed,
        }


class InboundParser:
    """Streaming parser of one inbound file: feed stored chunks (gzip or not), get records and errors.

    Iterate each returned iterator fully before the next call. ``close`` yields the last items and
    raises ``EmptyFile`` when the file held no record (blank lines do not count), ``CorruptGzip`` for a
    broken ``.gz``. With ``id_type``, user ids of the wrong type are reported as ``invalid user id``.
    Memory: one line, one chunk, and a counter per distinct user id (for the per-user line limit;
    ``max_lines_per_user=None`` turns it off).
    """

    def __init__(
        self,
        file_name: str | InboundFileName,
        *,
        id_type: IdType | None = None,
        gzip: bool | None = None,
        max_line_bytes: int = MAX_LINE_BYTES,
        max_lines_per_user: int | None = MAX_LINES_PER_USER,
        max_piece_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        self.file_name = parse_inbound_name(file_name) if isinstance(file_name, str) else file_name
        self._name = self.file_name.name
        self._overwrite = self.file_name.mode == "overwrite"
        use_gzip = self.file_name.gzip if gzip is None else gzip
        self._lines = StoredLines(gzip=use_gzip, max_line_bytes=max_line_bytes, max_piece_bytes=max_piece_bytes)
        self._max_line = max_line_bytes
        self._id_type = id_type
        self._max_per_user = max_lines_per_user
        self._per_user: dict[str, int] = {}
        self.counters = InboundCounters()

    def feed(self, chunk: bytes) -> Iterator[InboundItem]:
        self.counters.bytes_read += len(chunk)
        for lines in self._lines.feed(chunk):
            yield from self._items(lines)

    def close(self) -> Iterator[InboundItem]:
        for lines in self._lines.close():
            yield from self._items(lines)
        if self.counters.records_received == 0:
            raise EmptyFile("empty file: no record", file_name=self._name)

    def parse(self, chunks: Iterable[bytes]) -> Iterator[InboundItem]:
        for chunk in chunks:
            yield from self.feed(chunk)
        yield from self.close()

    def _error(self, n: int, reason: str, detail: str = "", user_id: str | None = None) -> LineError:
        c = self.counters
        if reason == R_OVER_USER_LIMIT:
            c.discarded_over_user_limit += 1
        elif reason == R_INVALID_ID:
            c.invalid_ids += 1
        else:
            c.format_errors += 1
        c.errors_by_reason[reason] = c.errors_by_reason.get(reason, 0) + 1
        return LineError(self._name, n, reason, detail, user_id)

    def _items(self, lines: list[Line]) -> Iterator[InboundItem]:
        c = self.counters
        c.lines += len(lines)
        per_user = self._per_user
        max_per_user = self._max_per_user
        id_type = self._id_type
        overwrite = self._overwrite
        for n, data in lines:
            if data is None:
                c.records_received += 1
                yield self._error(n, R_TOO_LONG, f"over {self._max_line} bytes")
                continue
            if n == 1 and data[:3] == UTF8_BOM:
                data = data[3:]
            if not data:
                c.blank_lines += 1
                continue
            c.records_received += 1
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                yield self._error(n, R_NOT_UTF8, f"invalid byte at offset {e.start}")
                continue
            user_id, sep, rest = text.partition("\t")
            if not sep:
                yield self._error(n, R_NO_TAB)
                continue
            if not user_id:
                yield self._error(n, R_EMPTY_USER_ID)
                continue
            if max_per_user is not None:
                seen = per_user.get(user_id, 0) + 1
                per_user[user_id] = seen
                if seen > max_per_user:
                    yield self._error(n, R_OVER_USER_LIMIT, f"over {max_per_user} lines", user_id)
                    continue
            if "\t" in rest:
                yield self._error(n, R_TWO_TABS, "", user_id)
                continue
            if id_type is not None:
                problem = id_problem(id_type, user_id)
                if problem is not None:
                    yield self._error(n, R_INVALID_ID, problem, user_id)
                    continue
            try:
                adds, removes, signals, ignored = parse_traits(rest, overwrite)
            except BadToken as e:
                yield self._error(n, R_BAD_TOKEN, clip(e.token), user_id)
                continue
            c.records_parsed += 1
            c.traits_added += len(adds)
            c.traits_removed += len(removes)
            c.signals += len(signals)
            c.removals_ignored += ignored
            yield InboundRecord(n, user_id, adds, removes, signals)
