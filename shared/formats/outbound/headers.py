"""Header rows: lines a destination's template may put before a part's records.

The platform's templates build header rows from its "file name and header" macros (``<ORDER_ID><TAB>
<SYNC_TYPE>``, ``NEW_LINE`` for several rows, ``ASCII_SOH``), and the ``.info`` counts them with the lines.
A header row is neither a record nor an error, but a reader must not take a broken record for one, so a
line is a header row only when all of these hold:

* it comes before the part's first record or error (blank lines aside);
* it is not a record (``records`` says so);
* every word of it is the name of a documented macro (``UUID``, ``SEGMENT_LIST``, …, read as words:
  ``SEGMENT``, ``LIST``) or a value the header macros take for this very file: its destination id, DPIDs, PID
  alias, sync type and mode, timestamp (seconds or milliseconds), part number, or the extension.
"""

from __future__ import annotations

import re
from typing import Final

from shared.formats.outbound.names import OutboundFileName
from shared.formats.outbound.templates import DOCUMENTED_MACROS

_MACRO_WORDS: Final = frozenset(word.lower() for macro in DOCUMENTED_MACROS for word in re.split("[_-]", macro))
_WORDS: Final = re.compile(r"[A-Za-z0-9]+")
# Besides words, what a header row may hold: separators (space, TAB, ASCII SOH) and punctuation.
_ROW: Final = re.compile(r"[A-Za-z0-9 \t\x01_.,;:|=\"'{}\[\]()-]+")


def header_words(name: OutboundFileName) -> frozenset[str]:
    """The words a header row of ``name``'s part may hold (lower case)."""
    values: list[object] = [
        name.sync_type,
        name.destination_id,
        name.master_dpid,
        name.dpid,
        name.pid_alias,
        name.mode,
        name.timestamp_ms,
        name.timestamp_ms // 1000,
        name.part,
        None if name.part is None else f"{name.part:03d}",
        name.extension.lstrip("."),
        "sync",
        "gz",
    ]
    return _MACRO_WORDS | {str(v).lower() for v in values if v is not None}


def is_header_row(text: str, words: frozenset[str]) -> bool:
    """Whether ``text`` (a decoded line that is not a record) is made of header words only."""
    if _ROW.fullmatch(text) is None:
        return False
    found = _WORDS.findall(text)
    return bool(found) and all(w.lower() in words for w in found)
