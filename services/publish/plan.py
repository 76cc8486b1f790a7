"""The pure part of publishing a run: which files it writes, how they split into parts, what each line says.

No I/O here: the functions take counts and values and return names, plans and bytes, so the rules that
make files deterministic per run (and so safe to rewrite after a crash) are unit-tested on their own.

* A run of mode ``append`` or ``mirror`` writes one ``.sync`` file set: ``d_sid=<trait>`` lines for the
  IDs to add and ``d_unsid=<trait>`` lines for the IDs to remove.
* A ``full`` run writes an ``.overwrite`` set for the complete audience (each line carrying every trait
  the bridge exported to that user in the data source, since an overwrite replaces them all) and a
  ``.sync`` set of ``d_unsid=`` lines for the IDs that left (an overwrite cannot remove a user it does
  not list).
* A set of ``n`` rows is cut into parts of at most ``max_part_bytes // max_line_bytes`` lines, so no
  part exceeds the size limit whatever its lines hold; one part keeps the unnumbered name.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from isal import isal_zlib

from shared.formats import InvalidRecord
from shared.formats.inbound import InboundFileName, InboundMode, format_inbound_line, inbound_object_key
from shared.logging import redact_text
from shared.messages import ExportMode

# Which staged rows feed a file set.
RowSource = Literal["changes", "adds", "removes"]

_TAB_NL: Final = 2  # the TAB after the user id and the line's "\n"
_SID: Final = len("d_sid=")
_UNSID: Final = len("d_unsid=")
_GZIP_WBITS: Final = 31  # gzip container, 32 KiB window: the only compression the platform reads
DEFAULT_EXPORT_GZIP_LEVEL: Final = 1
MAX_REASON_CHARS: Final = 1000
# What one more trait adds to an .overwrite line besides its digits: ",d_sid=".
OTHER_TRAIT_FIXED_BYTES: Final = 1 + _SID


@dataclass(frozen=True, slots=True)
class FileSet:
    """One kind of file a run writes, and which of its staged rows go into it."""

    mode: InboundMode
    rows: RowSource


def file_sets(export_mode: ExportMode) -> tuple[FileSet, ...]:
    if export_mode == "full":
        return (FileSet("overwrite", "adds"), FileSet("sync", "removes"))
    return (FileSet("sync", "changes"),)


def file_timestamp(started_at: datetime) -> int:
    """The 10-digit unix seconds of a run's file names: its start, so names are fixed per run."""
    return int(started_at.timestamp())


@dataclass(frozen=True, slots=True)
class PartPlan:
    """One file to write: its name, and which lines of the set's ordered rows it holds."""

    name: InboundFileName
    first_line: int  # 0-based position in the set's rows
    lines: int


def lines_per_part(max_line_bytes: int, max_part_bytes: int) -> int:
    if max_line_bytes < 1 or max_part_bytes < 1:
        raise ValueError("line and part sizes must be positive")
    if max_line_bytes > max_part_bytes:
        raise InvalidRecord("a line is longer than the part size", line_bytes=max_line_bytes, part=max_part_bytes)
    return max_part_bytes // max_line_bytes


def plan_parts(base: InboundFileName, rows: int, max_line_bytes: int, max_part_bytes: int) -> list[PartPlan]:
    """Cut ``rows`` lines of at most ``max_line_bytes`` each into parts of at most ``max_part_bytes``.

    Parts are balanced (sizes differ by one line at most) and numbered from 1 when there are several;
    no rows means no file at all, since the platform rejects empty files.
    """
    if base.part is not None:
        raise ValueError("the plan numbers parts itself: give a name without part")
    if rows <= 0:
        return []
    per_part = lines_per_part(max_line_bytes, max_part_bytes)
    count = math.ceil(rows / per_part)
    if count == 1:
        return [PartPlan(base, 0, rows)]
    size, extra = divmod(rows, count)
    plans: list[PartPlan] = []
    first = 0
    for number in range(1, count + 1):
        lines = size + (1 if number <= extra else 0)
        plans.append(PartPlan(base.with_part(number), first, lines))
        first += lines
    return plans


def object_key(partner: str, name: InboundFileName) -> str:
    """``<partner>/date=<UTC day of the name's timestamp>/<name>``: the same key on every retry."""
    return inbound_object_key(partner, name)


# --- lines -------------------------------------------------------------------------------------------------


def sync_overhead(trait: int, is_add: bool) -> int:
    """Bytes of a ``.sync`` line besides the user id (the SQL plan adds this to ``octet_length(id)``)."""
    return _TAB_NL + (_SID if is_add else _UNSID) + len(str(trait))


def overwrite_overhead(own_trait: int) -> int:
    """Bytes of an ``.overwrite`` line besides the user id and the other audiences' traits."""
    return _TAB_NL + _SID + len(str(own_trait))


def other_trait_bytes(trait: int) -> int:
    """What one more trait adds to an ``.overwrite`` line: ``,d_sid=<trait>``."""
    return OTHER_TRAIT_FIXED_BYTES + len(str(trait))


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


# --- encoding ----------------------------------------------------------------------------------------------


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


# --- outcome -----------------------------------------------------------------------------------------------


def run_counts(
    totals: Mapping[str, int] | None, recorded: Mapping[str, int], *, added: int, removed: int
) -> dict[str, int]:
    """The counts of a finished export run: ``received`` and ``excluded`` as reconcile counted them (the
    last batch's totals, else the run row's), ``added``/``removed`` as written to the platform."""
    source = {**recorded, **(totals or {})}
    return {
        "received": int(source.get("received", 0)),
        "added": added,
        "removed": removed,
        "excluded": int(source.get("excluded", 0)),
    }


def failure_reason(step: str, exc: BaseException) -> str:
    """Why a run failed, fit for the run row and a status event: bounded, secrets masked."""
    detail = redact_text(str(exc)) or type(exc).__name__
    return f"{step}: {detail}"[:MAX_REASON_CHARS]
