"""A run's file layout: which file sets it writes, their names, and how each set is cut into parts.

No I/O here: the functions take counts and values and return names and plans, so the rules that make
files deterministic per run (and so safe to rewrite after a crash) are unit-tested on their own. What
each line says and how a part is compressed is :mod:`services.publish.encoding`.

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

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from shared.formats import InvalidRecord
from shared.formats.inbound.names import InboundFileName, InboundMode, inbound_object_key
from shared.messages import ExportMode

# Which staged rows feed a file set.
RowSource = Literal["changes", "adds", "removes"]


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
