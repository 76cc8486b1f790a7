"""The platform's *inbound* data files (``ftp_dpm_…``): what the bridge writes on export (ecsim reads
them).

* ``names``: the file name grammar and the object key (``InboundFileName``, ``parse_inbound_name``,
  ``inbound_object_key``).
* ``records``: one line as a record and back (``parse_inbound_line``, ``format_inbound_line``): the
  trait tokens, and the line error reasons.
* ``parser``: the streaming parser of one file, with its per-file rules and the receipt's counters
  (``InboundParser``, ``InboundCounters``).
* ``writer``: a file's parts from rows (``InboundWriter``, ``write_inbound``).

Every public name of these modules is importable from this package too.
"""

from shared.formats.inbound.names import (
    PREFIX,
    InboundFileName,
    InboundMode,
    inbound_name,
    inbound_object_key,
    parse_inbound_name,
)
from shared.formats.inbound.parser import MAX_LINES_PER_USER, R_OVER_USER_LIMIT, InboundCounters, InboundParser
from shared.formats.inbound.records import (
    MAX_LINE_BYTES,
    MAX_TRAIT_ID,
    R_BAD_TOKEN,
    R_NO_TAB,
    R_TWO_TABS,
    InboundItem,
    InboundRecord,
    InboundRow,
    format_inbound_line,
    parse_inbound_line,
)
from shared.formats.inbound.writer import DEFAULT_MAX_PART_BYTES, InboundWriter, write_inbound
from shared.formats.lines import R_EMPTY_USER_ID, R_INVALID_ID, R_NOT_UTF8, R_TOO_LONG

__all__ = [
    "DEFAULT_MAX_PART_BYTES",
    "MAX_LINES_PER_USER",
    "MAX_LINE_BYTES",
    "MAX_TRAIT_ID",
    "PREFIX",
    "R_BAD_TOKEN",
    "R_EMPTY_USER_ID",
    "R_INVALID_ID",
    "R_NOT_UTF8",
    "R_NO_TAB",
    "R_OVER_USER_LIMIT",
    "R_TOO_LONG",
    "R_TWO_TABS",
    "InboundCounters",
    "InboundFileName",
    "InboundItem",
    "InboundMode",
    "InboundParser",
    "InboundRecord",
    "InboundRow",
    "InboundWriter",
    "format_inbound_line",
    "inbound_name",
    "inbound_object_key",
    "parse_inbound_line",
    "parse_inbound_name",
    "write_inbound",
]
