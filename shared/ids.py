"""Identifier rules: Experience Cloud IDs (ECIDs), declared IDs, and how declared keys are derived.

* An **ECID** (MID/MCID, and the AAM UUID the platform's files carry) is exactly 38 ASCII decimal
  digits. The platform only ever shows 38-digit examples and counts anything else as "Invalid AAM ID",
  so the bridge holds the same line.
* A **declared ID** is whatever the data source's reconciliation key yields. It must survive every
  platform file format (TAB-, space-, comma- and ``=``-separated) and the platform's DPUUID rules (no
  ``:`` nor ``%3A``), so it is printable ASCII without those characters, at most 256 characters.
* Raw PII never leaves the bridge: e-mail keys are normalised and SHA-256 hashed (``declared_key``).

``InvalidId`` deliberately does not carry the offending value: a rejected declared ID may be raw PII,
and errors end up in logs and status events.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final, Literal, get_args

from shared.errors import PermanentError

IdType = Literal["ecid", "declared"]
KeyTransform = Literal["none", "sha256"]

ID_TYPES: Final[tuple[str, ...]] = get_args(IdType)
KEY_TRANSFORMS: Final[tuple[str, ...]] = get_args(KeyTransform)

ECID_LENGTH: Final = 38
MAX_DECLARED_ID_LENGTH: Final = 256

# Reasons are stable strings: they are counted, reported in status events and asserted by tests.
REASON_NOT_38_DIGITS: Final = "not 38 digits"
REASON_EMPTY: Final = "empty"
REASON_TOO_LONG: Final = f"longer than {MAX_DECLARED_ID_LENGTH} characters"
REASON_NOT_ASCII_PRINTABLE: Final = "not printable ASCII"
REASON_WHITESPACE: Final = "contains whitespace"
REASON_COMMA: Final = "contains a comma"
REASON_EQUALS: Final = "contains '='"
REASON_COLON: Final = "contains ':' or '%3A'"
REASON_NOT_UTF8: Final = "not encodable as UTF-8"

_PRINTABLE_MIN: Final = 0x21  # '!': space (0x20) is whitespace and reported as such
_PRINTABLE_MAX: Final = 0x7E  # '~'


class InvalidId(PermanentError):
    """An identifier breaks the rules of its type. ``reason`` is one of the ``REASON_*`` strings."""

    def __init__(self, id_type: IdType, reason: str, *, length: int) -> None:
        super().__init__(f"invalid {id_type} id: {reason}", id_type=id_type, reason=reason, length=length)
        self.id_type: IdType = id_type
        self.reason = reason


class UnknownKeyTransform(PermanentError):
    """A data source names a key transform the bridge does not implement."""


def is_ecid(s: str) -> bool:
    """True when ``s`` is exactly 38 ASCII decimal digits."""
    # isdigit() alone accepts e.g. Arabic-Indic and superscript digits; isascii() shuts them out.
    return len(s) == ECID_LENGTH and s.isascii() and s.isdigit()


def validate_ecid(s: str) -> str:
    if not is_ecid(s):
        raise InvalidId("ecid", REASON_NOT_38_DIGITS, length=len(s))
    return s


def declared_id_problem(s: str) -> str | None:
    """The reason ``s`` is not a valid declared ID, or None when it is."""
    if not s:
        return REASON_EMPTY
    if len(s) > MAX_DECLARED_ID_LENGTH:
        return REASON_TOO_LONG
    if s.isascii() and s.isprintable() and " " not in s and "," not in s and "=" not in s and ":" not in s:
        # The common case (hex digests, CRM numbers) answers with C-speed scans only.
        return REASON_COLON if ("%3A" in s or "%3a" in s) else None
    for ch in s:
        code = ord(ch)
        if ch.isspace():
            return REASON_WHITESPACE
        if code < _PRINTABLE_MIN or code > _PRINTABLE_MAX:
            return REASON_NOT_ASCII_PRINTABLE
        if ch == ",":
            return REASON_COMMA
        if ch == "=":
            return REASON_EQUALS
        if ch == ":":
            return REASON_COLON
    return None


def is_declared_id(s: str) -> bool:
    return declared_id_problem(s) is None


def validate_declared_id(s: str) -> str:
    reason = declared_id_problem(s)
    if reason is not None:
        raise InvalidId("declared", reason, length=len(s))
    return s


def id_problem(id_type: IdType, s: str) -> str | None:
    """The reason ``s`` is not a valid ID of ``id_type``, or None. Cheaper than catching ``InvalidId``."""
    if id_type == "ecid":
        return None if is_ecid(s) else REASON_NOT_38_DIGITS
    if id_type == "declared":
        return declared_id_problem(s)
    raise PermanentError("unknown id type", id_type=id_type)


def invalid_ids(id_type: IdType, ids: Sequence[str]) -> list[str]:
    """The IDs of ``ids`` that are not valid IDs of ``id_type``, in order. A batch of thousands is answered by
    a few C-level scans over all of it when every ID is valid (the usual case); one by one otherwise."""
    if not ids:
        return []
    joined = "".join(ids)
    if id_type == "ecid":
        if joined.isascii() and joined.isdigit() and set(map(len, ids)) == {ECID_LENGTH}:
            return []
    elif id_type == "declared":
        lengths = set(map(len, ids))
        if (
            min(lengths) > 0
            and max(lengths) <= MAX_DECLARED_ID_LENGTH
            and joined.isascii()
            and joined.isprintable()
            and not any(c in joined for c in " ,=:")
            and "%3A" not in joined.upper()  # may also span two IDs: then the slow way below decides
        ):
            return []
    return [i for i in ids if id_problem(id_type, i) is not None]


def validate_id(id_type: IdType, s: str) -> str:
    reason = id_problem(id_type, s)
    if reason is not None:
        raise InvalidId(id_type, reason, length=len(s))
    return s


# The whitespace a declared key is trimmed of, as SQL's ab_key trims it (schemas/sql/017): ASCII only.
KEY_WHITESPACE: Final = " \t\n\r\f\v"


def normalise_email(s: str) -> str:
    """The e-mail as its key is hashed: ASCII whitespace trimmed, ASCII letters lower-cased (only those: see
    :func:`declared_key`)."""
    return s.strip(KEY_WHITESPACE).translate(_ASCII_LOWER)


_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def declared_key(value: str, transform: KeyTransform) -> str:
    """The declared ID for a recipient field's ``value`` under the data source's ``transform``.

    ``none`` keeps the trimmed value (it must then be a valid declared ID); ``sha256`` is the lower-case
    hex SHA-256 of the trimmed, lower-cased value, the hashing the platform's own ID service applies to
    e-mail addresses. An empty value is refused in both cases: every empty field would otherwise
    collapse onto a single shared ID.

    Trimmed of ASCII whitespace (:data:`KEY_WHITESPACE`) and lower-cased in ASCII (A-Z only; every other
    character is hashed as it is): the rule SQL's ``ab_key`` computes too (schemas/sql/017), whatever the
    database's collation, so a key Python derives is the key Postgres stores and matches.
    """
    trimmed = value.strip(KEY_WHITESPACE)
    if transform == "none":
        return validate_declared_id(trimmed)
    if transform == "sha256":
        if not trimmed:
            raise InvalidId("declared", REASON_EMPTY, length=0)
        try:
            encoded = trimmed.encode("utf-8").lower()  # bytes.lower(): the ASCII letters only
        except UnicodeEncodeError:  # a lone surrogate, e.g. from a surrogateescape'd byte
            raise InvalidId("declared", REASON_NOT_UTF8, length=len(trimmed)) from None
        return hashlib.sha256(encoded).hexdigest()
    raise UnknownKeyTransform("unknown key transform", transform=transform)
