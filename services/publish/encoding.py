"""What a run's files hold: each line's bytes (and the bound the part plan sizes them by), and a part's
stored bytes (gzip) with their md5 and sizes.

No I/O here. Lines are the platform's inbound format (:mod:`shared.formats.inbound`):
``<user id>\\td_sid=<trait>`` to add, ``<user id>\\td_unsid=<trait>`` to remove, and on an
``.overwrite`` line every trait the bridge exported to the user in the data source.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Final

from isal import isal_zlib

from shared.formats import InvalidRecord
from shared.formats.inbound.records import format_inbound_line

_TAB_NL: Final = 2  # the TAB after the user id and the line's "\n"
_SID: Final = len("d_sid=")
_UNSID: Final = len("d_unsid=")
_GZIP_WBITS: Final = 31  # gzip container, 32 KiB window: the only compression the platform reads
DEFAULT_EXPORT_GZIP_LEVEL: Final = 1
# What one more trait adds to an .overwrite line besides its digits: ",d_sid=".
OTHER_TRAIT_FIXED_BYTES: Final = 1 + _SID


# --- line sizes (the part plan's bound) ---------------------------------------------------------------------


def sync_overhead(trait: int, is_add: bool) -> int:
    """Bytes of a ``.sync`` line besides the user id (the SQL plan adds this to ``octet_length(id)``)."""
    return _TAB_NL + (_SID if is_add else _UNSID) + len(str(trait))


def overwrite_overhead(own_trait: int) -> int:
    """Bytes of an ``.overwrite`` line besides the user id and the other audiences' traits."""
    return _TAB_NL + _SID + len(str(own_trait))


def other_trait_bytes(trait: int) -> int:
    """What one more trait adds to an ``.overwrite`` line: ``,d_sid=<trait>``."""
    return OTHER_TRAIT_FIXED_BYTES + len(str(trait))


# --- lines ---------------------------------------------------------------------------------------------------


def sync_line(user_id: str, trait: int, is_add: bool) -> bytes:
    return format_inbound_line(user_id, (trait,), ()) if is_add else format_inbound_line(user_id, (), (trait,))


def sync_block(user_ids: Sequence[str], trait: int, *, is_add: bool) -> bytes:
    """The ``.sync`` lines of user ids all added (or all removed), as :func:`sync_line` writes them, in bulk.

    The hot path of large runs: one join per block, and the ids are not re-validated one by one (they
    were validated as ``Identifier`` when their batch arrived: no whitespace, no comma, 256 characters at
    most), only checked as a block: one TAB and one line break per line.
    """
    if not user_ids:
        return b""
    suffix = f"\td_sid={trait}\n" if is_add else f"\td_unsid={trait}\n"
    block = (suffix.join(user_ids) + suffix).encode()
    if block.count(b"\t") != len(user_ids) or block.count(b"\n") != len(user_ids):
        raise InvalidRecord("a user id contains a TAB or a line break")
    return block


def overwrite_block(rows: Iterable[tuple[str, Iterable[int] | None]], own_trait: int) -> bytes:
    """The ``.overwrite`` lines of ``(user id, other audiences' traits)`` rows."""
    return b"".join(overwrite_line(user_id, own_trait, others) for user_id, others in rows)


def overwrite_traits(own_trait: int, other_traits: Iterable[int] | None) -> tuple[int, ...]:
    """Every trait the bridge exported to the user in the data source: an overwrite keeps only these."""
    return tuple(sorted({own_trait, *(other_traits or ())}))


def overwrite_line(user_id: str, own_trait: int, other_traits: Iterable[int] | None) -> bytes:
    return format_inbound_line(user_id, overwrite_traits(own_trait, other_traits), ())


# --- a part's stored bytes -----------------------------------------------------------------------------------


class PartEncoder:
    """One part's stored bytes, produced incrementally: lines in, (gzip) chunks out, with md5 and sizes."""

    def __init__(self, *, gzip: bool, level: int = DEFAULT_EXPORT_GZIP_LEVEL) -> None:
        # ISA-L's deflate: the same gzip format several times faster than zlib at the fast levels, which
        # is what a million-line part spends most of its time on.
        self._enc = isal_zlib.compressobj(level, isal_zlib.DEFLATED, _GZIP_WBITS) if gzip else None
        self._md5 = hashlib.md5(usedforsecurity=False)
        self.lines = 0
        self.content_bytes = 0
        self.stored_bytes = 0
        self._finished = False

    def add(self, raw: bytes) -> bytes:
        """Encode whole lines; returns what is ready to store (may be empty while gzip buffers).

        ISA-L releases the GIL: callers may run this in a worker thread, one call at a time."""
        if self._finished:
            raise RuntimeError("part already finished")
        self.lines += raw.count(b"\n")
        self.content_bytes += len(raw)
        return self._out(self._enc.compress(raw) if self._enc is not None else raw)

    def finish(self) -> bytes:
        self._finished = True
        return self._out(self._enc.flush() if self._enc is not None else b"")

    def _out(self, data: bytes) -> bytes:
        self.stored_bytes += len(data)
        self._md5.update(data)
        return data

    @property
    def md5(self) -> str:
        return self._md5.hexdigest()
