"""Inbound lines: one line of a file as a record, and a record as a line.

Content, UTF-8, one line per user::

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

Lines are at most 102,400 bytes. ``format_inbound_line`` produces only ``d_sid``/``d_unsid``. The
per-file rules (line length, lines per user, empty files) are the file parser's (``parser``).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Final, NamedTuple, TypeAlias

from shared.formats import InvalidRecord
from shared.formats.fields import MAX_ID, BadToken, check_user_id, clip, digits, id_tokens, id_value
from shared.formats.lines import R_EMPTY_USER_ID, R_NOT_UTF8, LineError

MAX_LINE_BYTES: Final = 102_400
MAX_TRAIT_ID: Final = MAX_ID

# Per-line error reasons (LineError.reason), besides those of ``shared.formats.lines``.
R_NO_TAB: Final = "no TAB"
R_TWO_TABS: Final = "more than one TAB"
R_BAD_TOKEN: Final = "bad trait token"


class InboundRecord(NamedTuple):
    line_number: int
    user_id: str
    adds: tuple[int, ...]
    removes: tuple[int, ...]
    signals: tuple[tuple[str, str], ...] = ()


InboundItem: TypeAlias = InboundRecord | LineError
# What the writer takes: (user id, trait ids to add, trait ids to remove).
InboundRow: TypeAlias = tuple[str, Collection[int], Collection[int]]


def _unquote(s: str) -> str:
    if len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        return s[1:-1]
    return s


# Only d_sid/d_unsid tokens, no spaces; 18 digits at most so that no value can exceed MAX_TRAIT_ID.
_SID_LIST: Final = re.compile(r"d_(?:un)?sid=[0-9]{1,18}(?:,d_(?:un)?sid=[0-9]{1,18})*")


def parse_traits(
    rest: str, overwrite: bool
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[tuple[str, str], ...], int]:
    """(adds, removes, signals, removals ignored); raises ``BadToken``."""
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
            adds.append(id_value(tok[6:], tok))
        elif tok.startswith("d_unsid="):
            n = id_value(tok[8:], tok)
            if overwrite:
                ignored += 1
            else:
                removes.append(n)
        elif digits(tok):
            signals.append(("ic", tok))
        elif tok.endswith((":0", ":-1")):
            n = id_value(tok[: tok.rindex(":")], tok)
            if overwrite:
                ignored += 1
            else:
                removes.append(n)
        else:
            key, sep, value = tok.partition("=")
            key = _unquote(key.strip()).lstrip("-")
            value = _unquote(value.strip())
            if not sep or not key or not value:
                raise BadToken(tok)
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
        adds, removes, signals, _ = parse_traits(rest, overwrite)
    except BadToken as e:
        return LineError(file_name, line_number, R_BAD_TOKEN, clip(e.token), user_id)
    return InboundRecord(line_number, user_id, adds, removes, signals)


def format_inbound_line(user_id: str, adds: Collection[int] = (), removes: Collection[int] = ()) -> bytes:
    """``<user id>\\t d_sid=…,d_unsid=…\\n`` (adds first). Raises ``InvalidRecord``."""
    check_user_id(user_id, "\t", "a TAB")
    traits = ",".join(id_tokens(adds, "trait", "d_sid=") + id_tokens(removes, "trait", "d_unsid="))
    try:
        line = f"{user_id}\t{traits}\n".encode()
    except UnicodeEncodeError:
        raise InvalidRecord("user id is not encodable as UTF-8") from None
    if len(line) - 1 > MAX_LINE_BYTES:
        raise InvalidRecord("line longer than the platform's limit", line_bytes=len(line) - 1)
    return line
