"""Inbound file names: what the bridge names its export files, and where it puts them.

Name::

    ftp_dpm_<DPID>[_<target DPID>]_<10-digit UTC unix seconds>.(sync|overwrite)[.<part>][.gz]

placed under ``<partner>/date=YYYY-MM-DD/`` (the UTC upload date).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Final, Literal

from shared.formats import BadFileName
from shared.formats.fields import digits

InboundMode = Literal["sync", "overwrite"]

PREFIX: Final = "ftp_dpm_"


@dataclass(frozen=True, slots=True)
class InboundFileName:
    """A parsed or to-be-built inbound file name. ``str()`` gives the name."""

    dpid: int
    timestamp: int  # UTC unix seconds, 10 digits
    mode: InboundMode = "sync"
    part: int | None = None  # 1-based; None for an unsplit file
    gzip: bool = False
    target_dpid: int | None = None  # data source owning the traits, when dpid is a device data source

    def __post_init__(self) -> None:
        problem = None
        if self.dpid < 0 or (self.target_dpid is not None and self.target_dpid < 0):
            problem = "DPID must not be negative"
        elif not 1_000_000_000 <= self.timestamp <= 9_999_999_999:
            problem = "timestamp is not 10 digits"
        elif self.mode not in ("sync", "overwrite"):
            problem = "mode must be sync or overwrite"
        elif self.part is not None and self.part < 1:
            problem = "part number must be at least 1"
        if problem is not None:
            raise BadFileName(f"{PREFIX}{self.dpid}_{self.timestamp}.{self.mode}", problem)

    @property
    def name(self) -> str:
        target = "" if self.target_dpid is None else f"_{self.target_dpid}"
        part = "" if self.part is None else f".{self.part}"
        gz = ".gz" if self.gzip else ""
        return f"{PREFIX}{self.dpid}{target}_{self.timestamp}.{self.mode}{part}{gz}"

    def __str__(self) -> str:
        return self.name

    def with_part(self, part: int | None) -> InboundFileName:
        return InboundFileName(self.dpid, self.timestamp, self.mode, part, self.gzip, self.target_dpid)

    def part_name(self, part: int | None) -> str:
        return self.with_part(part).name

    @property
    def upload_date(self) -> date:
        """The UTC date of the name's timestamp: the default ``date=`` folder."""
        return datetime.fromtimestamp(self.timestamp, UTC).date()


def inbound_name(
    dpid: int,
    timestamp: int,
    mode: InboundMode = "sync",
    *,
    part: int | None = None,
    gzip: bool = False,
    target_dpid: int | None = None,
) -> str:
    return InboundFileName(dpid, timestamp, mode, part, gzip, target_dpid).name


def parse_inbound_name(name: str) -> InboundFileName:
    """Parse a file name (no directory). Raises ``BadFileName`` with the first problem found."""
    if not name.startswith(PREFIX):
        raise BadFileName(name, f"does not start with {PREFIX!r}")
    rest = name[len(PREFIX) :]
    if rest.startswith("odc_"):
        raise BadFileName(name, "the Oracle Data Cloud variant (ftp_dpm_odc_) is not supported")
    if rest.endswith((".pgp", ".gpg")):
        raise BadFileName(name, "PGP-encrypted files are not supported")
    gzip = rest.endswith(".gz")
    if gzip:
        rest = rest[:-3]
    pieces = rest.split(".")
    part: int | None = None
    if len(pieces) == 3:
        if not digits(pieces[2]):
            raise BadFileName(name, "part number is not a number")
        part = int(pieces[2])
    elif len(pieces) != 2:
        raise BadFileName(name, "expected <ids>.(sync|overwrite)[.<part>][.gz]")
    stem = pieces[0]
    mode: InboundMode
    if pieces[1] == "sync":
        mode = "sync"
    elif pieces[1] == "overwrite":
        mode = "overwrite"
    else:
        raise BadFileName(name, "mode must be sync or overwrite")
    ids = stem.split("_")
    if len(ids) not in (2, 3) or not all(digits(i) for i in ids):
        raise BadFileName(name, "expected <DPID>[_<target DPID>]_<timestamp> after 'ftp_dpm_'")
    if len(ids[-1]) != 10:
        raise BadFileName(name, "timestamp is not 10 digits")
    target = int(ids[1]) if len(ids) == 3 else None
    return InboundFileName(int(ids[0]), int(ids[-1]), mode, part, gzip, target)


def inbound_object_key(partner: str, file_name: InboundFileName, upload_date: date | None = None) -> str:
    """``<partner>/date=YYYY-MM-DD/<name>``, the key layout the platform polls."""
    if not partner or "/" in partner:
        raise BadFileName(file_name.name, "partner must be a non-empty path segment")
    day = upload_date or file_name.upload_date
    return f"{partner}/date={day.isoformat()}/{file_name.name}"
