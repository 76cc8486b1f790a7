"""Outbound lines: one line of a part as a record, and a record as a line.

Content, one line per user, three fields: the user id, the segments they are in, the segments they left
(comma-separated lists)::

    <user id><SEP><segment ids><SEP><removed segment ids>

``<SEP>`` is one space in the documented syntax (``UUID<SPACE>SEGMENT_1,SEGMENT_2<SPACE>...``) and two in the
documented example (``59767559181262060060278870901087098252  24,26,27  25,28``); a destination's template
may use a run of any width, the same on every line of a part. An empty list is an empty field, so the
separators are still there: ``u 24,26 `` (no removals, trailing separator), ``u  25`` (only removals). The
two-field form ``u 24,26`` (no removal field at all) is read too.

Most lines read one way only: three non-empty fields, a lone list after one space, a trailing separator as
wide as the first. One does not: two non-empty fields apart by an even run, ``u  X``, is X the segment list
after a two-space separator, or the removed list after a one-space separator and an empty segment list?
``read_text`` says so (:class:`Ambiguous`) and the part parser decides from the widths its other lines show
(``parser``). Alone, as ``parse_outbound_line`` reads it, it follows the documented syntax.

A line with neither segments nor removals says nothing and is an error, as is any other field count,
separators of different widths within a line, an empty list item, or a segment id that is not a
non-negative 64-bit integer. Blank lines and header rows are the part parser's (``parser``), which also owns
the per-file rules.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final, NamedTuple, TypeAlias

from shared.formats import InvalidRecord
from shared.formats.fields import MAX_ID, BadToken, check_user_id, clip, id_tokens, id_value
from shared.formats.lines import R_EMPTY_USER_ID, R_NOT_UTF8, LineError

# Outbound lines have no documented limit; a user in 100,000 segments still fits.
MAX_LINE_BYTES: Final = 1024 * 1024
MAX_SEGMENT_ID: Final = MAX_ID

R_FIELDS: Final = "wrong field count"
R_BAD_SEGMENT: Final = "bad segment id"
R_NO_SEGMENTS: Final = "no segment ids"
R_AMBIGUOUS: Final = "ambiguous separator"


class OutboundRecord(NamedTuple):
    line_number: int
    user_id: str
    segments: tuple[int, ...]
    removed: tuple[int, ...]


OutboundItem: TypeAlias = OutboundRecord | LineError
# What the writer takes: (user id, segment ids, removed segment ids).
OutboundRow: TypeAlias = tuple[str, Collection[int], Collection[int]]


def segment_ids(s: str) -> tuple[int, ...]:
    """A segment field's ids; raises ``BadToken`` with the first bad one."""
    if not s:
        return ()
    out = []
    for tok in s.split(","):
        out.append(id_value(tok, tok))
    return tuple(out)


class Ambiguous(NamedTuple):
    """``<user id><gap spaces><ids>``: ``ids`` are the user's segments if the part's separator is ``gap``
    spaces wide, the segments they left (after an empty segment list) if it is ``gap // 2``."""

    line_number: int
    user_id: str
    ids: tuple[int, ...]
    gap: int

    def resolve(self, width: int, file_name: str) -> OutboundRecord | LineError:
        """The line read with the part's separator ``width``; an error when that fits neither reading."""
        if width == self.gap:
            return OutboundRecord(self.line_number, self.user_id, self.ids, ())
        if width == self.gap // 2:
            return OutboundRecord(self.line_number, self.user_id, (), self.ids)
        detail = f"fields {self.gap} spaces apart where the part's lines are {width} apart"
        return LineError(file_name, self.line_number, R_AMBIGUOUS, detail, self.user_id)


# A line read on its own: what it is, and the separator width it shows (0: none, or it is not a record).
Reading: TypeAlias = tuple[OutboundRecord | LineError | Ambiguous, int]


def _record(n: int, user_id: str, segs: str, removed: str, file_name: str, width: int) -> Reading:
    try:
        segments = segment_ids(segs)
        removals = segment_ids(removed)
    except BadToken as e:
        return LineError(file_name, n, R_BAD_SEGMENT, clip(e.token), user_id), 0
    if not segments and not removals:
        return LineError(file_name, n, R_NO_SEGMENTS, "", user_id), 0
    return OutboundRecord(n, user_id, segments, removals), width


def read_text(text: str, n: int, file_name: str) -> Reading:
    """Line ``n``, decoded and not blank, as far as the line alone tells (see the module)."""
    fields = text.split(" ")
    user_id = fields[0]
    if not user_id:
        return LineError(file_name, n, R_EMPTY_USER_ID), 0
    if "" not in fields:  # single spaces and no empty field: the common case, answered at once
        if len(fields) == 3:
            return _record(n, user_id, fields[1], fields[2], file_name, 1)
        if len(fields) == 2:
            return _record(n, user_id, fields[1], "", file_name, 1)
        return LineError(file_name, n, R_FIELDS, f"{len(fields)} fields", user_id), 0
    tokens: list[str] = []
    gaps: list[int] = []  # the width of each run of spaces before a field
    run = 0
    for f in fields[1:]:
        if f:
            tokens.append(f)
            gaps.append(run + 1)
            run = 0
        else:
            run += 1
    trailing = run  # spaces after the last field
    if not tokens:
        return LineError(file_name, n, R_NO_SEGMENTS, "", user_id), 0
    if len(tokens) == 1:
        gap = gaps[0]
        if trailing == gap or (trailing == 0 and gap % 2):
            return _record(n, user_id, tokens[0], "", file_name, gap)
        if trailing == 0:
            try:
                return Ambiguous(n, user_id, segment_ids(tokens[0]), gap), 0
            except BadToken as e:
                return LineError(file_name, n, R_BAD_SEGMENT, clip(e.token), user_id), 0
        return LineError(file_name, n, R_FIELDS, f"{trailing} trailing spaces after a {gap}-space separator"), 0
    if len(tokens) == 2 and gaps[0] == gaps[1] and not trailing:
        return _record(n, user_id, tokens[0], tokens[1], file_name, gaps[0])
    detail = f"{len(tokens) + 1} fields" if len(tokens) != 2 else "separators of different widths"
    return LineError(file_name, n, R_FIELDS, detail, user_id), 0


def parse_text(text: str, n: int, file_name: str) -> OutboundRecord | LineError:
    """Line ``n`` on its own: a line that the part would have to decide follows the documented syntax (one
    space between fields)."""
    item, _width = read_text(text, n, file_name)
    if isinstance(item, Ambiguous):
        return item.resolve(1, file_name)
    return item


def parse_outbound_line(line: bytes, line_number: int = 1, *, file_name: str = "") -> OutboundItem:
    """One line (without its terminator)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return LineError(file_name, line_number, R_NOT_UTF8)
    return parse_text(text, line_number, file_name)


def format_outbound_line(
    user_id: str, segments: Collection[int] = (), removed: Collection[int] = (), *, separator: str = " "
) -> bytes:
    """``<user id> <segments> <removed>\\n``, always three fields (``separator``: a run of spaces between
    them). Raises ``InvalidRecord``."""
    check_user_id(user_id, " ", "a space")
    if not separator or separator.strip(" "):
        raise InvalidRecord("the separator must be a run of spaces")
    if not segments and not removed:
        raise InvalidRecord("a line needs at least one segment or removed segment")
    segs = ",".join(id_tokens(segments, "segment"))
    removals = ",".join(id_tokens(removed, "segment"))
    try:
        return f"{user_id}{separator}{segs}{separator}{removals}\n".encode()
    except UnicodeEncodeError:
        raise InvalidRecord("user id is not encodable as UTF-8") from None
