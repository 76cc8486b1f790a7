"""Outbound file names: the parts of a batch, and its ``.info`` control file.

The documented default name::

    <sync type>_<destination id>_<master DPID>[_<PID alias>]_(iter|full)_<UTC unix ms>[<part>].sync[.gz]

with a 13-digit timestamp. ``<part>`` is a zero-padded number of at least 3 digits (``001``) appended to the
timestamp; the ``.info`` page shows a ``-1`` style instead, so both are read and the builder's style is a
parameter (``split_style``). An unsplit batch has no part number. The *batch root* is the name up to the
part number; the batch's control file is ``<batch root>.info`` and lists every part.

A destination may name its files with a template of its own (:mod:`.templates`): an ``OutboundFileName``
then carries its :class:`~.templates.NameTemplate`, which reads and writes its names. :class:`OutboundNames`
(:mod:`.name_grammar`) is the set a deployment configures, one template per destination and a default for
the others.

What routing needs from a name: ``destination_id`` (the ``ORDER_ID``, or the destination the template is
configured for) and ``master_dpid``, the data source whose IDs the file holds: ``MASTER_DPID`` ("User ID Key
Data Provider ID") when the name has it, else ``DPID`` ("Data provider ID", which names the destination's
own data source), else None.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final, Literal

from shared.formats import BadFileName
from shared.formats.fields import digits
from shared.formats.outbound.templates import NameFields, NameTemplate, split_suffix, sync_type_ok

SyncType = Literal["ftp", "s3", "S3", "http"]
OutboundMode = Literal["iter", "full"]
SplitStyle = Literal["padded", "dash"]

SYNC_TYPES: Final[tuple[SyncType, ...]] = ("ftp", "s3", "S3", "http")
INFO_SUFFIX: Final = ".info"

_ALIAS_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")


def _alias_ok(s: str) -> bool:
    # No '_' (it separates the name's fields) nor '.' (it starts the suffixes).
    return bool(s) and _ALIAS_CHARS.issuperset(s)


@dataclass(frozen=True, slots=True)
class OutboundFileName:
    """A parsed or to-be-built outbound part name. ``str()`` gives the name.

    With ``template`` None the name follows the documented default (every id then required); with a
    template, the fields it names. ``dpid`` is the ``DPID`` macro's value where a template has one.
    """

    sync_type: SyncType | None
    destination_id: int | None
    master_dpid: int | None
    mode: OutboundMode
    timestamp_ms: int  # UTC unix milliseconds (a whole second when the name carries seconds)
    part: int | None = None  # 1-based; None for an unsplit batch
    gzip: bool = False
    pid_alias: str | None = None
    split_style: SplitStyle = "padded"
    dpid: int | None = None
    template: NameTemplate | None = None

    def __post_init__(self) -> None:
        if self.template is not None:
            self._normalise()
        problem = self._problem()
        if problem is not None:
            raise BadFileName(f"{self.sync_type}_{self.destination_id}_{self.master_dpid}_…", problem)

    def _normalise(self) -> None:
        """Fill what a template implies: its destination, and DPID as the master DPID when it has only DPID."""
        t = self.template
        assert t is not None
        if "ORDER_ID" not in t.fields and t.destination_id is not None and self.destination_id is None:
            object.__setattr__(self, "destination_id", t.destination_id)
        if "DPID" in t.fields and "MASTER_DPID" not in t.fields:
            if self.dpid is None:
                object.__setattr__(self, "dpid", self.master_dpid)
            elif self.master_dpid is None:
                object.__setattr__(self, "master_dpid", self.dpid)

    def _problem(self) -> str | None:
        ids = (self.destination_id, self.master_dpid, self.dpid)
        if not sync_type_ok(self.sync_type):
            return f"sync type must be one of {', '.join(SYNC_TYPES)}"
        if any(i is not None and i < 0 for i in ids):
            return "ids must not be negative"
        if self.pid_alias is not None and not _alias_ok(self.pid_alias):
            return "PID alias must be ASCII letters, digits and '-'"
        if self.mode not in ("iter", "full"):
            return "mode must be iter or full"
        if self.part is not None and self.part < 1:
            return "part number must be at least 1"
        if self.split_style not in ("padded", "dash"):
            return "split style must be padded or dash"
        if self.template is None:
            if self.sync_type is None or self.destination_id is None or self.master_dpid is None:
                return "the default name carries a sync type, a destination id and a master DPID"
            if not 1_000_000_000_000 <= self.timestamp_ms <= 9_999_999_999_999:
                return "timestamp is not 13 digits"
            return None
        return _template_problem(self, self.template)

    def _fields(self) -> NameFields:
        t = self.template
        return NameFields(
            self.sync_type,
            self.destination_id if t is None or "ORDER_ID" in t.fields else None,
            self.dpid,
            self.master_dpid,
            self.pid_alias,
            self.mode,
            self.timestamp_ms,
            self.part,
            self.split_style,
            self.gzip,
        )

    @property
    def batch_root(self) -> str:
        if self.template is not None:
            return self.template.render_root(self._fields())
        alias = "" if self.pid_alias is None else f"_{self.pid_alias}"
        ids = f"{self.sync_type}_{self.destination_id}_{self.master_dpid}{alias}"
        return f"{ids}_{self.mode}_{self.timestamp_ms}"

    @property
    def extension(self) -> str:
        return ".sync" if self.template is None else self.template.extension

    @property
    def name(self) -> str:
        part = split_suffix(self.part, self.split_style)
        return f"{self.batch_root}{part}{self.extension}{'.gz' if self.gzip else ''}"

    def __str__(self) -> str:
        return self.name

    @property
    def info_name(self) -> str:
        return self.batch_root + INFO_SUFFIX

    @property
    def totals_name(self) -> str:
        """The batch as a whole, as the ``.info`` ``Totals`` names it (the unsplit, uncompressed name)."""
        return self.batch_root + self.extension

    def with_part(self, part: int | None) -> OutboundFileName:
        return dataclasses.replace(self, part=part)

    def part_name(self, part: int | None) -> str:
        return self.with_part(part).name


def _template_problem(n: OutboundFileName, t: NameTemplate) -> str | None:
    values = {
        "SYNC_TYPE": n.sync_type,
        "ORDER_ID": n.destination_id,
        "DPID": n.dpid,
        "MASTER_DPID": n.master_dpid,
    }
    missing = [f for f, v in values.items() if f in t.fields and v is None]
    if missing:
        return f"the name template needs <{missing[0]}>"
    if t.unit == "ms" and not 1_000_000_000_000 <= n.timestamp_ms <= 9_999_999_999_999:
        return "timestamp is not 13 digits"
    if t.unit == "s" and (n.timestamp_ms % 1000 or not 1_000_000_000 <= n.timestamp_ms // 1000 <= 9_999_999_999):
        return "timestamp is not a whole second of 10 digits"
    return None


def outbound_name(
    sync_type: SyncType,
    destination_id: int,
    master_dpid: int,
    mode: OutboundMode,
    timestamp_ms: int,
    *,
    part: int | None = None,
    gzip: bool = False,
    pid_alias: str | None = None,
    split_style: SplitStyle = "padded",
) -> str:
    return OutboundFileName(
        sync_type, destination_id, master_dpid, mode, timestamp_ms, part, gzip, pid_alias, split_style
    ).name


def _sync_type(name: str, s: str) -> SyncType:
    for t in SYNC_TYPES:
        if s == t:
            return t
    raise BadFileName(name, f"sync type must be one of {', '.join(SYNC_TYPES)}")


def _mode(name: str, s: str) -> OutboundMode:
    if s == "iter":
        return "iter"
    if s == "full":
        return "full"
    raise BadFileName(name, "mode must be iter or full")


def parse_outbound_name(name: str) -> OutboundFileName:
    """Parse a part name (no directory). Raises ``BadFileName`` with the first problem found."""
    rest = name
    gzip = rest.endswith(".gz")
    if gzip:
        rest = rest[:-3]
    if not rest.endswith(".sync"):
        raise BadFileName(name, "does not end with .sync or .sync.gz")
    fields = rest[:-5].split("_")
    if len(fields) not in (5, 6):
        raise BadFileName(name, "expected <type>_<destination>_<master DPID>[_<alias>]_<mode>_<timestamp>")
    sync_type = _sync_type(name, fields[0])
    if not (digits(fields[1]) and digits(fields[2])):
        raise BadFileName(name, "destination id and master DPID must be numbers")
    alias = fields[3] if len(fields) == 6 else None
    if alias is not None and not _alias_ok(alias):
        raise BadFileName(name, "PID alias must be ASCII letters, digits and '-'")
    mode = _mode(name, fields[-2])
    stamp = fields[-1]
    part: int | None = None
    style: SplitStyle = "padded"
    if "-" in stamp:
        stamp, _, part_s = stamp.partition("-")
        if not digits(part_s):
            raise BadFileName(name, "part number after '-' is not a number")
        part, style = int(part_s), "dash"
        if part_s != str(part):
            raise BadFileName(name, "part number after '-' has leading zeros")
    if not digits(stamp):
        raise BadFileName(name, "timestamp is not a number")
    if len(stamp) > 13 and part is None:
        if len(stamp) < 16:
            raise BadFileName(name, "part number after the timestamp must have at least 3 digits")
        stamp, part = stamp[:13], int(stamp[13:])
        # A name reads back to itself only: "0001" would be part 1, whose name is "001".
        if stamp + split_suffix(part, "padded") != fields[-1] and part:
            raise BadFileName(name, "part number after the timestamp has extra leading zeros")
    if len(stamp) != 13:
        raise BadFileName(name, "timestamp is not 13 digits")
    return OutboundFileName(sync_type, int(fields[1]), int(fields[2]), mode, int(stamp), part, gzip, alias, style)


def batch_root_of(name: str) -> str:
    """The batch root of a part name or of a ``.info`` name: the key to group parts with their info."""
    if name.endswith(INFO_SUFFIX):
        root = name[: -len(INFO_SUFFIX)]
        parsed = parse_outbound_name(root + ".sync")
        if parsed.part is not None:
            raise BadFileName(name, "a .info name has no part number")
        return root
    return parse_outbound_name(name).batch_root


def info_name_for(batch_root: str) -> str:
    """``<batch root>.info``; raises ``BadFileName`` when ``batch_root`` is not one."""
    if batch_root_of(batch_root + ".sync") != batch_root:
        raise BadFileName(batch_root, "not a batch root (it carries a part number)")
    return batch_root + INFO_SUFFIX


def is_info_name(name: str) -> bool:
    return name.endswith(INFO_SUFFIX)
