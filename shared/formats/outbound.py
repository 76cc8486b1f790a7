"""The platform's *outbound* batch files and ``.info`` control files: what the bridge reads on import
(ecsim writes them).

Name::

    <sync type>_<destination id>_<master DPID>[_<PID alias>]_(iter|full)_<UTC unix ms>[<part>].sync[.gz]

with a 13-digit timestamp.

``<part>`` is a zero-padded number of at least 3 digits (``001``) appended to the timestamp; the
contract's ``.info`` page shows a ``-1`` style instead, so both are read and the builder's style is a
parameter (``split_style``). An unsplit batch has no part number. The *batch root* is the name up to
the timestamp; the batch's control file is ``<batch root>.info`` and lists every part.

Content, one line per user, exactly three fields separated by single spaces::

    <user id><SPACE><segment ids, comma-separated><SPACE><removed segment ids, comma-separated>

An empty list is an empty field, so the separators are always there (what the platform's template
``<UUID> <SEGMENT_LIST> <REMOVED_SEGMENT_LIST>`` renders): ``u 24,26 `` (no removals, trailing space),
``u  25`` (only removals). Readers also accept the two-field form ``u 24,26``. A line with neither
segments nor removals says nothing and is an error, as is any other field count, an empty list item, or
a segment id that is not a non-negative 64-bit integer. Blank lines are skipped (and counted). An empty
file is not an error here: an empty ``full`` snapshot is for the importer to judge.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Final, Literal, NamedTuple, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.formats import BadFileName, FormatError, InvalidRecord
from shared.formats.lines import (
    DEFAULT_CHUNK_BYTES,
    UTF8_BOM,
    GzipDecoder,
    Line,
    LineError,
    LineSplitter,
    PartEvent,
    PartSummary,
    PartWriter,
)
from shared.ids import IdType, id_problem

SyncType = Literal["ftp", "s3", "S3", "http"]
OutboundMode = Literal["iter", "full"]
SplitStyle = Literal["padded", "dash"]

SYNC_TYPES: Final[tuple[SyncType, ...]] = ("ftp", "s3", "S3", "http")
# Outbound lines have no documented limit; a user in 100,000 segments still fits.
MAX_LINE_BYTES: Final = 1024 * 1024
# The platform splits at up to 10 GB; parts stay far smaller so a consumer can retry one cheaply.
DEFAULT_MAX_PART_BYTES: Final = 256 * 1024 * 1024
MAX_SEGMENT_ID: Final = 2**63 - 1
INFO_SUFFIX: Final = ".info"

R_NOT_UTF8: Final = "not UTF-8"
R_TOO_LONG: Final = "line too long"
R_FIELDS: Final = "wrong field count"
R_EMPTY_USER_ID: Final = "empty user id"
R_BAD_SEGMENT: Final = "bad segment id"
R_NO_SEGMENTS: Final = "no segment ids"
R_INVALID_ID: Final = "invalid user id"


# --------------------------------------------------------------------------------------------- names


def _digits(s: str) -> bool:
    return s.isascii() and s.isdigit()


_ALIAS_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")


def _alias_ok(s: str) -> bool:
    # No '_' (it separates the name's fields) nor '.' (it starts the suffixes).
    return bool(s) and _ALIAS_CHARS.issuperset(s)


@dataclass(frozen=True, slots=True)
class OutboundFileName:
    """A parsed or to-be-built outbound part name. ``str()`` gives the name."""

    sync_type: SyncType
    destination_id: int
    master_dpid: int
    mode: OutboundMode
    timestamp_ms: int  # UTC unix milliseconds, 13 digits
    part: int | None = None  # 1-based; None for an unsplit batch
    gzip: bool = False
    pid_alias: str | None = None
    split_style: SplitStyle = "padded"

    def __post_init__(self) -> None:
        problem = None
        if self.sync_type not in SYNC_TYPES:
            problem = f"sync type must be one of {', '.join(SYNC_TYPES)}"
        elif self.destination_id < 0 or self.master_dpid < 0:
            problem = "ids must not be negative"
        elif self.pid_alias is not None and not _alias_ok(self.pid_alias):
            problem = "PID alias must be ASCII letters, digits and '-'"
        elif self.mode not in ("iter", "full"):
            problem = "mode must be iter or full"
        elif not 1_000_000_000_000 <= self.timestamp_ms <= 9_999_999_999_999:
            problem = "timestamp is not 13 digits"
        elif self.part is not None and self.part < 1:
            problem = "part number must be at least 1"
        elif self.split_style not in ("padded", "dash"):
            problem = "split style must be padded or dash"
        if problem is not None:
            raise BadFileName(f"{self.sync_type}_{self.destination_id}_{self.master_dpid}_…", problem)

    @property
    def batch_root(self) -> str:
        alias = "" if self.pid_alias is None else f"_{self.pid_alias}"
        ids = f"{self.sync_type}_{self.destination_id}_{self.master_dpid}{alias}"
        return f"{ids}_{self.mode}_{self.timestamp_ms}"

    @property
    def name(self) -> str:
        if self.part is None:
            part = ""
        elif self.split_style == "padded":
            part = f"{self.part:03d}"
        else:
            part = f"-{self.part}"
        return f"{self.batch_root}{part}.sync{'.gz' if self.gzip else ''}"

    def __str__(self) -> str:
        return self.name

    @property
    def info_name(self) -> str:
        return self.batch_root + INFO_SUFFIX

    @property
    def totals_name(self) -> str:
        """The batch as a whole, as the ``.info`` ``Totals`` names it (the unsplit, uncompressed name)."""
        return self.batch_root + ".sync"

    def with_part(self, part: int | None) -> OutboundFileName:
        return OutboundFileName(
            self.sync_type,
            self.destination_id,
            self.master_dpid,
            self.mode,
            self.timestamp_ms,
            part,
            self.gzip,
            self.pid_alias,
            self.split_style,
        )

    def part_name(self, part: int | None) -> str:
        return self.with_part(part).name


def outbound_name(
    sync_type: SyncType,
    destination_id: int,
    master_dpid: int,
    mode: OutboundMode,
    timestamp_ms: int,
    *,
    part: int | None = None,
    gzip: bool = False,
    pid_alias: str | None = None,
    split_style: SplitStyle = "padded",
) -> str:
    return OutboundFileName(
        sync_type, destination_id, master_dpid, mode, timestamp_ms, part, gzip, pid_alias, split_style
    ).name


def _sync_type(name: str, s: str) -> SyncType:
    for t in SYNC_TYPES:
        if s == t:
            return t
    raise BadFileName(name, f"sync type must be one of {', '.join(SYNC_TYPES)}")


def _mode(name: str, s: str) -> OutboundMode:
    if s == "iter":
        return "iter"
    if s == "full":
        return "full"
    raise BadFileName(name, "mode must be iter or full")


def parse_outbound_name(name: str) -> OutboundFileName:
    """Parse a part name (no directory). Raises ``BadFileName`` with the first problem found."""
    rest = name
    gzip = rest.endswith(".gz")
    if gzip:
        rest = rest[:-3]
    if not rest.endswith(".sync"):
        raise BadFileName(name, "does not end with .sync or .sync.gz")
    fields = rest[:-5].split("_")
    if len(fields) not in (5, 6):
        raise BadFileName(name, "expected <type>_<destination>_<master DPID>[_<alias>]_<mode>_<timestamp>")
    sync_type = _sync_type(name, fields[0])
    if not (_digits(fields[1]) and _digits(fields[2])):
        raise BadFileName(name, "destination id and master DPID must be numbers")
    alias = fields[3] if len(fields) == 6 else None
    if alias is not None and not _alias_ok(alias):
        raise BadFileName(name, "PID alias must be ASCII letters, digits and '-'")
    mode = _mode(name, fields[-2])
    stamp = fields[-1]
    part: int | None = None
    style: SplitStyle = "padded"
    if "-" in stamp:
        stamp, _, part_s = stamp.partition("-")
        if not _digits(part_s):
            raise BadFileName(name, "part number after '-' is not a number")
        part, style = int(part_s), "dash"
    if not _digits(stamp):
        raise BadFileName(name, "timestamp is not a number")
    if len(stamp) > 13 and part is None:
        if len(stamp) < 16:
            raise BadFileName(name, "part number after the timestamp must have at least 3 digits")
        stamp, part = stamp[:13], int(stamp[13:])
    if len(stamp) != 13:
        raise BadFileName(name, "timestamp is not 13 digits")
    return OutboundFileName(sync_type, int(fields[1]), int(fields[2]), mode, int(stamp), part, gzip, alias, style)


def batch_root_of(name: str) -> str:
    """The batch root of a part name or of a ``.info`` name: the key to group parts with their info."""
    if name.endswith(INFO_SUFFIX):
        root = name[: -len(INFO_SUFFIX)]
        parsed = parse_outbound_name(root + ".sync")
        if parsed.part is not None:
            raise BadFileName(name, "a .info name has no part number")
        return root
    return parse_outbound_name(name).batch_root


def info_name_for(batch_root: str) -> str:
    """``<batch root>.info``; raises ``BadFileName`` when ``batch_root`` is not one."""
    if batch_root_of(batch_root + ".sync") != batch_root:
        raise BadFileName(batch_root, "not a batch root (it carries a part number)")
    return batch_root + INFO_SUFFIX


def is_info_name(name: str) -> bool:
    return name.endswith(INFO_SUFFIX)


# ------------------------------------------------------------------------------------------ .info


class BadInfoFile(FormatError):
    """A ``.info`` control file is not JSON of the expected shape."""


class InfoFileEntry(BaseModel):
    # Unknown keys are ignored: the platform may add some. Strict: a size given as a string is an error.
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore", strict=True)

    file_name: str = Field(alias="FileName", min_length=1)
    byte_size: int = Field(alias="FileByteSize", ge=0)
    line_count: int = Field(alias="FileLineCount", ge=0)
    sequence_number: int = Field(alias="FileSequenceNumber", ge=1)
    # Not checked as hex: the contract's own sample digest holds a 'g'.
    md5: str = Field(alias="md5", min_length=32, max_length=32)


class InfoTotals(BaseModel):
    # Unknown keys are ignored: the platform may add some. Strict: a size given as a string is an error.
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore", strict=True)

    file_name: str = Field(alias="FileName", min_length=1)
    total_byte_size: int = Field(alias="TotalByteSize", ge=0)
    total_number_files: int = Field(alias="TotalNumberFiles", ge=0)
    total_number_lines: int = Field(alias="TotalNumberLines", ge=0)


class InfoFile(BaseModel):
    """The batch's control file: ``{"Files": [...], "Totals": {...}}`` with the platform's key names.

    Totals exclude the ``.info`` itself; byte sizes are as stored (compressed), line counts of the
    content. Parsing checks the shape only; ``inconsistencies`` checks that the parts add up.
    """

    # Unknown keys are ignored: the platform may add some. Strict: a size given as a string is an error.
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore", strict=True)

    files: tuple[InfoFileEntry, ...] = Field(alias="Files")
    totals: InfoTotals = Field(alias="Totals")

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()

    def entry(self, file_name: str) -> InfoFileEntry | None:
        for e in self.files:
            if e.file_name == file_name:
                return e
        return None

    def inconsistencies(self) -> list[str]:
        """Why the listing does not add up (empty when it does)."""
        problems = []
        t = self.totals
        if len(self.files) != t.total_number_files:
            problems.append(f"{len(self.files)} files listed, Totals say {t.total_number_files}")
        if sum(e.byte_size for e in self.files) != t.total_byte_size:
            problems.append("file byte sizes do not add up to TotalByteSize")
        if sum(e.line_count for e in self.files) != t.total_number_lines:
            problems.append("file line counts do not add up to TotalNumberLines")
        numbers = sorted(e.sequence_number for e in self.files)
        if numbers != list(range(1, len(numbers) + 1)):
            problems.append("sequence numbers are not 1..n")
        if len({e.file_name for e in self.files}) != len(self.files):
            problems.append("a file is listed twice")
        return problems


def build_info(batch: OutboundFileName, parts: Sequence[PartSummary]) -> InfoFile:
    entries = tuple(
        InfoFileEntry(
            file_name=p.name,
            byte_size=p.byte_size,
            line_count=p.line_count,
            sequence_number=p.number,
            md5=p.md5,
        )
        for p in sorted(parts, key=lambda p: p.number)
    )
    totals = InfoTotals(
        file_name=batch.totals_name,
        total_byte_size=sum(p.byte_size for p in parts),
        total_number_files=len(parts),
        total_number_lines=sum(p.line_count for p in parts),
    )
    return InfoFile(files=entries, totals=totals)


def parse_info(data: bytes, *, file_name: str = "") -> InfoFile:
    """Parse a ``.info`` (strict JSON). Raises ``BadInfoFile`` naming the first problem."""
    try:
        return InfoFile.model_validate_json(data)
    except ValidationError as e:
        first = e.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(x) for x in first["loc"])
        reason = f"{where}: {first['msg']}" if where else first["msg"]
        raise BadInfoFile("bad .info file", file_name=file_name, reason=reason) from None


# --------------------------------------------------------------------------------------------- lines


class OutboundRecord(NamedTuple):
    line_number: int
    user_id: str
    segments: tuple[int, ...]
    removed: tuple[int, ...]


OutboundItem: TypeAlias = OutboundRecord | LineError
# What the writer takes: (user id, segment ids, removed segment ids).
OutboundRow: TypeAlias = tuple[str, Collection[int], Collection[int]]


class _BadSegment(Exception):
    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.token = token


def _segment_ids(s: str) -> tuple[int, ...]:
    if not s:
        return ()
    out = []
    for tok in s.split(","):
        if not _digits(tok):
            raise _BadSegment(tok)
        n = int(tok)
        if n > MAX_SEGMENT_ID:
            raise _BadSegment(tok)
        out.append(n)
    return tuple(out)


def _clip(s: str, n: int = 100) -> str:
    return s if len(s) <= n else s[:n] + "…"


# The fast path (``RecordBlock``): a piece's whole lines are cut into columns by a few C-level string
# operations when every one of them is an ordinary record, as in the platform's files; any other block
# goes line by line. Both give the same records, errors and counts.
_FAST_MIN_BYTES: Final = 4096  # below this, a piece is not worth a block
_SEGMENT_CACHE_SIZE: Final = 4096  # distinct segment fields remembered (files repeat a few lists)


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


def _parse_text(text: str, n: int, file_name: str) -> OutboundRecord | LineError:
    fields = text.split(" ")
    if len(fields) == 3:
        user_id, segs, removed = fields
    elif len(fields) == 2:
        user_id, segs = fields
        removed = ""
    else:
        return LineError(file_name, n, R_FIELDS, f"{len(fields)} fields")
    if not user_id:
        return LineError(file_name, n, R_EMPTY_USER_ID)
    try:
        segments = _segment_ids(segs)
        removals = _segment_ids(removed)
    except _BadSegment as e:
        return LineError(file_name, n, R_BAD_SEGMENT, _clip(e.token), user_id)
    if not segments and not removals:
        return LineError(file_name, n, R_NO_SEGMENTS, "", user_id)
    return OutboundRecord(n, user_id, segments, removals)


def parse_outbound_line(line: bytes, line_number: int = 1, *, file_name: str = "") -> OutboundItem:
    """One line (without its terminator)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return LineError(file_name, line_number, R_NOT_UTF8)
    return _parse_text(text, line_number, file_name)


def _user_id_problem(user_id: str) -> str | None:
    if not user_id:
        return "empty user id"
    if " " in user_id or "\n" in user_id or "\r" in user_id:
        return "user id contains a space or a line break"
    if user_id[0] == "\ufeff":
        return "user id starts with a byte order mark"
    return None


def _id_list(ids: Collection[int]) -> str:
    out = []
    for s in ids:
        if type(s) is not int or not 0 <= s <= MAX_SEGMENT_ID:
            raise InvalidRecord("segment id is not a non-negative 64-bit integer", segment_id=repr(s))
        out.append(str(s))
    return ",".join(out)


def format_outbound_line(user_id: str, segments: Collection[int] = (), removed: Collection[int] = ()) -> bytes:
    """``<user id> <segments> <removed>\\n``, always three fields. Raises ``InvalidRecord``."""
    problem = _user_id_problem(user_id)
    if problem is not None:
        raise InvalidRecord(problem)
    if not segments and not removed:
        raise InvalidRecord("a line needs at least one segment or removed segment")
    try:
        return f"{user_id} {_id_list(segments)} {_id_list(removed)}\n".encode()
    except UnicodeEncodeError:
        raise InvalidRecord("user id is not encodable as UTF-8") from None


# ------------------------------------------------------------------------------------------- parsing


@dataclass(slots=True)
class OutboundCounters:
    bytes_read: int = 0  # as stored (compressed when gzip)
    lines: int = 0  # every line, blank ones included: what FileLineCount counts
    blank_lines: int = 0
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
    reported as ``invalid user id``. Memory: one line and one chunk (a few times a content piece while its
    lines are cut into columns, see ``feed_blocks``).
    """

    def __init__(
        self,
        file_name: str | OutboundFileName,
        *,
        id_type: IdType | None = None,
        gzip: bool | None = None,
        max_line_bytes: int = MAX_LINE_BYTES,
        max_piece_bytes: int = DEFAULT_CHUNK_BYTES,
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

    def feed(self, chunk: bytes) -> Iterator[OutboundItem]:
        for item in self.feed_blocks(chunk):
            if type(item) is RecordBlock:
                yield from item.records()
            else:
                yield item  # type: ignore[misc]

    def close(self) -> Iterator[OutboundItem]:
        for item in self.close_blocks():
            if type(item) is RecordBlock:
                yield from item.records()
            else:
                yield item  # type: ignore[misc]

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

    def _content(self, piece: bytes) -> Iterator[OutboundItem | RecordBlock]:
        splitter = self._splitter
        if self._fast and len(piece) >= _FAST_MIN_BYTES:
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
        error, a blank line, a byte order mark, a CR, a field count differing from the other lines')."""
        if first_line == 1 and data.startswith(UTF8_BOM):
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
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
                    cache[f] = _segment_ids(f)
        except _BadSegment:
            return None
        segments = list(map(cache.__getitem__, seg_fields))
        removed = list(map(cache.__getitem__, removed_fields))
        if "" in seg_set and "" in removed_set and ((), ()) in set(zip(segments, removed, strict=True)):
            return None  # a line without any segment
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
        id_type = self._id_type
        for n, data in lines:
            if data is None:
                yield self._error(LineError(name, n, R_TOO_LONG, f"over {self._max_line} bytes"))
                continue
            if n == 1 and data[:3] == UTF8_BOM:
                data = data[3:]
            if not data:
                c.blank_lines += 1
                continue
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                yield self._error(LineError(name, n, R_NOT_UTF8, f"invalid byte at offset {e.start}"))
                continue
            item = _parse_text(text, n, name)
            if type(item) is LineError:
                yield self._error(item)
                continue
            assert type(item) is OutboundRecord
            if id_type is not None:
                problem = id_problem(id_type, item.user_id)
                if problem is not None:
                    yield self._error(LineError(name, n, R_INVALID_ID, problem, item.user_id))
                    continue
            c.records += 1
            c.segment_memberships += len(item.segments)
            c.segment_removals += len(item.removed)
            yield item


# ------------------------------------------------------------------------------------------- writing


class OutboundWriter:
    """Writes rows as one batch, split into numbered parts when over ``max_part_bytes``, and its
    ``.info``.

    ``batch`` gives everything but the part (which must be None). A batch that fits one part gets the
    unnumbered name; a split one ``001``, ``002``, … (or ``-1``, ``-2``, … with ``split_style="dash"``).
    See ``PartWriter`` for the events. Once they are consumed, ``info()`` gives the control file (zero
    rows give zero parts and an ``.info`` listing none).
    """

    def __init__(
        self,
        batch: OutboundFileName,
        *,
        max_part_bytes: int = DEFAULT_MAX_PART_BYTES,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        if batch.part is not None:
            raise BadFileName(batch.name, "the writer numbers parts itself: give a name without part")
        self.batch = batch
        self._parts = PartWriter(
            batch.part_name, gzip=batch.gzip, max_part_bytes=max_part_bytes, chunk_bytes=chunk_bytes
        )

    @property
    def parts(self) -> list[PartSummary]:
        return self._parts.parts

    @property
    def info_name(self) -> str:
        return self.batch.info_name

    def write(self, rows: Iterable[OutboundRow]) -> Iterator[PartEvent]:
        return self._parts.write(format_outbound_line(u, s, r) for u, s, r in rows)

    def info(self) -> InfoFile:
        if not self._parts.done:
            raise RuntimeError("info() needs every part written first")
        return build_info(self.batch, self._parts.parts)
