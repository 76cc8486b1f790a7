from __future__ import annotations

import contextlib
import gzip
import hashlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.formats import BadFileName, CorruptGzip, FormatError, InvalidRecord
from shared.formats.lines import UTF8_BOM, LineError
from shared.formats.outbound import (
    MAX_LINE_BYTES,
    R_BAD_SEGMENT,
    R_EMPTY_USER_ID,
    R_FIELDS,
    R_INVALID_ID,
    R_NO_SEGMENTS,
    R_NOT_UTF8,
    R_TOO_LONG,
    BadInfoFile,
    InfoFile,
    OutboundFileName,
    OutboundItem,
    OutboundParser,
    OutboundRecord,
    OutboundRow,
    OutboundWriter,
    RecordBlock,
    SplitStyle,
    batch_root_of,
    build_info,
    format_outbound_line,
    info_name_for,
    is_info_name,
    outbound_name,
    parse_info,
    parse_outbound_line,
    parse_outbound_name,
)
from shared.formats.parts import collect_parts

# No deadline nor speed health check: the suite also runs on loaded CI machines.
FAST = settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

UUID = "59767559181262060060278870901087098252"
BATCH = OutboundFileName("ftp", 655, 269, "iter", 1337229891903)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    out, prev = [], 0
    for p in points:
        out.append(data[prev:p])
        prev = p
    out.append(data[prev:])
    return out


def parse(
    data: bytes, name: OutboundFileName | str = BATCH, cuts: list[int] | None = None, **kw: object
) -> tuple[list[OutboundItem], OutboundParser]:
    p = OutboundParser(name, **kw)  # type: ignore[arg-type]
    return list(p.parse(chunked(data, cuts or []))), p


def records(items: list[OutboundItem]) -> list[OutboundRecord]:
    return [i for i in items if isinstance(i, OutboundRecord)]


def errors(items: list[OutboundItem]) -> list[LineError]:
    return [i for i in items if isinstance(i, LineError)]


# ----------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "S3_1234_20914_XYZCustomer_iter_1486140844000.sync.gz",
            OutboundFileName("S3", 1234, 20914, "iter", 1486140844000, None, True, "XYZCustomer"),
        ),
        (
            "S3_1234_20914_XYZCustomer_iter_1486140844000001.sync.gz",
            OutboundFileName("S3", 1234, 20914, "iter", 1486140844000, 1, True, "XYZCustomer"),
        ),
        (
            "ftp_1234_20915_full_1486140843000.sync.gz",
            OutboundFileName("ftp", 1234, 20915, "full", 1486140843000, gzip=True),
        ),
        ("ftp_655_269_iter_1337229891903.sync", BATCH),
        (
            "ftp_12345_67890_full_1500727351632-1.sync.gz",
            OutboundFileName("ftp", 12345, 67890, "full", 1500727351632, 1, True, split_style="dash"),
        ),
        ("http_1_2_iter_1337229891903012.sync", BATCH.__class__("http", 1, 2, "iter", 1337229891903, 12)),
        ("s3_1_2_iter_13372298919031234.sync", OutboundFileName("s3", 1, 2, "iter", 1337229891903, 1234)),
    ],
)
def test_contract_names(name: str, expected: OutboundFileName) -> None:
    parsed = parse_outbound_name(name)
    assert parsed == expected
    assert parsed.name == name == str(parsed)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("ftp_655_269_iter_1337229891903.txt", "does not end with .sync"),
        ("ftp_655_269_iter_1337229891903.sync.zip", "does not end with .sync"),
        ("sftp_655_269_iter_1337229891903.sync", "sync type"),
        ("ftp_655_269_delta_1337229891903.sync", "mode must be iter or full"),
        ("ftp_a_269_iter_1337229891903.sync", "must be numbers"),
        ("ftp_655_269_iter_133722989190.sync", "13 digits"),
        ("ftp_655_269_iter_13372298919031.sync", "at least 3 digits"),
        ("ftp_655_269_iter_133722989190312.sync", "at least 3 digits"),
        ("ftp_655_269_iter_1337229891903000.sync", "at least 1"),
        ("ftp_655_269_iter_1337229891903-x.sync", "after '-'"),
        ("ftp_655_269_iter_1337229891903-0.sync", "at least 1"),
        ("ftp_655_269_iter_x.sync", "not a number"),
        ("ftp_655_269_a_b_iter_1337229891903.sync", "expected"),
        ("ftp_655_iter_1337229891903.sync", "expected"),
        ("ftp_655_269_a.b_iter_1337229891903.sync", "PID alias"),
    ],
)
def test_bad_names(name: str, reason: str) -> None:
    with pytest.raises(BadFileName) as e:
        parse_outbound_name(name)
    assert reason in e.value.reason
    assert isinstance(e.value, FormatError)


aliases = st.none() | st.text("abcXYZ019-", min_size=1, max_size=8)


@FAST
@given(
    st.sampled_from(["ftp", "s3", "S3", "http"]),
    st.integers(0, 10**9),
    st.integers(0, 10**9),
    st.sampled_from(["iter", "full"]),
    st.integers(1_000_000_000_000, 9_999_999_999_999),
    st.none() | st.integers(1, 10**5),
    st.booleans(),
    aliases,
    st.sampled_from(["padded", "dash"]),
)
def test_name_round_trip(
    sync_type: str,
    did: int,
    dpid: int,
    mode: str,
    ts: int,
    part: int | None,
    gz: bool,
    alias: str | None,
    style: str,
) -> None:
    name = outbound_name(
        sync_type,  # type: ignore[arg-type]
        did,
        dpid,
        mode,  # type: ignore[arg-type]
        ts,
        part=part,
        gzip=gz,
        pid_alias=alias,
        split_style=style,  # type: ignore[arg-type]
    )
    parsed = parse_outbound_name(name)
    assert (parsed.sync_type, parsed.destination_id, parsed.master_dpid, parsed.mode) == (
        sync_type,
        did,
        dpid,
        mode,
    )
    assert (parsed.timestamp_ms, parsed.part, parsed.gzip, parsed.pid_alias) == (ts, part, gz, alias)
    assert parsed.name == name
    root = batch_root_of(name)
    assert root == parsed.batch_root
    assert batch_root_of(info_name_for(root)) == root
    assert parsed.info_name == info_name_for(root)


def test_padded_split_numbers_beyond_999() -> None:
    assert BATCH.part_name(7) == "ftp_655_269_iter_1337229891903007.sync"
    assert BATCH.part_name(1234) == "ftp_655_269_iter_13372298919031234.sync"
    assert parse_outbound_name(BATCH.part_name(1234)).part == 1234


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"sync_type": "sftp"}, "sync type"),
        ({"destination_id": -1}, "negative"),
        ({"pid_alias": "a_b"}, "alias"),
        ({"pid_alias": ""}, "alias"),
        ({"mode": "delta"}, "mode"),
        ({"timestamp_ms": 1337229891}, "13 digits"),
        ({"part": 0}, "at least 1"),
        ({"split_style": "x"}, "split style"),
    ],
)
def test_builder_refuses_bad_parts(kwargs: dict[str, object], reason: str) -> None:
    base: dict[str, object] = {
        "sync_type": "ftp",
        "destination_id": 1,
        "master_dpid": 2,
        "mode": "iter",
        "timestamp_ms": 1337229891903,
    }
    with pytest.raises(BadFileName) as e:
        OutboundFileName(**(base | kwargs))  # type: ignore[arg-type]
    assert reason in e.value.reason


def test_info_names_group_parts() -> None:
    parts = [
        "ftp_12345_67890_full_1500727351632-1.sync.gz",
        "ftp_12345_67890_full_1500727351632-2.sync.gz",
        "ftp_12345_67890_full_1500727351632.info",
        "S3_1234_20914_XYZCustomer_iter_1486140844000001.sync.gz",
        "S3_1234_20914_XYZCustomer_iter_1486140844000.info",
    ]
    groups: dict[str, list[str]] = {}
    for n in parts:
        groups.setdefault(batch_root_of(n), []).append(n)
    assert {k: len(v) for k, v in groups.items()} == {
        "ftp_12345_67890_full_1500727351632": 3,
        "S3_1234_20914_XYZCustomer_iter_1486140844000": 2,
    }
    assert is_info_name(parts[2])
    assert not is_info_name(parts[0])
    with pytest.raises(BadFileName):
        batch_root_of("ftp_12345_67890_full_1500727351632001.info")
    with pytest.raises(BadFileName):
        batch_root_of("nonsense.info")
    with pytest.raises(BadFileName):
        info_name_for("ftp_12345_67890_full_1500727351632001")


# ------------------------------------------------------------------------------------------ .info

CONTRACT_INFO = b"""{ "Files": [ { "FileByteSize": 293029329, "FileLineCount": 36893908,
               "FileName": "ftp_12345_67890_full_1500727351632-1.sync.gz",
               "FileSequenceNumber": 1, "md5": "983g634be2ad5263c6a6c4958bf61d9f" } ],
  "Totals": { "FileName": "ftp_12345_67890_full_1500727351632.sync",
              "TotalByteSize": 1097545164, "TotalNumberFiles": 4, "TotalNumberLines": 138184105 } }"""


def test_contract_info_sample_parses() -> None:
    info = parse_info(CONTRACT_INFO)
    [entry] = info.files
    assert (entry.file_name, entry.byte_size, entry.line_count, entry.sequence_number) == (
        "ftp_12345_67890_full_1500727351632-1.sync.gz",
        293029329,
        36893908,
        1,
    )
    assert info.totals.total_number_files == 4
    assert info.entry(entry.file_name) == entry
    assert info.entry("other") is None
    # The sample lists one file of four: the listing does not add up.
    assert "1 files listed, Totals say 4" in info.inconsistencies()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "Invalid JSON"),
        (b"{Files: []}", "Totals"),  # the page's notation (keys without quotes), but no Totals
        (b"{'Files': []}", "Invalid JSON"),  # single quotes are not the page's notation
        (b"\xff\xfe", "Invalid JSON"),
        (b"[]", "object"),
        (b'{"Files": []}', "Totals"),
        (b'{"Files": {}, "Totals": {}}', "Files"),
        (
            b'{"Files": [], "Totals": {"FileName": "x", "TotalByteSize": "1",'
            b' "TotalNumberFiles": 0, "TotalNumberLines": 0}}',
            "TotalByteSize",
        ),
        (
            b'{"Files": [{"FileName": "a", "FileByteSize": -1, "FileLineCount": 0, "FileSequenceNumber": 1,'
            b' "md5": "00000000000000000000000000000000"}], "Totals": {"FileName": "x", "TotalByteSize": 1,'
            b' "TotalNumberFiles": 1, "TotalNumberLines": 0}}',
            "FileByteSize",
        ),
        (
            b'{"Files": [{"FileName": "a", "FileByteSize": 1, "FileLineCount": 0, "FileSequenceNumber": 1,'
            b' "md5": "abc"}], "Totals": {"FileName": "x", "TotalByteSize": 1,'
            b' "TotalNumberFiles": 1, "TotalNumberLines": 0}}',
            "md5",
        ),
    ],
)
def test_bad_info_files(data: bytes, reason: str) -> None:
    with pytest.raises(BadInfoFile) as e:
        parse_info(data, file_name="b.info")
    assert reason in e.value.context["reason"]
    assert e.value.context["file_name"] == "b.info"
    assert isinstance(e.value, FormatError)


@FAST
@given(st.binary(max_size=200))
def test_arbitrary_info_bytes_parse_or_raise_bad_info(data: bytes) -> None:
    with contextlib.suppress(BadInfoFile):
        parse_info(data)


def test_info_ignores_unknown_keys_and_emits_the_platform_keys() -> None:
    doc = json.loads(CONTRACT_INFO)
    doc["Extra"] = 1
    doc["Files"][0]["Extra"] = "x"
    info = parse_info(json.dumps(doc).encode())
    out = json.loads(info.to_json())
    assert set(out) == {"Files", "Totals"}
    assert set(out["Files"][0]) == {"FileName", "FileByteSize", "FileLineCount", "FileSequenceNumber", "md5"}
    assert set(out["Totals"]) == {"FileName", "TotalByteSize", "TotalNumberFiles", "TotalNumberLines"}
    assert parse_info(info.to_json()) == info


# ----------------------------------------------------------------------------------------- lines


def test_contract_sample_line() -> None:
    line = f"{UUID} 24,26,27 25,28".encode()
    assert parse_outbound_line(line, 4) == OutboundRecord(4, UUID, (24, 26, 27), (25, 28))
    assert format_outbound_line(UUID, [24, 26, 27], [25, 28]) == line + b"\n"


def test_empty_lists_keep_both_separators() -> None:
    assert format_outbound_line("u", [24, 26], []) == b"u 24,26 \n"
    assert format_outbound_line("u", [], [25]) == b"u  25\n"
    assert parse_outbound_line(b"u 24,26 ") == OutboundRecord(1, "u", (24, 26), ())
    assert parse_outbound_line(b"u  25") == OutboundRecord(1, "u", (), (25,))
    # The two-field form (no removal field at all) is read too.
    assert parse_outbound_line(b"u 24,26") == OutboundRecord(1, "u", (24, 26), ())


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"u", R_FIELDS),
        (b"u 1 2 3", R_FIELDS),
        (b"u 1  ", R_FIELDS),
        (b"u 1, 2", R_BAD_SEGMENT),  # "1," then "2" as removals
        (b" 1 2", R_EMPTY_USER_ID),
        (b"u  ", R_NO_SEGMENTS),
        (b"u ", R_NO_SEGMENTS),
        (b"u 1,,2 ", R_BAD_SEGMENT),
        (b"u 1, ", R_BAD_SEGMENT),
        (b"u x ", R_BAD_SEGMENT),
        (b"u -1 ", R_BAD_SEGMENT),
        (b"u  1.5", R_BAD_SEGMENT),
        (b"u \xd9\xa1 ", R_BAD_SEGMENT),  # Arabic-Indic digit one
        (b"u " + str(2**63).encode() + b" ", R_BAD_SEGMENT),
        (b"u\xff 1 ", R_NOT_UTF8),
        (b"u\t1,2", R_FIELDS),
    ],
)
def test_line_errors(line: bytes, reason: str) -> None:
    err = parse_outbound_line(line, 9, file_name="f")
    assert isinstance(err, LineError)
    assert (err.reason, err.line_number, err.file_name) == (reason, 9, "f")


@pytest.mark.parametrize(
    ("user_id", "segments", "removed"),
    [
        ("", [1], []),
        ("a b", [1], []),
        ("a\nb", [1], []),
        ("a\rb", [1], []),
        ("\ufeffa", [1], []),
        ("\udc80", [1], []),
        ("u", [], []),
        ("u", [-1], []),
        ("u", [True], []),
        ("u", [], [2**63]),
    ],
)
def test_format_refuses_what_cannot_be_written(user_id: str, segments: list[int], removed: list[int]) -> None:
    with pytest.raises(InvalidRecord):
        format_outbound_line(user_id, segments, removed)


# --------------------------------------------------------------------------------------- parsing


def test_stream_with_crlf_blank_lines_bom_errors_and_counters() -> None:
    data = b"\xef\xbb\xbf" + UUID.encode() + b" 1,2 3\r\n\nbad\nu2  4\nu3 5 \n" + b"x" * 100 + b"\nu4 6"
    for cuts in ([], [2], list(range(len(data)))):
        items, p = parse(data, cuts=cuts, max_line_bytes=50)
        assert records(items) == [
            OutboundRecord(1, UUID, (1, 2), (3,)),
            OutboundRecord(4, "u2", (), (4,)),
            OutboundRecord(5, "u3", (5,), ()),
            OutboundRecord(7, "u4", (6,), ()),
        ]
        assert [(e.line_number, e.reason) for e in errors(items)] == [(3, R_FIELDS), (6, R_TOO_LONG)]
        c = p.counters
        assert (c.lines, c.blank_lines, c.records, c.errors) == (7, 1, 4, 2)
        assert (c.segment_memberships, c.segment_removals) == (4, 2)
        assert c.bytes_read == len(data)


def test_user_id_type_is_checked_when_asked() -> None:
    items, p = parse(f"{UUID} 1 \ncrm-1 1 \n".encode(), id_type="ecid")
    [err] = errors(items)
    assert (err.line_number, err.reason, err.detail, err.user_id) == (
        2,
        R_INVALID_ID,
        "not 38 digits",
        "crm-1",
    )
    assert (p.counters.invalid_ids, p.counters.errors) == (1, 1)


def test_empty_part_is_not_an_error() -> None:
    items, p = parse(b"")
    assert items == []
    assert p.counters.lines == 0
    gz = BATCH.with_part(None)
    items, _ = parse(gzip.compress(b""), OutboundFileName("ftp", 655, 269, "full", gz.timestamp_ms, gzip=True))
    assert items == []


def test_corrupt_gzip_part() -> None:
    name = OutboundFileName("ftp", 655, 269, "full", 1337229891903, gzip=True)
    with pytest.raises(CorruptGzip):
        parse(gzip.compress(b"u 1 \n")[:-1], name)


@FAST
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=6), st.booleans())
def test_arbitrary_bytes_only_yield_items_or_typed_errors(data: bytes, cuts: list[int], gz: bool) -> None:
    name = BATCH.with_part(None) if not gz else OutboundFileName("ftp", 1, 2, "iter", 1337229891903, gzip=True)
    try:
        items, p = parse(data, name, cuts, max_line_bytes=64)
    except CorruptGzip:
        return
    assert all(isinstance(i, OutboundRecord | LineError) for i in items)
    c = p.counters
    assert c.lines == c.records + c.errors + c.blank_lines + c.header_lines
    numbers = [i.line_number for i in items]
    assert numbers == sorted(set(numbers))


# The fast path (whole pieces of ordinary lines as RecordBlock columns) must give exactly what the careful
# line-by-line path gives: pieces under 4 KiB never take it, so feeding the same bytes in small pieces is the
# reference.
ORDINARY = st.builds(
    lambda uid, segs, removed: f"{uid} {','.join(map(str, segs))} {','.join(map(str, removed))}\n".encode(),
    st.text(
        st.characters(blacklist_characters=" \r\n,\x85\u2028\u2029", blacklist_categories=["Cs"]),
        min_size=1,
        max_size=40,
    ),
    st.lists(st.integers(0, 10**18 - 1) | st.integers(1, 5), min_size=1, max_size=4),
    st.lists(st.integers(1, 5), max_size=2),
)
ODD_LINES = [
    b"\n",  # blank
    b"u1 5 \r\n",  # CRLF
    b"u2 5\n",  # two fields
    b"u3 5 6 7\n",  # four fields
    b" 5 \n",  # no user id
    b"u4 5,,6 \n",  # empty segment token
    b"u5 x \n",  # not a number
    b"u6 99999999999999999999 \n",  # above the largest segment id
    b"u7  \n",  # no segment at all
    b"u8\t9 5 \n",  # TAB inside the user id: valid here
    b"u9 \xff 5\n",  # not UTF-8
    b"\xef\xbb\xbfu10 5 \n",  # a BOM not on line 1
    b"u11 " + b"1," * 150 + b"2 \n",  # over a small line limit
    "é".encode() * 160 + b" 5 \n",  # over it in bytes, not in characters
    b"u12  5\n",  # two spaces: removals after one-space separators, segments after two-space ones
    b"u13  5  6\n",  # two-space separators: the part now shows two widths
    b"u14  5  \n",  # the same, with an empty removal field
    b"UUID SEGMENT_LIST REMOVED_SEGMENT_LIST\n",  # a header row where it comes first, an error elsewhere
    b"u15 5\r\r\n",  # a CR that is not part of the line end
    b"u16    5\n",  # four spaces: removals after two-space separators (or segments after four-space ones)
]
ODD = st.sampled_from(ODD_LINES)


def _blocks_then_records(data: bytes, cuts: list[int], **kw: object) -> tuple[list[object], OutboundParser]:
    p = OutboundParser(BATCH, **kw)  # type: ignore[arg-type]
    out: list[object] = []
    for chunk in chunked(data, cuts):
        out.extend(p.feed(chunk))
    out.extend(p.close())
    return out, p


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(ORDINARY, min_size=150, max_size=400),
    st.lists(st.tuples(st.integers(0, 400), ODD), max_size=4),
    st.lists(st.integers(0, 30_000), max_size=4),
    st.sampled_from([MAX_LINE_BYTES, 300]),
    st.booleans(),
)
def test_fast_path_gives_what_the_line_by_line_path_gives(
    lines: list[bytes], odd: list[tuple[int, bytes]], cuts: list[int], max_line: int, bom: bool
) -> None:
    for at, line in odd:
        lines.insert(min(at, len(lines)), line)
    data = (UTF8_BOM if bom else b"") + b"".join(lines)
    fast_items, fast = _blocks_then_records(data, sorted(cuts), max_line_bytes=max_line)
    slow_items, slow = _blocks_then_records(data, list(range(0, len(data), 1000)), max_line_bytes=max_line)
    assert fast_items == slow_items
    assert fast.counters == slow.counters


@pytest.mark.parametrize("odd", ODD_LINES)
@pytest.mark.parametrize("max_line", [MAX_LINE_BYTES, 300])
def test_one_unusual_line_among_ordinary_ones(odd: bytes, max_line: int) -> None:
    lines = [f"{UUID} {i % 7},{i} {i % 2 or ''}\n".encode() for i in range(300)]
    lines.insert(100, odd)
    data = b"".join(lines)
    for cuts in ([], [5_000]):
        fast_items, fast = _blocks_then_records(data, cuts, max_line_bytes=max_line)
        slow_items, slow = _blocks_then_records(data, list(range(0, len(data), 1000)), max_line_bytes=max_line)
        assert fast_items == slow_items
        assert fast.counters == slow.counters


def test_fast_path_is_taken_for_ordinary_pieces() -> None:
    data = b"".join(f"{UUID} 1,{i % 3} \n".encode() for i in range(2000))
    p = OutboundParser(BATCH)
    items = list(p.feed_blocks(data[:50_000])) + list(p.feed_blocks(data[50_000:])) + list(p.close_blocks())
    blocks = [i for i in items if isinstance(i, RecordBlock)]
    assert len(blocks) == 2
    assert sum(len(b.user_ids) for b in blocks) >= 1990
    # Equal segment fields share one tuple: what lets a reader group lines without looking at each one.
    assert blocks[0].segments[0] is blocks[0].segments[3]
    records_ = [r for i in items for r in (i.records() if isinstance(i, RecordBlock) else [i])]
    assert [r.line_number for r in records_] == list(range(1, 2001))
    assert records_[1] == OutboundRecord(2, UUID, (1, 1), ())


# ------------------------------------------------------------------------------------- writing

user_ids = st.text(min_size=1, max_size=20).filter(
    lambda s: not any(c in s for c in " \r\n") and not s.startswith("\ufeff")
)
segment_ids = st.lists(st.integers(0, 2**63 - 1) | st.integers(0, 1000), max_size=6)
rows_strategy = st.lists(
    st.tuples(user_ids, segment_ids, segment_ids).filter(lambda r: bool(r[1] or r[2])), max_size=25
)


@FAST
@given(
    rows_strategy,
    st.booleans(),
    st.sampled_from(["padded", "dash"]),
    st.integers(200, 2000),
    st.lists(st.integers(0, 3000), max_size=6),
)
def test_write_then_parse_round_trip(
    rows: list[OutboundRow], gz: bool, style: SplitStyle, limit: int, cuts: list[int]
) -> None:
    batch = OutboundFileName("S3", 1234, 20914, "full", 1486140844000, gzip=gz, split_style=style)
    w = OutboundWriter(batch, max_part_bytes=limit, chunk_bytes=64)
    with pytest.raises(RuntimeError):
        w.info()
    parts = list(collect_parts(w.write(rows)))
    info = w.info()
    assert [p.summary for p in parts] == w.parts
    assert info.inconsistencies() == []
    assert info.totals.file_name == batch.totals_name
    assert info.totals.total_number_lines == len(rows)
    assert parse_info(info.to_json()) == info
    assert w.info_name == batch.info_name
    got: list[OutboundRecord] = []
    for part, entry in zip(parts, info.files, strict=True):
        s = part.summary
        assert (entry.file_name, entry.byte_size, entry.line_count, entry.sequence_number, entry.md5) == (
            s.name,
            len(part.data),
            s.line_count,
            s.number,
            hashlib.md5(part.data).hexdigest(),
        )
        assert s.content_bytes <= limit
        assert batch_root_of(s.name) == batch.batch_root
        expected_part = None if len(parts) == 1 else s.number
        assert parse_outbound_name(s.name).name == batch.part_name(expected_part)
        items, p = parse(part.data, s.name, cuts)
        assert not errors(items)
        assert p.counters.lines == s.line_count
        got.extend(records(items))
    assert [(r.user_id, list(r.segments), list(r.removed)) for r in got] == [(u, s, r) for u, s, r in rows]


def test_split_batch_names_and_info() -> None:
    rows: list[OutboundRow] = [(f"{i:038d}", [24, 26], [25]) for i in range(100)]
    styles: list[tuple[SplitStyle, str]] = [("padded", "002"), ("dash", "-2")]
    for style, second in styles:
        batch = OutboundFileName("ftp", 12345, 67890, "full", 1500727351632, gzip=True, split_style=style)
        w = OutboundWriter(batch, max_part_bytes=1000)
        parts = list(collect_parts(w.write(rows)))
        assert len(parts) == 5  # 48-byte lines, 20 per part
        assert parts[1].summary.name == f"ftp_12345_67890_full_1500727351632{second}.sync.gz"
        info = w.info()
        assert [f.sequence_number for f in info.files] == [1, 2, 3, 4, 5]
        assert info.totals.total_number_files == 5
        assert info.totals.total_byte_size == sum(len(p.data) for p in parts)


def test_empty_batch_has_an_info_listing_no_file() -> None:
    w = OutboundWriter(BATCH)
    assert list(w.write([])) == []
    info = w.info()
    assert info.files == ()
    assert info.totals.total_number_files == 0
    assert info.inconsistencies() == []
    assert build_info(BATCH, []) == info
    assert isinstance(info, InfoFile)


def test_writer_refuses_a_named_part() -> None:
    with pytest.raises(BadFileName):
        OutboundWriter(BATCH.with_part(2))


def test_the_package_keeps_the_names_of_the_former_module() -> None:
    """``shared.formats.outbound`` was one module; its public names stay importable from the package."""
    from shared.formats import outbound

    names = [
        "DEFAULT_MAX_PART_BYTES",
        "INFO_SUFFIX",
        "MAX_LINE_BYTES",
        "MAX_SEGMENT_ID",
        "R_BAD_SEGMENT",
        "R_EMPTY_USER_ID",
        "R_FIELDS",
        "R_INVALID_ID",
        "R_NOT_UTF8",
        "R_NO_SEGMENTS",
        "R_TOO_LONG",
        "SYNC_TYPES",
        "BadInfoFile",
        "InfoFile",
        "InfoFileEntry",
        "InfoTotals",
        "OutboundCounters",
        "OutboundFileName",
        "OutboundItem",
        "OutboundMode",
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
        "outbound_name",
        "parse_info",
        "parse_outbound_line",
        "parse_outbound_name",
    ]
    assert set(names) <= set(outbound.__all__)
    assert all(hasattr(outbound, n) for n in outbound.__all__)
