"""Outbound lines: one line of a part as a record, and a record as a line.

Content, one line per user, exactly three fields separated by single spaces::

    <user id><SPACE><segment ids, comma-separated><SPACE><removed segment ids, comma-separated>

An empty list is an empty field, so the separators are always there (what the platform's template
``<UUID> <SEGMENT_LIST> <REMOVED_SEGMENT_LIST>`` renders): ``u 24,26 `` (no removals, trailing space),
``u  25`` (only removals). Readers also accept the two-field form ``u 24,26``. A line with neither
segments nor removals says nothing and is an error, as is any other field count, an empty list item, or
a segment id that is not a non-negative 64-bit integer. Blank lines are skipped (and counted) by the
part parser (``parser``), which also owns the per-file rules.
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


def parse_text(text: str, n: int, file_name: str) -> OutboundRecord | LineError:
    """Line ``n``, decoded and not blank."""
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
        segments = segment_ids(segs)
        removals = segment_ids(removed)
    except BadToken as e:
        return LineError(file_name, n, R_BAD_SEGMENT, clip(e.token), user_id)
    if not segments and not removals:
        return LineError(file_name, n, R_NO_SEGMENTS, "", user_id)
    return OutboundRecord(n, user_id, segments, removals)


def parse_outbound_line(line: bytes, line_number: int = 1, *, file_name: str = "") -> OutboundItem:
    """One line (without its terminator)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return LineError(file_name, line_number, R_NOT_UTF8)
    return parse_text(text, line_number, file_name)


def format_outbound_line(user_id: str, segments: Collection[int] = (), removed: Collection[int] = ()) -> bytes:
    """``<user id> <segments> <removed>\\n``, always three fields. Raises ``InvalidRecord``."""
    check_user_id(user_id, " ", "a space")
    if not segments and not removed:
        raise InvalidRecord("a line needs at least one segment or removed segment")
    segs = ",".join(id_tokens(segments, "segment"))
    removals = ",".join(id_tokens(removed, "segment"))
    try:
        return f"{user_id} {segs} {removals}\n".encode()
    except UnicodeEncodeError:
        raise InvalidRecord("user id is not encodable as UTF-8") from None
