"""COPY's text format without a Python step per row: reading one-column ``COPY ... TO STDOUT`` output as it
streams, and writing ``COPY ... FROM STDIN`` input of many values sharing their other columns.

A large export reads a million IDs from Postgres. Through COPY they arrive as lines of text, which
Python splits in bulk (``str.split``) instead of decoding a record per row; COPY also lets Postgres plan
the query in parallel, which a cursor never does. Values come back exactly as stored: the text format's
escapes (``\\\\`` for a backslash, ``\\t``, ``\\n`` and the like for control characters) are undone.
"""

from __future__ import annotations

import re
from typing import Final

from shared.errors import PermanentError

_ESCAPE: Final = re.compile(r"\\(.)", re.DOTALL)
_ESCAPES: Final = {"\\": "\\", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
# What a value must not hold as such in COPY input: the escape character, the column and row delimiters.
_ESCAPED_ON_INPUT: Final = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


class CopyFormatError(PermanentError):
    """COPY output that one text column cannot have produced (a NULL, an unknown escape, bad UTF-8)."""


def _unescape_one(match: re.Match[str]) -> str:
    char = match.group(1)
    try:
        return _ESCAPES[char]
    except KeyError:
        raise CopyFormatError("unexpected escape in COPY text output", escape=f"\\{char}") from None


def unescape_copy_value(value: str) -> str:
    """One column value of COPY's text format, unescaped."""
    if value == "\\N":
        raise CopyFormatError("a NULL where a value was expected")
    return _ESCAPE.sub(_unescape_one, value) if "\\" in value else value


class CopyTextLines:
    """Feed COPY output chunks (cut anywhere, even inside a UTF-8 character); get the complete values."""

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> list[str]:
        data = self._tail + chunk if self._tail else chunk
        end = data.rfind(b"\n") + 1
        self._tail = data[end:]
        if not end:
            return []
        return self._values(data[:end])

    def finish(self) -> list[str]:
        """The end of the output: a last line without its line break is still a value."""
        tail, self._tail = self._tail, b""
        return self._values(tail + b"\n") if tail else []

    @staticmethod
    def _values(block: bytes) -> list[str]:
        try:
            text = block.decode()
        except UnicodeDecodeError as exc:
            raise CopyFormatError("COPY output is not UTF-8", offset=exc.start) from None
        values = text.split("\n")
        values.pop()  # after the last line break
        if "\\" in text:
            values = [unescape_copy_value(v) for v in values]
        return values


def escape_copy_value(value: str) -> str:
    """``value`` as one column of COPY's text input. NUL cannot be stored in text at all: refused."""
    if "\x00" in value:
        raise CopyFormatError("a NUL character cannot be stored in a text column")
    return value.translate(_ESCAPED_ON_INPUT)
