"""The platform's *outbound* batch files and ``.info`` control files: what the bridge reads on import
(ecsim writes them).

* ``names``: the grammar of part names and ``.info`` names (``OutboundFileName``, ``parse_outbound_name``,
  ``batch_root_of``): the documented default.
* ``templates``: names made by a destination's template of the platform's macros (``NameTemplate``).
* ``name_grammar``: the names a deployment reads, a template per destination (``OutboundNames``).
* ``info``: the ``.info`` control file (``InfoFile``, ``parse_info``, ``build_info``).
* ``records``: one line as a record and back (``parse_outbound_line``, ``format_outbound_line``), and the
  line error reasons.
* ``headers``: which lines before a part's records are header rows.
* ``parser``: the streaming parser of one part (``OutboundParser``, ``RecordBlock``, ``OutboundCounters``).
* ``writer``: a batch's parts and ``.info`` from rows (``OutboundWriter``), strict or in a ``LineLayout``.

Every public name of these modules is importable from this package too.
"""

from shared.formats.lines import R_EMPTY_USER_ID, R_INVALID_ID, R_NOT_UTF8, R_TOO_LONG
from shared.formats.outbound.info import BadInfoFile, InfoFile, InfoFileEntry, InfoTotals, build_info, parse_info
from shared.formats.outbound.name_grammar import DEFAULT_NAMES, OutboundNames, name_template
from shared.formats.outbound.names import (
    INFO_SUFFIX,
    SYNC_TYPES,
    OutboundFileName,
    OutboundMode,
    SplitStyle,
    SyncType,
    batch_root_of,
    info_name_for,
    is_info_name,
    outbound_name,
    parse_outbound_name,
)
from shared.formats.outbound.parser import MAX_HELD_LINES, OutboundCounters, OutboundParser, RecordBlock
from shared.formats.outbound.records import (
    MAX_LINE_BYTES,
    MAX_SEGMENT_ID,
    R_AMBIGUOUS,
    R_BAD_SEGMENT,
    R_FIELDS,
    R_NO_SEGMENTS,
    OutboundItem,
    OutboundRecord,
    OutboundRow,
    format_outbound_line,
    parse_outbound_line,
)
from shared.formats.outbound.templates import BadTemplate, NameTemplate
from shared.formats.outbound.writer import DEFAULT_MAX_PART_BYTES, LineEnds, LineLayout, OutboundWriter

__all__ = [
    "DEFAULT_MAX_PART_BYTES",
    "DEFAULT_NAMES",
    "INFO_SUFFIX",
    "MAX_HELD_LINES",
    "MAX_LINE_BYTES",
    "MAX_SEGMENT_ID",
    "R_AMBIGUOUS",
    "R_BAD_SEGMENT",
    "R_EMPTY_USER_ID",
    "R_FIELDS",
    "R_INVALID_ID",
    "R_NOT_UTF8",
    "R_NO_SEGMENTS",
    "R_TOO_LONG",
    "SYNC_TYPES",
    "BadInfoFile",
    "BadTemplate",
    "InfoFile",
    "InfoFileEntry",
    "InfoTotals",
    "LineEnds",
    "LineLayout",
    "NameTemplate",
    "OutboundCounters",
    "OutboundFileName",
    "OutboundItem",
    "OutboundMode",
    "OutboundNames",
    "OutboundParser",
    "OutboundRecord",
    "OutboundRow",
    "OutboundWriter",
    "RecordBlock",
    "SplitStyle",
    "SyncType",
    "batch_root_of",
    "build_info",
    "format_outbound_line",
    "info_name_for",
    "is_info_name",
    "name_template",
    "outbound_name",
    "parse_info",
    "parse_outbound_line",
    "parse_outbound_name",
]
