"""The platform's *inbound* data files: what the bridge writes on export (ecsim reads them).

Name::

    ftp_dpm_<DPID>[_<target DPID>]_<10-digit UTC unix seconds>.(sync|overwrite)[.<part>][.gz]

placed under ``<partner>/date=YYYY-MM-DD/`` (the UTC upload date). Content, UTF-8, one line per user::

    <user id><TAB><trait>,<trait>,…

Trait tokens (spaces around them are allowed: the platform's own examples put one after commas):

* ``d_sid=<trait id>`` adds the user to the trait; ``d_unsid=<trait id>``, ``<trait id>:0`` and
  ``<trait id>:-1`` remove them.
* ``.sync`` is incremental. ``.overwrite`` replaces the user's traits of that data source with the
  line's: the contract says ``d_unsid`` is ignored there, and the other removal forms are ignored
  likewise, since a replacement leaves nothing to remove (counted in ``removals_ignored``).
* Anything else is a *signal* for rule-based traits: ``key=value`` with optionally double-quoted key
  and value (a leading ``-`` in the key is ignored), or a bare number ``N``, which means ``ic=N``.
  Values are not unescaped: a comma always separates tokens.
* An empty trait list is a valid line: in ``.overwrite`` it clears the user's traits.

Lines are at most 102,400 bytes; lines after a user's 200th in one file are discarded; an empty file is
invalid. The writer produces only ``d_sid``/``d_unsid`` and refuses removals in ``.overwrite`` files
(they would be silently dropped by the platform).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Final, Literal, NamedTuple, TypeAlias

from shared.formats import BadFileName, EmptyFile, InvalidRecord
from shared.formats.lines import (
    DEFAULT_CHUNK_BYTES,
    UTF8_BOM,
    Line,
    LineError,
    PartEvent,
    PartSummary,
    PartWriter,
    StoredLines,
)
from shared.ids import IdType, id_problem

InboundMode = Literal["sync", "overwrite"]

MAX_LINE_BYTES: Final = 102_400
MAX_LINES_PER_USER: Final = 200
# The platform's "optimal" uncompressed file is 1 GB (maximum 5 GB); stay well below.
DEFAULT_MAX_PART_BYTES: Final = 256 * 1024 * 1024
MAX_TRAIT_ID: Final = 2**63 - 1  # what Postgres' bigint holds

PREFIX: Final = "ftp_dpm_"

# Per-line error reasons (LineError.reason).
R_NOT_UTF8: Final = "not UTF-8"
R_TOO_LONG: Final = "line too long"
R_NO_TAB: Final = "no TAB"
R_TWO_TABS: Final = "more than one TAB"
R_EMPTY_USER_ID: Final = "empty user id"
R_BAD_TOKEN: Final = "bad trait token"
R_OVER_USER_LIMIT: Final = "too many lines for user"
R_INVALID_ID: Final = "invalid user id"


# --------------------------------------------------------------------------------------------- names


def _digits(s: str) -> bool:
    return s.isascii() and s.isdigit()


@dataclass(frozen=True, slots=True)
class InboundFileName:
    """A parsed or to-be-built inbound file name. ``str()`` gives the name."""

    dpid: int
    timestamp: int  # UTC unix seconds, 10 digits
    mode: InboundMode = "sync"
    part: int | None = None  # 1-based; None for an unsplit file
    gzip: bool = False
    target_dpid: int | None = None  # data source owning the traits, when dpid is a device data source

    def __post_init__(self) -> None:
        problem = None
        if self.dpid < 0 or (self.target_dpid is not None and self.target_dpid < 0):
            problem = "DPID must not be negative"
        elif not 1_000_000_000 <= self.timestamp <= 9_999_999_999:
            problem = "timestamp is not 10 digits"
        elif self.mode not in ("sync", "overwrite"):
            problem = "mode must be sync or overwrite"
        elif self.part is not None and self.part < 1:
            problem = "part number must be at least 1"
        if problem is not None:
            raise BadFileName(f"{PREFIX}{self.dpid}_{self.timestamp}.{self.mode}", problem)

    @property
    def name(self) -> str:
        target = "" if self.target_dpid is None else f"_{self.target_dpid}"
        part = "" if self.part is None else f".{self.part}"
        gz = ".gz" if self.gzip else ""
        return f"{PREFIX}{self.dpid}{target}_{self.timestamp}.{self.mode}{part}{gz}"

    def __str__(self) -> str:
        return self.name

    def with_part(self, part: int | None) -> InboundFileName:
        return InboundFileName(self.dpid, self.timestamp, self.mode, part, self.gzip, self.target_dpid)

    def part_name(self, part: int | None) -> str:
        return self.with_part(part).name

    @property
    def upload_date(self) -> date:
        """The UTC date of the name's timestamp: the default ``date=`` folder."""
        return datetime.fromtimestamp(self.timestamp, UTC).date()


def inbound_name(
    dpid: int,
    timestamp: int,
    mode: InboundMode = "sync",
    *,
    part: int | None = None,
    gzip: bool = False,
    target_dpid: int | None = None,
) -> str:
    return InboundFileName(dpid, timestamp, mode, part, gzip, target_dpid).name


def parse_inbound_name(name: str) -> InboundFileName:
    """Parse a file name (no directory). Raises ``BadFileName`` with the first problem found."""
    if not name.startswith(PREFIX):
        raise BadFileName(name, f"does not start with {PREFIX!r}")
    rest = name[len(PREFIX) :]
    if rest.startswith("odc_"):
        raise BadFileName(name, "the Oracle Data Cloud variant (ftp_dpm_odc_) is not supported")
    if rest.endswith((".pgp", ".gpg")):
        raise BadFileName(name, "PGP-encrypted files are not supported")
    gzip = rest.endswith(".gz")
    if gzip:
        rest = rest[:-3]
    pieces = rest.split(".")
    part: int | None = None
    if len(pieces) == 3:
        if not _digits(pieces[2]):
            raise BadFileName(name, "part number is not a number")
        part = int(pieces[2])
    elif len(pieces) != 2:
        raise BadFileName(name, "expected <ids>.(sync|overwrite)[.<part>][.gz]")
    stem = pieces[0]
    mode: InboundMode
    if pieces[1] == "sync":
        mode = "sync"
    elif pieces[1] == "overwrite":
        mode = "overwrite"
    else:
        raise BadFileName(name, "mode must be sync or overwrite")
    ids = stem.split("_")
    if len(ids) not in (2, 3) or not all(_digits(i) for i in ids):
        raise BadFileName(name, "expected <DPID>[_<target DPID>]_<timestamp> after 'ftp_dpm_'")
    if len(ids[-1]) != 10:
        raise BadFileName(name, "timestamp is not 10 digits")
    target = int(ids[1]) if len(ids) == 3 else None
    return InboundFileName(int(ids[0]), int(ids[-1]), mode, part, gzip, target)


def inbound_object_key(partner: str, file_name: InboundFileName, upload_date: date | None = None) -> str:
    """``<partner>/date=YYYY-MM-DD/<name>``, the key layout the platform polls."""
    if not partner or "/" in partner:
        raise BadFileName(file_name.name, "partner must be a non-empty path segment")
    day = upload_date or file_name.upload_date
    return f"{partner}/date={day.isoformat()}/{file_name.name}"


# --------------------------------------------------------------------------------------------- lines


class InboundRecord(NamedTuple):
    line_number: int
    user_id: str
    adds: tuple[int, ...]
    removes: tuple[int, ...]
    signals: tuple[tuple[str, str], ...] = ()


InboundItem: TypeAlias = InboundRecord | LineError
# What the writer takes: (user id, trait ids to add, trait ids to remove).
InboundRow: TypeAlias = tuple[str, Collection[int], Collection[int]]


class _BadToken(Exception):
    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.token = token


def _trait_id(v: str, token: str) -> int:
    if not _digits(v):
        raise _BadToken(token)
    n = int(v)
    if n > MAX_TRAIT_ID:
        raise _BadToken(token)
    return n


def _unquote(s: str) -> str:
    if len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        return s[1:-1]
    return s


# Only d_sid/d_unsid tokens, no spaces; 18 digits at most so that no value can exceed MAX_TRAIT_ID.
_SID_LIST: Final = re.compile(r"d_(?:un)?sid=[0-9]{1,18}(?:,d_(?:un)?sid=[0-9]{1,18})*")


def _parse_traits(
    rest: str, overwrite: bool
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[tuple[str, str], ...], int]:
    """(adds, removes, signals, removals ignored); raises ``_BadToken``."""
    if not rest or rest.isspace():
        return (), (), (), 0
    if _SID_LIST.fullmatch(rest):
        # What the bridge itself writes (d_sid tokens, then d_unsid ones): parsed by C-level splits
        # instead of a Python loop per token, several times faster on files of millions of lines.
        head, sep, tail = rest.partition("d_unsid=")
        if not sep:
            return tuple(map(int, rest[6:].split(",d_sid="))), (), (), 0
        if "d_sid=" not in tail:
            added = tuple(map(int, head[6:-1].split(",d_sid="))) if head else ()
            removed = tuple(map(int, tail.split(",d_unsid=")))
            if overwrite:
                return added, (), (), len(removed)
            return added, removed, (), 0
    adds: list[int] = []
    removes: list[int] = []
    signals: list[tuple[str, str]] = []
    ignored = 0
    for raw in rest.split(","):
        tok = raw.strip()
        if tok.startswith("d_sid="):
            adds.append(_trait_id(tok[6:], tok))
        elif tok.startswith("d_unsid="):
            n = _trait_id(tok[8:], tok)
            if overwrite:
                ignored += 1
            else:
                removes.append(n)
        elif _digits(tok):
            signals.append(("ic", tok))
        elif tok.endswith((":0", ":-1")):
            n = _trait_id(tok[: tok.rindex(":")], tok)
            if overwrite:
                ignored += 1
            else:
                removes.append(n)
        else:
            key, sep, value = tok.partition("=")
            key = _unquote(key.strip()).lstrip("-")
            value = _unquote(value.strip())
            if not sep or not key or not value:
                raise _BadToken(tok)
            signals.append((key, value))
    return tuple(adds), tuple(removes), tuple(signals), ignored


def parse_inbound_line(
    line: bytes, line_number: int = 1, *, overwrite: bool = False, file_name: str = ""
) -> InboundItem:
    """One line (without its terminator). Per-file rules (line length, lines per user) are the
    streaming parser's."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return LineError(file_name, line_number, R_NOT_UTF8)
    user_id, sep, rest = text.partition("\t")
    if not sep:
        return LineError(file_name, line_number, R_NO_TAB)
    if not user_id:
        return LineError(file_name, line_number, R_EMPTY_USER_ID)
    if "\t" in rest:
        return LineError(file_name, line_number, R_TWO_TABS, user_id=user_id)
    try:
        adds, removes, signals, _ = _parse_traits(rest, overwrite)
    except _BadToken as e:
        return LineError(file_name, line_number, R_BAD_TOKEN, _clip(e.token), user_id)
    return InboundRecord(line_number, user_id, adds, removes, signals)


def _clip(s: str, n: int = 100) -> str:
    return s if len(s) <= n else s[:n] + "…"


def _user_id_problem(user_id: str) -> str | None:
    if not user_id:
        return "empty user id"
    if "\t" in user_id or "\n" in user_id or "\r" in user_id:
        return "user id contains a TAB or a line break"
    if user_id[0] == "\ufeff":
        return "user id starts with a byte order mark"
    return None


def _trait_list(prefix: str, ids: Collection[int]) -> list[str]:
    out = []
    for t in ids:
        if type(t) is not int or not 0 <= t <= MAX_TRAIT_ID:
            raise InvalidRecord("trait id is not a non-negative 64-bit integer", trait_id=repr(t))
        out.append(f"{prefix}{t}")
    return out


def format_inbound_line(user_id: str, adds: Collection[int] = (), removes: Collection[int] = ()) -> bytes:
    """``<user id>\\t d_sid=…,d_unsid=…\\n`` (adds first). Raises ``InvalidRecord``."""
    problem = _user_id_problem(user_id)
    if problem is not None:
        raise InvalidRecord(problem)
    traits = ",".join(_trait_list("d_sid=", adds) + _trait_list("d_unsid=", removes))
    try:
        line = f"{user_id}\t{traits}\n".encode()
    except UnicodeEncodeError:
        raise InvalidRecord("user id is not encodable as UTF-8") from None
    if len(line) - 1 > MAX_LINE_BYTES:
        raise InvalidRecord("line longer than the platform's limit", line_bytes=len(line) - 1)
    return line


# ------------------------------------------------------------------------------------------- parsing


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
                adds, removes, signals, ignored = _parse_traits(rest, overwrite)
            except _BadToken as e:
                yield self._error(n, R_BAD_TOKEN, _clip(e.token), user_id)
                continue
            c.records_parsed += 1
            c.traits_added += len(adds)
            c.traits_removed += len(removes)
            c.signals += len(signals)
            c.removals_ignored += ignored
            yield InboundRecord(n, user_id, adds, removes, signals)


# ------------------------------------------------------------------------------------------- writing


class InboundWriter:
    """Writes rows as one inbound file, split into numbered parts when over ``max_part_bytes``.

    ``file_name`` gives DPID, timestamp, mode and gzip; its ``part`` must be None (the writer numbers
    parts: ``.sync`` alone for a single part, ``.sync.1``, ``.sync.2``, … for a split file). See
    ``PartWriter`` for the events. Zero rows give zero parts: the platform rejects empty files.
    The writer does not track lines per user: give each user one row.
    """

    def __init__(
        self,
        file_name: InboundFileName,
        *,
        max_part_bytes: int = DEFAULT_MAX_PART_BYTES,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        if file_name.part is not None:
            raise BadFileName(file_name.name, "the writer numbers parts itself: give a name without part")
        self.file_name = file_name
        self._parts = PartWriter(
            file_name.part_name,
            gzip=file_name.gzip,
            max_part_bytes=max_part_bytes,
            chunk_bytes=chunk_bytes,
        )

    @property
    def parts(self) -> list[PartSummary]:
        return self._parts.parts

    def write(self, rows: Iterable[InboundRow]) -> Iterator[PartEvent]:
        return self._parts.write(self._lines(rows))

    def _lines(self, rows: Iterable[InboundRow]) -> Iterator[bytes]:
        overwrite = self.file_name.mode == "overwrite"
        for user_id, adds, removes in rows:
            if overwrite and removes:
                raise InvalidRecord("the platform ignores removals in .overwrite files")
            yield format_inbound_line(user_id, adds, removes)


def write_inbound(
    rows: Iterable[InboundRow],
    file_name: InboundFileName,
    *,
    max_part_bytes: int = DEFAULT_MAX_PART_BYTES,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Iterator[PartEvent]:
    return InboundWriter(file_name, max_part_bytes=max_part_bytes, chunk_bytes=chunk_bytes).write(rows)
