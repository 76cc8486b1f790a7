"""Outbound file names: the parts of a batch, and its ``.info`` control file.

Name::

    <sync type>_<destination id>_<master DPID>[_<PID alias>]_(iter|full)_<UTC unix ms>[<part>].sync[.gz]

with a 13-digit timestamp.

``<part>`` is a zero-padded number of at least 3 digits (``001``) appended to the timestamp; the
contract's ``.info`` page shows a ``-1`` style instead, so both are read and the builder's style is a
parameter (``split_style``). An unsplit batch has no part number. The *batch root* is the name up to
the timestamp; the batch's control file is ``<batch root>.info`` and lists every part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from shared.formats import BadFileName
from shared.formats.fields import digits

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
    """A parsed or to-be-built outbound part name. ``str()`` gives the name."""

    sync_type: SyncType
    destination_id: int
    master_dpid: int
    mode: OutboundMode
    timestamp_ms: int  # UTC unix milliseconds, 13 digits
    part: int | None = None  # 1-based; None for an unsplit batch
    gzip: bool = False
    pid_alias: str | None = None
    split_style: SplitStyle = "padded"

    def __post_init__(self) -> None:
        problem = None
        if self.sync_type not in SYNC_TYPES:
            problem = f"sync type must be one of {', '.join(SYNC_TYPES)}"
        elif self.destination_id < 0 or self.master_dpid < 0:
            problem = "ids must not be negative"
        elif self.pid_alias is not None and not _alias_ok(self.pid_alias):
            problem = "PID alias must be ASCII letters, digits and '-'"
        elif self.mode not in ("iter", "full"):
            problem = "mode must be iter or full"
        elif not 1_000_000_000_000 <= self.timestamp_ms <= 9_999_999_999_999:
            problem = "timestamp is not 13 digits"
        elif self.part is not None and self.part < 1:
            problem = "part number must be at least 1"
        elif self.split_style not in ("padded", "dash"):
            problem = "split style must be padded or dash"
        if problem is not None:
            raise BadFileName(f"{self.sync_type}_{self.destination_id}_{self.master_dpid}_…", problem)

    @property
    def batch_root(self) -> str:
        alias = "" if self.pid_alias is None else f"_{self.pid_alias}"
        ids = f"{self.sync_type}_{self.destination_id}_{self.master_dpid}{alias}"
        return f"{ids}_{self.mode}_{self.timestamp_ms}"

    @property
    def name(self) -> str:
        if self.part is None:
            part = ""
        elif self.split_style == "padded":
            part = f"{self.part:03d}"
        else:
            part = f"-{self.part}"
        return f"{self.batch_root}{part}.sync{'.gz' if self.gzip else ''}"

    def __str__(self) -> str:
        return self.name

    @property
    def info_name(self) -> str:
        return self.batch_root + INFO_SUFFIX

    @property
    def totals_name(self) -> str:
        """The batch as a whole, as the ``.info`` ``Totals`` names it (the unsplit, uncompressed name)."""
        return self.batch_root + ".sync"

    def with_part(self, part: int | None) -> OutboundFileName:
        return OutboundFileName(
            self.sync_type,
            self.destination_id,
            self.master_dpid,
            self.mode,
            self.timestamp_ms,
            part,
            self.gzip,
            self.pid_alias,
            self.split_style,
        )

    def part_name(self, part: int | None) -> str:
        return self.with_part(part).name


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
    if not digits(stamp):
        raise BadFileName(name, "timestamp is not a number")
    if len(stamp) > 13 and part is None:
        if len(stamp) < 16:
            raise BadFileName(name, "part number after the timestamp must have at least 3 digits")
        stamp, part = stamp[:13], int(stamp[13:])
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
