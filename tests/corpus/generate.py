"""Builds the bad-input corpus: every file under ``tests/corpus/`` and its ``manifest.yaml``.

    python -m tests.corpus.generate          # rewrite the corpus (deterministic: same bytes every time)
    python -m tests.corpus.generate --check  # exit 1 if the checked-in corpus differs (also a unit test)

Each case models a mistake a real deployment meets: a transfer cut short, a file written by the wrong
tool, a ``.info`` that lies, an upstream producer with a bug, an operator's typo. The files are what the
bridge (or ecsim, for inbound files) receives, byte for byte; the manifest says what must become of each:

* ``rejected``: the batch's files end in ``rejected/`` with a ``.reason.txt`` containing ``reason``, the
  ledger says ``rejected`` and a ``failed`` status event carries the reason;
* ``counted``: the batch is processed, its bad lines (``invalid_lines``, on ingest's status event) and bad
  IDs (``invalid_ids``, in reconcile's run counts and ``unmatched_id``) are counted, and the list holds
  exactly ``members`` (recipient ids) from its good lines;
* ``dlq``: the message is dead-lettered with ``reason`` in its ``dlq.reason`` header (``failed_status``:
  a ``failed`` status event says the same);
* ``blocked``: a ``blocked`` status event carries the reason; nothing is written;
* ``refused``: Kafka itself refuses the value (it is over the broker's limit): the producer gets a
  typed error and nothing reaches a service;
* ``ecsim-rejected`` / ``ecsim-counted``: ecsim (the platform) rejects the inbound file with the reason,
  or processes it with the ``receipt`` counters;
* ``config-error``: the catalog loader refuses the file with a ``ConfigError`` containing ``reason``.

Outbound cases each feed their own import audience (``segment``, ``audience``), so their good lines can be
asserted one case at a time. Recipients and their IDs are those of ``tests.fixtures.bridge_db``.
"""

from __future__ import annotations

import gzip
import hashlib
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson
import yaml

from shared.formats.inbound import inbound_name
from shared.formats.outbound import OutboundFileName, build_info
from shared.formats.parts import PartSummary, PartWriter, collect_parts
from tests.fixtures.bridge_db import ecid_of, hashed_email_of

CORPUS_DIR: Final = Path(__file__).resolve().parent
MANIFEST: Final = CORPUS_DIR / "manifest.yaml"
DATA_DIRS: Final = ("outbound", "outbound-names", "segment-events", "membership", "export-requests")
DATA_DIRS_2: Final = ("export-batches", "inbound", "catalog")

DESTINATION: Final = 7001
MASTER_DPID: Final = 1001
DPID_OF: Final = {"visitors": MASTER_DPID, "hashed-emails": 1002}  # the fixtures' data sources
FIRST_SEGMENT: Final = 6001
BASE_TS: Final = 1_700_000_000_000
EVENTS_SEGMENT: Final = 6500  # the audience every segment event names (a visitors audience)
MEMBERSHIP_AUDIENCE: Final = "corpus-membership"  # a visitors audience fed only by membership batches
INBOUND_DAY: Final = "2024-05-01"
INBOUND_TS: Final = 1_714_521_600  # 2024-05-01T00:00:00Z
INBOUND_PARTNER: Final = "acme"
INBOUND_COOKIE_DPID: Final = 1001  # ecsim data source of ECIDs with onboarded trait INBOUND_TRAIT
INBOUND_TRAIT: Final = 9101

Files = dict[str, bytes]


@dataclass
class Case:
    id: str
    kind: str
    expect: str
    description: str
    files: Files
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def entry(self, folder: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "expect": self.expect,
            "description": self.description,
            "files": [f"{folder}/{name}" for name in self.files],
        }
        if self.reason:
            out["reason"] = self.reason
        out.update(self.extra)
        return out


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


# ------------------------------------------------------------------------------------- outbound batches


class _Outbound:
    """Numbers outbound cases: each gets its own batch timestamp, segment and import audience."""

    def __init__(self) -> None:
        self.cases: list[Case] = []

    def add(
        self,
        id: str,
        description: str,
        build: Callable[[OutboundFileName, int], Files],
        *,
        expect: str,
        reason: str = "",
        mode: str = "full",
        gzip: bool = False,
        data_source: str = "visitors",
        members: list[int] | None = None,
        invalid_lines: int | None = None,
        invalid_ids: int | None = None,
        unmatched: dict[str, str] | None = None,
        waits_for_timeout: bool = False,
    ) -> None:
        k = len(self.cases)
        segment = FIRST_SEGMENT + k
        # A file's master DPID is the data source whose IDs it holds: it decides which audiences it feeds.
        dpid = DPID_OF[data_source]
        batch = OutboundFileName("s3", DESTINATION, dpid, mode, BASE_TS + k * 1000, gzip=gzip)  # type: ignore[arg-type]
        extra: dict[str, Any] = {
            "segment": segment,
            "audience": f"corpus-{id}",
            "data_source": data_source,
            "batch_root": batch.batch_root,
        }
        if members is not None:
            extra["members"] = members
        if invalid_lines is not None:
            extra["invalid_lines"] = invalid_lines
        if invalid_ids is not None:
            extra["invalid_ids"] = invalid_ids
        if unmatched is not None:
            extra["unmatched"] = unmatched
        if waits_for_timeout:
            extra["waits_for_timeout"] = True
        files = build(batch, segment)
        self.cases.append(Case(id, "outbound-batch", expect, description, files, reason, extra))


def _parts(batch: OutboundFileName, lines: list[bytes], max_part_bytes: int = 8 << 20) -> list[tuple[str, bytes]]:
    """Raw lines (each ending in a newline, malformed or not) as the batch's stored parts."""
    writer = PartWriter(batch.part_name, gzip=batch.gzip, max_part_bytes=max_part_bytes)
    return [(p.summary.name, p.data) for p in collect_parts(writer.write(lines))]


def _truthful(batch: OutboundFileName, lines: list[bytes], max_part_bytes: int = 8 << 20) -> Files:
    """Parts plus a ``.info`` that tells the truth about them."""
    writer = PartWriter(batch.part_name, gzip=batch.gzip, max_part_bytes=max_part_bytes)
    parts = list(collect_parts(writer.write(lines)))
    files = {p.summary.name: p.data for p in parts}
    files[batch.info_name] = build_info(batch, [p.summary for p in parts]).to_json()
    return files


def _info_json(entries: list[dict[str, Any]], totals_name: str) -> bytes:
    totals = {
        "FileName": totals_name,
        "TotalByteSize": sum(e["FileByteSize"] for e in entries),
        "TotalNumberFiles": len(entries),
        "TotalNumberLines": sum(e["FileLineCount"] for e in entries),
    }
    return orjson.dumps({"Files": entries, "Totals": totals})


def _entry(name: str, data: bytes, lines: int, seq: int = 1) -> dict[str, Any]:
    return {
        "FileName": name,
        "FileByteSize": len(data),
        "FileLineCount": lines,
        "FileSequenceNumber": seq,
        "md5": _md5(data),
    }


def _good(segment: int, recipients: range) -> list[bytes]:
    return [f"{ecid_of(r)} {segment} \n".encode() for r in recipients]


def outbound_cases() -> list[Case]:
    o = _Outbound()

    # --- the batch as a whole is wrong: rejected, never half-imported --------------------------------
    def gzip_truncated(b: OutboundFileName, seg: int) -> Files:
        [(name, data)] = _parts(b, _good(seg, range(1, 200)))
        cut = data[: len(data) // 2]
        return {name: cut, b.info_name: _info_json([_entry(name, cut, 199)], b.totals_name)}

    o.add(
        "gzip-truncated",
        "A .sync.gz cut mid-stream by the platform itself: the .info matches the short file.",
        gzip_truncated,
        gzip=True,
        expect="rejected",
        reason="truncated gzip stream",
    )

    def gzip_cut_in_transfer(b: OutboundFileName, seg: int) -> Files:
        files = _truthful(b, _good(seg, range(1, 200)))
        name = b.name
        files[name] = files[name][: len(files[name]) - 40]
        return files

    o.add(
        "gzip-cut-in-transfer",
        "A .sync.gz whose transfer stopped early: shorter than its .info says.",
        gzip_cut_in_transfer,
        gzip=True,
        expect="rejected",
        reason="part size differs from the .info",
    )

    def gzip_not_gzip(b: OutboundFileName, seg: int) -> Files:
        plain = b"".join(_good(seg, range(1, 6)))
        return {b.name: plain, b.info_name: _info_json([_entry(b.name, plain, 5)], b.totals_name)}

    o.add(
        "gzip-not-gzip",
        "A part named .sync.gz that holds plain text (compression switched off upstream).",
        gzip_not_gzip,
        gzip=True,
        expect="rejected",
        reason="not a valid gzip stream",
    )

    def gzip_corrupt_crc(b: OutboundFileName, seg: int) -> Files:
        [(name, data)] = _parts(b, _good(seg, range(1, 40)))
        bad = data[:-8] + bytes([data[-8] ^ 0xFF]) + data[-7:]  # CRC32 trailer flipped
        return {name: bad, b.info_name: _info_json([_entry(name, bad, 39)], b.totals_name)}

    o.add(
        "gzip-bad-checksum",
        "A .sync.gz whose gzip CRC does not match its content (bit rot on the way).",
        gzip_corrupt_crc,
        gzip=True,
        expect="rejected",
        reason="not a valid gzip stream",
    )

    def lie(field_name: str, value: Any) -> Callable[[OutboundFileName, int], Files]:
        def build(b: OutboundFileName, seg: int) -> Files:
            parts = _parts(b, _good(seg, range(1, 31)))
            [(name, data)] = parts
            entry = _entry(name, data, 30)
            entry[field_name] = value(entry[field_name]) if callable(value) else value
            return {name: data, b.info_name: _info_json([entry], b.totals_name)}

        return build

    o.add(
        "info-wrong-size",
        "The .info gives a byte size that is not the part's.",
        lie("FileByteSize", lambda n: n + 1),
        expect="rejected",
        reason="part size differs from the .info",
    )
    o.add(
        "info-wrong-line-count",
        "The .info gives a line count that is not the part's.",
        lie("FileLineCount", lambda n: n + 5),
        expect="rejected",
        reason="part line count differs from the .info",
    )
    o.add(
        "info-wrong-md5",
        "The .info gives an md5 that is not the part's.",
        lie("md5", "0123456789abcdef0123456789abcdef"),
        expect="rejected",
        reason="part md5 differs from the .info",
    )

    def missing_part(b: OutboundFileName, seg: int) -> Files:
        parts = _parts(b, _good(seg, range(1, 101)), max_part_bytes=2000)
        info = build_info(b, [_summary(b, i + 1, name, data) for i, (name, data) in enumerate(parts)])
        files = dict(parts[:-1])  # the last part never arrives
        files[b.info_name] = info.to_json()
        return files

    o.add(
        "info-missing-part",
        "The .info lists a part that never arrives.",
        missing_part,
        expect="rejected",
        reason="parts listed in the .info never arrived",
        waits_for_timeout=True,
    )

    def extra_part(b: OutboundFileName, seg: int) -> Files:
        parts = _parts(b, _good(seg, range(1, 101)), max_part_bytes=2000)
        listed = parts[:-1]
        info = build_info(b, [_summary(b, i + 1, name, data) for i, (name, data) in enumerate(listed)])
        return {**dict(parts), b.info_name: info.to_json()}

    o.add(
        "info-extra-part",
        "A part arrives that the .info does not list.",
        extra_part,
        expect="rejected",
        reason="parts not listed in the .info",
    )

    def info_bytes(content: bytes) -> Callable[[OutboundFileName, int], Files]:
        def build(b: OutboundFileName, seg: int) -> Files:
            [(name, data)] = _parts(b, _good(seg, range(1, 11)))
            return {name: data, b.info_name: content}

        return build

    o.add(
        "info-not-json",
        "The .info is not JSON (an HTML error page saved under the name).",
        info_bytes(b"<html><body>502 Bad Gateway</body></html>\n"),
        expect="rejected",
        reason="bad .info file",
    )
    o.add(
        "info-empty",
        "The .info is an empty file.",
        info_bytes(b""),
        expect="rejected",
        reason="bad .info file",
    )
    o.add(
        "info-not-utf8",
        "The .info holds bytes that are not UTF-8.",
        info_bytes(b'{"Files": [], "Totals": {"FileName": "\xff\xfe"}}'),
        expect="rejected",
        reason="bad .info file",
    )
    o.add(
        "info-wrong-shape",
        "The .info is JSON of another shape: sizes as strings, Files as an object.",
        info_bytes(b'{"Files": {"FileName": "x"}, "Totals": {"FileName": "x", "TotalByteSize": "12"}}'),
        expect="rejected",
        reason="bad .info file",
    )

    def totals_lie(b: OutboundFileName, seg: int) -> Files:
        [(name, data)] = _parts(b, _good(seg, range(1, 11)))
        info = orjson.loads(_info_json([_entry(name, data, 10)], b.totals_name))
        info["Totals"]["TotalNumberLines"] = 11
        return {name: data, b.info_name: orjson.dumps(info)}

    o.add(
        "info-totals-do-not-add-up",
        "The .info's Totals disagree with its Files.",
        totals_lie,
        expect="rejected",
        reason="does not add up",
    )

    def listed_twice(b: OutboundFileName, seg: int) -> Files:
        [(name, data)] = _parts(b, _good(seg, range(1, 11)))
        entry = _entry(name, data, 10)
        return {name: data, b.info_name: _info_json([entry, {**entry, "FileSequenceNumber": 2}], b.totals_name)}

    o.add(
        "info-lists-a-part-twice",
        "The .info lists the same part twice.",
        listed_twice,
        expect="rejected",
        reason="a file is listed twice",
    )

    def dotdot(b: OutboundFileName, seg: int) -> Files:
        [(name, data)] = _parts(b, _good(seg, range(1, 11)))
        return {name: data, b.info_name: _info_json([_entry(f"../../outside/{name}", data, 10)], b.totals_name)}

    o.add(
        "info-dotdot-file-name",
        "The .info's FileName climbs out of the drop zone (../../outside/<part>).",
        dotdot,
        expect="rejected",
        reason="outside the drop zone",
    )

    def absolute(b: OutboundFileName, seg: int) -> Files:
        [(name, data)] = _parts(b, _good(seg, range(1, 11)))
        return {name: data, b.info_name: _info_json([_entry(f"/etc/{name}", data, 10)], b.totals_name)}

    o.add(
        "info-absolute-file-name",
        "The .info's FileName is an absolute path.",
        absolute,
        expect="rejected",
        reason="outside the drop zone",
    )

    def foreign(b: OutboundFileName, seg: int) -> Files:
        [(name, data)] = _parts(b, _good(seg, range(1, 11)))
        other_name = OutboundFileName("s3", DESTINATION, MASTER_DPID, "full", b.timestamp_ms + 1).name
        return {name: data, b.info_name: _info_json([_entry(other_name, data, 10)], b.totals_name)}

    o.add(
        "info-lists-another-batch",
        "The .info lists a part of another batch (a copy-paste of another .info).",
        foreign,
        expect="rejected",
        reason="lists a part of another batch",
    )

    def not_a_part_name(b: OutboundFileName, seg: int) -> Files:
        [(name, data)] = _parts(b, _good(seg, range(1, 11)))
        return {name: data, b.info_name: _info_json([_entry("passwd", data, 10)], b.totals_name)}

    o.add(
        "info-lists-a-non-part",
        "The .info's FileName is no outbound part name at all.",
        not_a_part_name,
        expect="rejected",
        reason="bad file name",
    )

    def no_info(b: OutboundFileName, seg: int) -> Files:
        return dict(_parts(b, _good(seg, range(1, 11))))

    o.add(
        "info-never-arrives",
        "Parts arrive but their .info never does.",
        no_info,
        expect="rejected",
        reason="no .info control file arrived",
        waits_for_timeout=True,
    )

    def tabs(b: OutboundFileName, seg: int) -> Files:
        return _truthful(b, [f"{ecid_of(r)}\t{seg}\t\n".encode() for r in range(1, 21)])

    o.add(
        "lines-all-tab-separated",
        "Every line separated by TABs instead of spaces (the file was written by the wrong tool).",
        tabs,
        expect="rejected",
        reason="no valid line in the batch: 20 lines rejected (wrong field count: 20)",
    )

    def garbage(b: OutboundFileName, seg: int) -> Files:
        rng = random.Random(7)
        lines = [bytes(rng.randrange(256) for _ in range(60)).replace(b"\n", b"?") + b"\n" for _ in range(30)]
        return _truthful(b, lines)

    o.add(
        "lines-all-binary-garbage",
        "A part of random bytes (a binary file delivered under a .sync name).",
        garbage,
        expect="rejected",
        reason="no valid line in the batch",
    )

    # --- the batch is readable, some lines or IDs are not: counted, the rest goes through ------------
    def not_utf8(b: OutboundFileName, seg: int) -> Files:
        lines = _good(seg, range(11, 21))
        lines[2] = f"{ecid_of(13)}".encode() + b" \xff\xfe" + f"{seg} \n".encode()
        lines[7] = b"caf\xe9 " + f"{seg} \n".encode()  # latin-1
        return _truthful(b, lines)

    o.add(
        "lines-not-utf8",
        "Two lines hold bytes that are not UTF-8 (a Latin-1 export, a corrupted byte).",
        not_utf8,
        expect="counted",
        members=[r for r in range(11, 21) if r not in (13, 18)],
        invalid_lines=2,
    )

    def separators(b: OutboundFileName, seg: int) -> Files:
        lines = _good(seg, range(21, 31))
        lines[0] = f"{ecid_of(21)}\t{seg}\t\n".encode()
        lines[1] = f"{ecid_of(22)},{seg},\n".encode()
        lines[2] = f"{ecid_of(23)};{seg};\n".encode()
        lines[3] = f"{ecid_of(24)}  {seg} \n".encode()  # two spaces: four fields
        lines[4] = f"{ecid_of(25)} {seg}  x\n".encode()
        return _truthful(b, lines)

    o.add(
        "lines-wrong-separators",
        "Lines separated by TABs, commas, semicolons or runs of spaces, among good lines.",
        separators,
        expect="counted",
        members=list(range(26, 31)),
        invalid_lines=5,
    )

    def too_long(b: OutboundFileName, seg: int) -> Files:
        lines = _good(seg, range(31, 41))
        lines[4] = b"9" * 1_100_000 + f" {seg} \n".encode()  # over the 1 MiB line limit
        lines[5] = f"{ecid_of(36)} ".encode() + ",".join([str(seg)] * 220_000).encode() + b" \n"
        return _truthful(b, lines)

    o.add(
        "lines-over-long",
        "An over-long line (1.1 MB user id) and another over 1 MiB of segment ids, among good lines.",
        too_long,
        gzip=True,
        expect="counted",
        members=[r for r in range(31, 41) if r not in (35, 36)],
        invalid_lines=2,
    )

    def bad_segments(b: OutboundFileName, seg: int) -> Files:
        lines = _good(seg, range(41, 51))
        lines[0] = f"{ecid_of(41)} abc \n".encode()
        lines[1] = f"{ecid_of(42)} 99999999999999999999 \n".encode()
        lines[2] = f"{ecid_of(43)} {seg},,{seg} \n".encode()
        lines[3] = f"{ecid_of(44)} ٦٠٠١ \n".encode()  # Arabic-Indic digits
        lines[4] = f"{ecid_of(45)} -{seg} \n".encode()
        lines[5] = f"{ecid_of(46)}  \n".encode()  # no segment at all
        lines[6] = f" {seg} \n".encode()  # no user id
        return _truthful(b, lines)

    o.add(
        "lines-bad-segment-ids",
        "Segment lists with letters, 20-digit numbers, empty items, non-ASCII digits, signs, or none.",
        bad_segments,
        expect="counted",
        members=list(range(48, 51)),
        invalid_lines=7,
    )

    def ecid_lengths(b: OutboundFileName, seg: int) -> Files:
        lines = _good(seg, range(51, 61))
        lines.append(f"{'1' * 37} {seg} \n".encode())
        lines.append(f"{'2' * 39} {seg} \n".encode())
        lines.append(f"{'3' * 38} {seg} \n".encode())  # well-formed, nobody's
        return _truthful(b, lines)

    o.add(
        "ecid-37-and-39-digits",
        "ECIDs of 37 and 39 digits among good ones: counted invalid and kept, with the reason.",
        ecid_lengths,
        expect="counted",
        members=list(range(51, 61)),
        invalid_ids=2,
        unmatched={"1" * 37: "invalid_format", "2" * 39: "invalid_format", "3" * 38: "unknown_ecid"},
    )

    def control_chars(b: OutboundFileName, seg: int) -> Files:
        lines = _good(seg, range(91, 101))
        lines.append(f"a\x00b {seg} \n".encode())  # NUL: Postgres text cannot hold it
        lines.append(f"c\x01\x7fd {seg} \n".encode())
        return _truthful(b, lines)

    o.add(
        "user-ids-with-control-chars",
        "User ids holding NUL and other control characters: counted invalid, kept (NUL as U+FFFD).",
        control_chars,
        expect="counted",
        members=list(range(91, 101)),
        invalid_ids=2,
        unmatched={"a\ufffdb": "invalid_format", "c\x01\x7fd": "invalid_format"},
    )

    def duplicates(b: OutboundFileName, seg: int) -> Files:
        lines = _good(seg, range(61, 71))
        lines += _good(seg, range(61, 66))  # five users twice
        lines.append(f"{ecid_of(62)} {seg},{seg} \n".encode())  # the segment twice on one line
        lines += [f"{'4' * 38} {seg} \n".encode()] * 3  # an unknown user three times
        lines += [f"{'5' * 37} {seg} \n".encode()] * 2  # a malformed one twice
        return _truthful(b, lines)

    o.add(
        "duplicate-users",
        "Users listed more than once, unknown and malformed ones too: each is one member or one kept ID.",
        duplicates,
        expect="counted",
        members=list(range(61, 71)),
        invalid_ids=2,
        unmatched={"4" * 38: "unknown_ecid", "5" * 37: "invalid_format"},
    )

    def declared(b: OutboundFileName, seg: int) -> Files:
        lines = [f"{hashed_email_of(r)} {seg} \n".encode() for r in range(71, 81)]
        for hostile in ("x');DROP/**/TABLE/**/recipient;--", "a=b", "urn:x", "x%3Ay", "'\"`\\"):
            lines.append(f"{hostile} {seg} \n".encode())
        return _truthful(b, lines)

    o.add(
        "declared-hostile-ids",
        "Declared IDs that break the declared-ID rules (=, :, %3A) or look like SQL: counted and kept as is.",
        declared,
        mode="iter",
        data_source="hashed-emails",
        expect="counted",
        members=list(range(71, 81)),
        invalid_ids=3,
        unmatched={
            "x');DROP/**/TABLE/**/recipient;--": "unknown_declared_id",
            "a=b": "invalid_format",
            "urn:x": "invalid_format",
            "x%3Ay": "invalid_format",
            "'\"`\\": "unknown_declared_id",
        },
    )

    def bom_crlf(b: OutboundFileName, seg: int) -> Files:
        lines = [f"{ecid_of(r)} {seg} \r\n".encode() for r in range(81, 91)]
        lines[0] = b"\xef\xbb\xbf" + lines[0]
        lines.insert(5, b"\r\n")
        lines.insert(6, b"\n")
        return _truthful(b, lines)

    o.add(
        "bom-crlf-blank-lines",
        "A byte order mark, CRLF line ends and blank lines: hostile-looking but valid, all imported.",
        bom_crlf,
        expect="counted",
        members=list(range(81, 91)),
        invalid_lines=0,
    )
    return o.cases


def _summary(b: OutboundFileName, number: int, name: str, data: bytes) -> PartSummary:
    content = gzip.decompress(data) if b.gzip else data
    return PartSummary(name, number, len(data), content.count(b"\n"), _md5(data), len(content))


def outbound_name_cases() -> list[Case]:
    """Single files whose names break the outbound grammar: each moved to rejected/ with the reason."""
    names = {
        "mode-weekly": ("s3_7001_1001_weekly_1700000900000.sync", "mode must be iter or full"),
        "short-timestamp": ("s3_7001_1001_full_1700000.sync", "timestamp is not 13 digits"),
        "destination-not-a-number": (
            "s3_acme_1001_full_1700000900001.sync",
            "destination id and master DPID must be numbers",
        ),
        "wrong-extension": ("s3_7001_1001_full_1700000900002.csv", "does not end with .sync"),
        "two-digit-part": (
            "s3_7001_1001_full_170000090000301.sync",
            "part number after the timestamp must have at least 3 digits",
        ),
        "unknown-sync-type": ("sftp_7001_1001_full_1700000900004.sync", "sync type must be one of"),
        "alias-with-dot": ("s3_7001_1001_a.b_full_1700000900005.sync", "PID alias must be"),
        "info-with-part-number": ("s3_7001_1001_full_1700000900006001.info", "a .info name has no part number"),
        "dotdot-in-name": ("s3_7001_1001_full_..1700000900007.sync", "timestamp is not a number"),
        "spaces-and-unicode": ("s3 7001 1001 fúll 1700000900008.sync", "expected <type>"),
    }
    cases = []
    for case_id, (name, reason) in names.items():
        cases.append(
            Case(
                f"name-{case_id}",
                "outbound-name",
                "rejected",
                f"A file named {name!r} in the import drop zone.",
                {name: b"0" * 38 + b" 1 \n"},
                f"breaks the outbound grammar: bad file name: {reason}",
            )
        )
    return cases


# -------------------------------------------------------------------------------------- Kafka messages


def _event(**over: Any) -> dict[str, Any]:
    base = {
        "event_id": "ev-corpus",
        "segment_id": str(EVENTS_SEGMENT),
        "id_type": "ecid",
        "data_source": "visitors",
        "id": ecid_of(150),
        "op": "add",
        "occurred_at": "2024-05-01T12:00:00Z",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP: Final = object()


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


def message_cases() -> list[Case]:
    cases: list[Case] = []

    def add(
        kind: str, case_id: str, description: str, value: bytes | None, expect: str, reason: str, **extra: Any
    ) -> None:
        suffix = ".json"
        data = value if value is not None else b""
        if len(data) > 64 * 1024:
            suffix, data = ".json.gz", _gz(data)
        files = {} if value is None else {f"{case_id}{suffix}": data}
        cases.append(Case(case_id, kind, expect, description, files, reason, extra))

    ev = "segment-event"
    add(ev, "event-not-json", "A value that is not JSON.", b"{oops", "dlq", "value is not JSON")
    add(ev, "event-empty-value", "An empty value.", b"", "dlq", "value is not JSON")
    add(ev, "event-tombstone", "A tombstone (no value at all).", None, "dlq", "message has no value", tombstone=True)
    add(ev, "event-json-array", "A JSON array instead of an object.", b"[1, 2, 3]", "dlq", "not a JSON object")
    add(ev, "event-json-string", "A JSON string.", b'"add"', "dlq", "not a JSON object")
    add(
        ev, "event-not-utf8", "JSON with a byte that is not UTF-8.", b'{"event_id": "\xff"}', "dlq", "value is not JSON"
    )
    add(ev, "event-nan", "JSON with NaN (not JSON).", b'{"event_id": NaN}', "dlq", "value is not JSON")
    add(ev, "event-deep-nesting", "Arrays nested 5,000 deep.", b"[" * 5000 + b"]" * 5000, "dlq", "value is not JSON")
    add(
        ev,
        "event-missing-fields",
        "An event without id and op.",
        _json(_event(id=_DROP, op=_DROP, event_id="ev-missing")),
        "dlq",
        "id: Field required",
    )
    add(
        ev,
        "event-extra-field",
        "An event with a field the schema does not know.",
        _json({**_event(event_id="ev-extra"), "email": "person@example.com"}),
        "dlq",
        "email: Extra inputs are not permitted",
    )
    add(
        ev,
        "event-mistyped-fields",
        "op as a number, occurred_at as free text, id_type unknown.",
        _json(_event(event_id="ev-mistyped", op=1, occurred_at="yesterday", id_type="email")),
        "dlq",
        "value fails validation",
    )
    add(
        ev,
        "event-id-as-number",
        "The ECID as a JSON number (precision lost by a JavaScript producer).",
        b'{"event_id": "ev-number", "segment_id": "6500", "id_type": "ecid", "data_source": "visitors", '
        b'"id": 12345678901234567890123456789012345678, "op": "add", "occurred_at": "2024-05-01T12:00:00Z"}',
        "dlq",
        "id: Input should be a valid string",
    )
    add(
        ev,
        "event-schema-version-2",
        "A schema version this bridge does not know.",
        _json({**_event(event_id="ev-v2"), "schema_version": 2}),
        "dlq",
        "unknown schema_version",
    )
    add(
        ev,
        "event-id-with-space",
        "An id with a space (would break every platform file format).",
        _json(_event(event_id="ev-space", id="a b")),
        "dlq",
        "id: String should match pattern",
    )
    add(
        ev,
        "event-control-char-data-source",
        "A data source name with a NUL character.",
        _json(_event(event_id="ev-nul", data_source="visitors\u0000")),
        "dlq",
        "data_source: String should match pattern",
    )
    add(
        ev,
        "event-id-too-long",
        "A 300-character id.",
        _json(_event(event_id="ev-long", id="7" * 300)),
        "dlq",
        "id: String should have at most 256 characters",
    )
    add(
        ev,
        "event-over-1mb",
        "A 1.2 MB value (a whole file pasted into the id).",
        _json(_event(event_id="ev-big", id="7" * 1_200_000)),
        "dlq",
        "id: String should have at most 256 characters",
    )
    add(
        ev,
        "event-over-broker-limit",
        "A 5 MB value: more than the broker takes.",
        _json(_event(event_id="ev-huge", id="7" * 5_000_000)),
        "refused",
        "message too large for Kafka",
    )
    cases.append(
        Case(
            "event-near-broker-limit",
            ev,
            "dlq",
            "A value just under the broker's 4 MiB limit, incompressible: the original plus the dlq headers is "
            "more than Kafka takes, so it is dead-lettered without its value (built at run time: "
            "tests.corpus.near_limit_event()).",
            {},
            "value fails validation",
            {"build": "near-limit-event", "value_omitted": True},
        )
    )
    add(
        ev,
        "event-unknown-segment",
        "A segment no import audience is fed by.",
        _json(_event(event_id="ev-unknown", segment_id="no-such-segment")),
        "dlq",
        "no import audience for this segment",
    )
    add(
        ev,
        "event-wrong-data-source",
        "A data source other than the audience's.",
        _json(_event(event_id="ev-ds", data_source="hashed-emails")),
        "dlq",
        "event's data source",
    )
    add(
        ev,
        "event-wrong-id-type",
        "A declared ID on an audience of visitor IDs.",
        _json(_event(event_id="ev-type", id_type="declared", id=hashed_email_of(1))),
        "dlq",
        "event's id type differs",
    )
    add(
        ev,
        "event-ecid-37-digits",
        "A 37-digit ECID.",
        _json(_event(event_id="ev-37", id="1" * 37)),
        "dlq",
        "malformed id",
    )
    add(
        ev,
        "event-ecid-39-digits",
        "A 39-digit ECID.",
        _json(_event(event_id="ev-39", id="1" * 39)),
        "dlq",
        "malformed id",
    )
    add(
        ev,
        "event-ecid-unicode-digits",
        "An ECID of 38 non-ASCII digits.",
        _json(_event(event_id="ev-uni", id="٣" * 38)),
        "dlq",
        "malformed id",
    )

    mb = "membership"
    run = "3f1b3c8e-0000-4000-8000-00000000000"

    def membership(n: int, **over: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "run_id": f"{run}{n}",
            "seq": 0,
            "last": True,
            "audience_id": MEMBERSHIP_AUDIENCE,
            "data_source": "visitors",
            "id_type": "ecid",
            "mode": "delta",
            "adds": [ecid_of(160)],
            "removes": [],
            "totals": {"received": 1, "batches": 1},
        }
        base.update(over)
        return base

    add(
        mb,
        "membership-unknown-audience",
        "A batch for an audience nobody configured.",
        _json(membership(1, audience_id="no-such-audience")),
        "dlq",
        "no import audience with this id",
        failed_status=True,
        run_id=f"{run}1",
    )
    add(
        mb,
        "membership-id-type-mismatch",
        "Declared IDs for an audience of visitor IDs.",
        _json(membership(2, id_type="declared", adds=[hashed_email_of(1)])),
        "dlq",
        "batch id type differs from the audience's data source",
        failed_status=True,
        run_id=f"{run}2",
    )
    add(
        mb,
        "membership-too-many-ids",
        "10,001 IDs in one batch (the limit is 10,000).",
        _json(membership(3, adds=[f"{i:038d}" for i in range(10_001)])),
        "dlq",
        "adds: List should have at most 10000 items",
    )
    add(
        mb,
        "membership-totals-not-last",
        "Totals on a batch that is not the run's last.",
        _json(membership(4, last=False)),
        "dlq",
        "totals are carried by the last batch only",
    )
    add(mb, "membership-negative-seq", "A negative seq.", _json(membership(5, seq=-1)), "dlq", "seq:")
    add(
        mb, "membership-bad-run-id", "A run id that is no UUID.", _json(membership(6, run_id="run-6")), "dlq", "run_id:"
    )
    add(mb, "membership-bad-mode", "An unknown mode.", _json(membership(7, mode="snapshot")), "dlq", "mode:")
    add(
        mb,
        "membership-id-with-comma",
        "An ID with a comma.",
        _json(membership(8, adds=["1,2"])),
        "dlq",
        "adds.0: String should match pattern",
    )

    er = "export-request"
    req = "5a7e0c1d-0000-4000-8000-00000000000"

    def request(n: int, **over: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "request_id": f"{req}{n}",
            "list_id": "Corpus export",
            "audience_name": f"Corpus request {n}",
            "data_source": "visitors",
            "mode": "append",
            "requested_by": "corpus",
        }
        base.update(over)
        return base

    add(
        er,
        "export-unknown-list",
        "An export of a list that does not exist.",
        _json(request(1, list_id="No such list")),
        "dlq",
        "unknown list",
        failed_status=True,
        request_id=f"{req}1",
    )
    add(
        er,
        "export-unknown-list-id",
        "An export of a list id that does not exist (and does not fit a bigint).",
        _json(request(2, list_id="123456789012345678901234")),
        "dlq",
        "unknown list",
        failed_status=True,
        request_id=f"{req}2",
    )
    add(
        er,
        "export-unknown-data-source",
        "An export into a data source that is not configured.",
        _json(request(3, data_source="No such source")),
        "dlq",
        "unknown data source",
        failed_status=True,
        request_id=f"{req}3",
    )
    add(er, "export-bad-mode", "An unknown export mode.", _json(request(4, mode="replace")), "dlq", "mode:")
    add(
        er,
        "export-missing-audience-name",
        "A request without an audience name.",
        _json({k: v for k, v in request(5).items() if k != "audience_name"}),
        "dlq",
        "audience_name: Field required",
    )
    add(
        er,
        "export-name-with-control-char",
        "An audience name with a line break.",
        _json(request(6, audience_name="Two\nlines")),
        "dlq",
        "audience_name: String should match pattern",
    )
    add(
        er,
        "export-name-too-long",
        "An audience name of 201 characters.",
        _json(request(7, audience_name="n" * 201)),
        "dlq",
        "audience_name: String should have at most 200 characters",
    )
    add(
        er,
        "export-bad-request-id",
        "A request id that is no UUID.",
        _json(request(8, request_id="req-8")),
        "dlq",
        "request_id:",
    )
    add(
        er,
        "export-pii-data-source",
        "An export into a data source whose export controls forbid PII.",
        _json(request(9, data_source="partner-pii")),
        "blocked",
        "carries the PII export restriction",
        request_id=f"{req}9",
    )

    eb = "export-batch"
    add(
        eb,
        "export-batch-unknown-run",
        "A batch of a run reconcile never recorded.",
        _json(
            {
                "run_id": "9c0ffee0-0000-4000-8000-000000000001",
                "seq": 0,
                "last": True,
                "audience_id": "ab-nobody",
                "data_source": "visitors",
                "dpid": 1001,
                "mode": "append",
                "adds": [ecid_of(1)],
                "removes": [],
                "totals": {"received": 1},
            }
        ),
        "dlq",
        "no export run with this id",
        failed_status=True,
        run_id="9c0ffee0-0000-4000-8000-000000000001",
    )
    add(
        eb,
        "export-batch-negative-dpid",
        "A negative DPID.",
        _json(
            {
                "run_id": "9c0ffee0-0000-4000-8000-000000000002",
                "seq": 0,
                "audience_id": "ab-nobody",
                "data_source": "visitors",
                "dpid": -1,
                "mode": "append",
            }
        ),
        "dlq",
        "dpid: Input should be greater than or equal to 0",
    )
    add(eb, "export-batch-not-json", "Not JSON.", b"\x00\x01\x02", "dlq", "value is not JSON")
    return cases


# ----------------------------------------------------------------------------------- inbound (for ecsim)


def inbound_cases() -> list[Case]:
    day = f"{INBOUND_PARTNER}/date={INBOUND_DAY}"
    cases: list[Case] = []

    def ok_line(n: int) -> bytes:
        return f"{ecid_of(n)}\td_sid={INBOUND_TRAIT}\n".encode()

    def add(case_id: str, description: str, key: str, data: bytes, expect: str, reason: str = "", **extra: Any) -> None:
        cases.append(Case(case_id, "inbound-file", expect, description, {key: data}, reason, extra))

    ts = INBOUND_TS
    add(
        "inbound-bad-name",
        "A timestamp of 8 digits.",
        f"{day}/ftp_dpm_{INBOUND_COOKIE_DPID}_17145216.sync",
        ok_line(1),
        "ecsim-rejected",
        "bad file name: timestamp is not 10 digits",
    )
    add(
        "inbound-not-in-date-folder",
        "A file directly under the partner folder.",
        f"{INBOUND_PARTNER}/{inbound_name(INBOUND_COOKIE_DPID, ts + 1)}",
        ok_line(1),
        "ecsim-rejected",
        "not under <partner>/date=YYYY-MM-DD/",
    )
    add(
        "inbound-empty",
        "An empty file.",
        f"{day}/{inbound_name(INBOUND_COOKIE_DPID, ts + 2)}",
        b"",
        "ecsim-rejected",
        "empty file",
    )
    add(
        "inbound-corrupt-gzip",
        "A .gz cut mid-stream.",
        f"{day}/{inbound_name(INBOUND_COOKIE_DPID, ts + 3, gzip=True)}",
        _gz(b"".join(ok_line(n) for n in range(1, 400)))[:300],
        "ecsim-rejected",
        "corrupt gzip",
    )
    add(
        "inbound-unknown-dpid",
        "A DPID the platform does not know.",
        f"{day}/{inbound_name(424242, ts + 4)}",
        ok_line(1),
        "ecsim-rejected",
        "unknown data source 424242",
    )
    add(
        "inbound-pgp",
        "A PGP-encrypted file.",
        f"{day}/{inbound_name(INBOUND_COOKIE_DPID, ts + 5)}.pgp",
        b"-----BEGIN PGP MESSAGE-----\n",
        "ecsim-rejected",
        "PGP-encrypted files are not supported",
    )
    lines = [ok_line(n) for n in range(1, 11)]
    lines += [
        f"{ecid_of(11)} d_sid={INBOUND_TRAIT}\n".encode(),  # space, not TAB
        f"{ecid_of(12)}\td_sid={INBOUND_TRAIT}\textra\n".encode(),  # two TABs
        f"{ecid_of(13)}\td_sid=abc\n".encode(),  # bad token
        f"{ecid_of(14)}\td_sid={INBOUND_TRAIT},\n".encode(),  # trailing comma
        b"\xff\xfe\td_sid=1\n",  # not UTF-8
        f"\td_sid={INBOUND_TRAIT}\n".encode(),  # no user id
        b"1" * 102_401 + b"\n",  # over the 100 KiB line limit
    ]
    add(
        "inbound-format-errors",
        "Good lines plus lines without TAB, with two TABs, bad tokens, bytes that are not UTF-8, no user, too long.",
        f"{day}/{inbound_name(INBOUND_COOKIE_DPID, ts + 6, gzip=True)}",
        _gz(b"".join(lines)),
        "ecsim-counted",
        receipt={"recordsReceived": 17, "formatErrors": 7, "invalidAamIds": 0, "storedRecords": 10},
        members=list(range(1, 11)),
    )
    lines = [ok_line(n) for n in range(21, 31)]
    lines += [f"{'1' * 37}\td_sid={INBOUND_TRAIT}\n".encode(), f"{'2' * 39}\td_sid={INBOUND_TRAIT}\n".encode()]
    add(
        "inbound-invalid-ids",
        "37- and 39-digit ECIDs in a file of a COOKIE data source.",
        f"{day}/{inbound_name(INBOUND_COOKIE_DPID, ts + 7)}",
        b"".join(lines),
        "ecsim-counted",
        receipt={"recordsReceived": 12, "formatErrors": 0, "invalidAamIds": 2, "storedRecords": 10},
        members=list(range(21, 31)),
    )
    lines = [f"{ecid_of(40)}\td_sid={INBOUND_TRAIT}\n".encode()] * 201 + [ok_line(41)]
    add(
        "inbound-user-over-200-lines",
        "One user on 201 lines of one file.",
        f"{day}/{inbound_name(INBOUND_COOKIE_DPID, ts + 8)}",
        b"".join(lines),
        "ecsim-counted",
        receipt={"recordsReceived": 202, "discardedOverUserLimit": 1, "storedRecords": 201},
        members=[40, 41],
    )
    return cases


# -------------------------------------------------------------------------------------- catalog files


def catalog_cases() -> list[Case]:
    items = {
        "bad-date": (b"data_sources: []\nloaded_at: 2024-13-45\n", "not valid YAML"),
        "deep-nesting": (b"data_sources: " + b"[" * 20_000 + b"]" * 20_000 + b"\n", "not valid YAML"),
        "python-tag": (b"data_sources: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
        "not-utf8": (b"data_sources:\n  - name: caf\xe9\n", "not UTF-8"),
        "tabs-for-indent": (b"data_sources:\n\t- name: x\n", "not valid YAML"),
        "unknown-key": (b"data_sources: []\nimport_audience: []\n", "Extra inputs are not permitted"),
        "dpid-as-text": (b"data_sources:\n  - {name: v, dpid: one, id_type: ecid}\n", "dpid"),
        "declared-without-key": (
            b"data_sources:\n  - {name: d, dpid: 1, id_type: declared}\n",
            "needs a reconciliation_key",
        ),
        "email-unhashed": (
            b"data_sources:\n  - {name: d, dpid: 1, id_type: declared, reconciliation_key: email}\n",
            "use key_transform sha256",
        ),
        "unknown-column": (
            b"data_sources:\n  - {name: d, dpid: 1, id_type: declared, reconciliation_key: 'email; DROP TABLE x'}\n",
            "reconciliation_key",
        ),
        "name-with-newline": (b'data_sources:\n  - {name: "a\\nb", dpid: 1, id_type: ecid}\n', "name"),
        "a-list": (b"- data_sources\n", "Input should be a valid dictionary"),
        "alias-loop": (b"data_sources: &a [*a]\n", "catalog file is invalid"),
    }
    return [
        Case(f"catalog-{k}", "catalog", "config-error", f"A catalog file: {k.replace('-', ' ')}.", {f"{k}.yaml": v}, r)
        for k, (v, r) in items.items()
    ]


# ---------------------------------------------------------------------------------------------- output


def build() -> tuple[Files, bytes]:
    """Every corpus file (path relative to the corpus folder -> bytes) and the manifest."""
    groups: list[tuple[str, list[Case]]] = [
        ("outbound", outbound_cases()),
        ("outbound-names", outbound_name_cases()),
        ("messages", message_cases()),
        ("inbound", inbound_cases()),
        ("catalog", catalog_cases()),
    ]
    files: Files = {}
    entries: list[dict[str, Any]] = []
    for group, cases in groups:
        for case in cases:
            folder = _folder(group, case)
            for name, data in case.files.items():
                files[f"{folder}/{name}"] = data
            entries.append(case.entry(folder))
    header = (
        b"# The bad-input corpus: generated by `python -m tests.corpus.generate` (edit generate.py, not this\n"
        b"# file). Each case: the files as the bridge (or ecsim) receives them, the expected outcome and a\n"
        b"# substring of the reason it must give. Outcomes are described in tests/corpus/generate.py.\n"
    )
    body = yaml.safe_dump({"cases": entries}, sort_keys=False, allow_unicode=True, width=200).encode()
    return files, header + body


def _folder(group: str, case: Case) -> str:
    if group == "outbound":
        return f"outbound/{case.id}"
    if group == "outbound-names":
        return "outbound-names"
    if group == "messages":
        return {
            "segment-event": "segment-events",
            "membership": "membership",
            "export-request": "export-requests",
            "export-batch": "export-batches",
        }[case.kind]
    if group == "inbound":
        return f"inbound/{case.id}"
    return group


def existing() -> Files:
    out: Files = {}
    for top in (*DATA_DIRS, *DATA_DIRS_2):
        root = CORPUS_DIR / top
        if root.exists():
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    out[path.relative_to(CORPUS_DIR).as_posix()] = path.read_bytes()
    return out


def differences() -> list[str]:
    """What differs between the checked-in corpus and the generator's output (empty when nothing)."""
    files, manifest = build()
    current = existing()
    problems = [f"missing: {p}" for p in sorted(set(files) - set(current))]
    problems += [f"not generated: {p}" for p in sorted(set(current) - set(files))]
    problems += [f"differs: {p}" for p in sorted(set(files) & set(current)) if files[p] != current[p]]
    if not MANIFEST.exists() or MANIFEST.read_bytes() != manifest:
        problems.append("differs: manifest.yaml")
    return problems


def write() -> None:
    files, manifest = build()
    for path in existing():
        if path not in files:
            (CORPUS_DIR / path).unlink()
    for path, data in files.items():
        target = CORPUS_DIR / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_bytes() != data:
            target.write_bytes(data)
    MANIFEST.write_bytes(manifest)


def main(argv: list[str]) -> int:
    if argv[1:] == ["--check"]:
        problems = differences()
        for p in problems:
            print(p)
        return 1 if problems else 0
    write()
    print(f"corpus written to {CORPUS_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
