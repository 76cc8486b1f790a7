from __future__ import annotations

import gzip
import hashlib
from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.formats import BadFileName, CorruptGzip, EmptyFile, FormatError, InvalidRecord
from shared.formats.inbound import (
    MAX_LINE_BYTES,
    R_BAD_TOKEN,
    R_EMPTY_USER_ID,
    R_INVALID_ID,
    R_NO_TAB,
    R_NOT_UTF8,
    R_OVER_USER_LIMIT,
    R_TOO_LONG,
    R_TWO_TABS,
    InboundFileName,
    InboundItem,
    InboundParser,
    InboundRecord,
    InboundRow,
    InboundWriter,
    format_inbound_line,
    inbound_name,
    inbound_object_key,
    parse_inbound_line,
    parse_inbound_name,
    write_inbound,
)
from shared.formats.lines import LineError
from shared.formats.parts import collect_parts

# No deadline nor speed health check: the suite also runs on loaded CI machines.
FAST = settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

UUID = "59767559181262060060278870901087098252"
SYNC = InboundFileName(478, 1366545717)
OVERWRITE = InboundFileName(478, 1366545717, "overwrite")


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    out, prev = [], 0
    for p in points:
        out.append(data[prev:p])
        prev = p
    out.append(data[prev:])
    return out


def parse(
    data: bytes, name: InboundFileName | str = SYNC, cuts: list[int] | None = None, **kw: object
) -> tuple[list[InboundItem], InboundParser]:
    p = InboundParser(name, **kw)  # type: ignore[arg-type]
    return list(p.parse(chunked(data, cuts or []))), p


def records(items: list[InboundItem]) -> list[InboundRecord]:
    return [i for i in items if isinstance(i, InboundRecord)]


def errors(items: list[InboundItem]) -> list[LineError]:
    return [i for i in items if isinstance(i, LineError)]


# ----------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ftp_dpm_478_1366545717.sync.1.gz", InboundFileName(478, 1366545717, "sync", 1, True)),
        ("ftp_dpm_478_1366545717.overwrite", InboundFileName(478, 1366545717, "overwrite")),
        ("ftp_dpm_478_567_1366545717.sync.gz", InboundFileName(478, 1366545717, gzip=True, target_dpid=567)),
        ("ftp_dpm_33_21_1234567890.sync", InboundFileName(33, 1234567890, target_dpid=21)),
        ("ftp_dpm_1234567890_1234567890.sync.12", InboundFileName(1234567890, 1234567890, part=12)),
    ],
)
def test_contract_names(name: str, expected: InboundFileName) -> None:
    parsed = parse_inbound_name(name)
    assert parsed == expected
    assert parsed.name == name == str(parsed)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("dpm_478_1366545717.sync", "does not start with 'ftp_dpm_'"),
        ("ftp_dpm_odc_478_1366545717.sync", "Oracle Data Cloud"),
        ("ftp_dpm_100_1234567890.sync.pgp", "PGP"),
        ("ftp_dpm_100_1234567890.sync.gpg", "PGP"),
        ("ftp_dpm_100_1234567890.sync.zip", "part number is not a number"),
        ("ftp_dpm_100_1234567890.full", "mode must be sync or overwrite"),
        ("ftp_dpm_100_123456789.sync", "timestamp is not 10 digits"),
        ("ftp_dpm_100_12345678901.sync", "timestamp is not 10 digits"),
        ("ftp_dpm_100_1234567890.sync.0", "part number must be at least 1"),
        ("ftp_dpm_100_1234567890", "expected <ids>"),
        ("ftp_dpm_100_1234567890.sync.1.2", "expected <ids>"),
        ("ftp_dpm_1234567890.sync", "expected <DPID>"),
        ("ftp_dpm_a_1234567890.sync", "expected <DPID>"),
        ("ftp_dpm_1_2_3_1234567890.sync", "expected <DPID>"),
        ("ftp_dpm_\uff11_1234567890.sync", "expected <DPID>"),  # full-width digit one
        ("", "does not start"),
    ],
)
def test_bad_names(name: str, reason: str) -> None:
    with pytest.raises(BadFileName) as e:
        parse_inbound_name(name)
    assert reason in e.value.reason
    assert e.value.name.startswith("ftp_dpm_") or e.value.name == name
    assert isinstance(e.value, FormatError)


@FAST
@given(
    st.integers(0, 10**9),
    st.integers(1_000_000_000, 9_999_999_999),
    st.sampled_from(["sync", "overwrite"]),
    st.none() | st.integers(1, 10**4),
    st.booleans(),
    st.none() | st.integers(0, 10**9),
)
def test_name_round_trip(dpid: int, ts: int, mode: str, part: int | None, gz: bool, target: int | None) -> None:
    name = inbound_name(dpid, ts, mode, part=part, gzip=gz, target_dpid=target)  # type: ignore[arg-type]
    parsed = parse_inbound_name(name)
    assert (parsed.dpid, parsed.timestamp, parsed.mode, parsed.part, parsed.gzip, parsed.target_dpid) == (
        dpid,
        ts,
        mode,
        part,
        gz,
        target,
    )
    assert parsed.name == name


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"dpid": -1, "timestamp": 1234567890}, "negative"),
        ({"dpid": 1, "timestamp": 123456789}, "10 digits"),
        ({"dpid": 1, "timestamp": 12345678901}, "10 digits"),
        ({"dpid": 1, "timestamp": 1234567890, "mode": "full"}, "mode"),
        ({"dpid": 1, "timestamp": 1234567890, "part": 0}, "at least 1"),
    ],
)
def test_builder_refuses_bad_parts(kwargs: dict[str, object], reason: str) -> None:
    with pytest.raises(BadFileName) as e:
        InboundFileName(**kwargs)  # type: ignore[arg-type]
    assert reason in e.value.reason


def test_object_key() -> None:
    name = InboundFileName(478, 1462752000, gzip=True)
    assert name.upload_date == date(2016, 5, 9)
    assert inbound_object_key("acme", name) == "acme/date=2016-05-09/ftp_dpm_478_1462752000.sync.gz"
    assert inbound_object_key("acme", name, date(2020, 1, 2)).startswith("acme/date=2020-01-02/")
    with pytest.raises(BadFileName):
        inbound_object_key("a/b", name)


# ----------------------------------------------------------------------------------------- lines


def test_contract_sample_line_round_trips() -> None:
    line = format_inbound_line(UUID, [24, 26, 27], [28, 29])
    assert line == f"{UUID}\td_sid=24,d_sid=26,d_sid=27,d_unsid=28,d_unsid=29\n".encode()
    assert parse_inbound_line(line[:-1], 7) == InboundRecord(7, UUID, (24, 26, 27), (28, 29))


@pytest.mark.parametrize(
    ("line", "adds", "removes", "signals"),
    [
        (f"{UUID}\t28:0,29:0", (), (28, 29), ()),
        (f"{UUID}\t28:-1, d_sid=5", (5,), (28,), ()),
        ("DBwFoc3dhfMNCFBh2M4F9ZkJEXMNnRDh2PXvnI1\tic=52,ic=55", (), (), (("ic", "52"), ("ic", "55"))),
        (
            '6D92078A-8246-4BA4-AE5B-76104861E7DC\t"product"="tablet","product"="phone"',
            (),
            (),
            (("product", "tablet"), ("product", "phone")),
        ),
        (
            '1060413022\t"ACCOUNT_TYPE"="HAC", "Plans"="123", "CustomerStatus"="On"',
            (),
            (),
            (("ACCOUNT_TYPE", "HAC"), ("Plans", "123"), ("CustomerStatus", "On")),
        ),
        ("u\t30608,50354", (), (), (("ic", "30608"), ("ic", "50354"))),
        ("u\t-gender=f", (), (), (("gender", "f"),)),
        ("u\t", (), (), ()),
        ("u\t  ", (), (), ()),
        ("u\td_sid=24, d_sid=26", (24, 26), (), ()),
    ],
)
def test_contract_trait_forms(
    line: str, adds: tuple[int, ...], removes: tuple[int, ...], signals: tuple[tuple[str, str], ...]
) -> None:
    rec = parse_inbound_line(line.encode())
    assert isinstance(rec, InboundRecord)
    assert (rec.adds, rec.removes, rec.signals) == (adds, removes, signals)


@pytest.mark.parametrize(
    "token",
    [
        "d_sid=",
        "d_sid=abc",
        "d_sid=-1",
        "d_sid=1.5",
        "d_sid=1_000",
        "d_sid=\u0661",  # Arabic-Indic digit one
        "d_unsid=x",
        "x:0",
        ":0",
        "1:2:0",
        "plain",
        "=v",
        "k=",
        '""=v',
        "",
        f"d_sid={2**63}",
    ],
)
def test_bad_tokens(token: str) -> None:
    err = parse_inbound_line(f"u\td_sid=1,{token}".encode(), 3, file_name="f")
    assert isinstance(err, LineError)
    assert (err.reason, err.line_number, err.file_name, err.user_id) == (R_BAD_TOKEN, 3, "f", "u")


def test_trailing_comma_is_a_bad_token() -> None:
    err = parse_inbound_line(b"u\td_sid=1,")
    assert isinstance(err, LineError)
    assert err.reason == R_BAD_TOKEN


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"u\xffx\td_sid=1", R_NOT_UTF8),
        (b"u d_sid=1", R_NO_TAB),
        (b"\td_sid=1", R_EMPTY_USER_ID),
        (b"u\td_sid=1\td_sid=2", R_TWO_TABS),
    ],
)
def test_line_errors(line: bytes, reason: str) -> None:
    err = parse_inbound_line(line)
    assert isinstance(err, LineError)
    assert err.reason == reason


def test_overwrite_ignores_removals() -> None:
    rec = parse_inbound_line(b"u\td_sid=1,d_unsid=2,3:0,4:-1", overwrite=True)
    assert rec == InboundRecord(1, "u", (1,), (), ())
    items, p = parse(b"u\td_sid=1,d_unsid=2,3:0\n", OVERWRITE)
    assert records(items) == [InboundRecord(1, "u", (1,), ())]
    assert p.counters.removals_ignored == 2
    assert p.counters.traits_removed == 0


@pytest.mark.parametrize(
    ("user_id", "adds", "removes"),
    [
        ("", [1], []),
        ("a\tb", [1], []),
        ("a\nb", [1], []),
        ("a\rb", [1], []),
        ("\ufeffa", [1], []),
        ("\ud800", [1], []),
        ("u", [-1], []),
        ("u", [True], []),
        ("u", [1.0], []),
        ("u", [], [2**63]),
        ("u", list(range(10_000)), []),  # longer than 102,400 bytes
    ],
)
def test_format_refuses_what_cannot_be_written(user_id: str, adds: list[int], removes: list[int]) -> None:
    with pytest.raises(InvalidRecord):
        format_inbound_line(user_id, adds, removes)


# --------------------------------------------------------------------------------------- parsing


def test_stream_with_crlf_blank_lines_bom_and_errors() -> None:
    data = (
        b"\xef\xbb\xbf" + UUID.encode() + b"\td_sid=1\r\n\r\nbad line\nu2\td_unsid=5,4:0\nu3\xfe\td_sid=1\nu4\td_sid=9"
    )
    for cuts in ([], [1], [2, 3, 4], list(range(len(data)))):
        items, p = parse(data, cuts=cuts)
        assert records(items) == [
            InboundRecord(1, UUID, (1,), ()),
            InboundRecord(4, "u2", (), (5, 4)),
            InboundRecord(6, "u4", (9,), ()),
        ]
        assert [(e.line_number, e.reason) for e in errors(items)] == [(3, R_NO_TAB), (5, R_NOT_UTF8)]
        c = p.counters
        assert (c.lines, c.blank_lines, c.records_received, c.format_errors, c.records_parsed) == (
            6,
            1,
            5,
            2,
            3,
        )
        assert c.bytes_read == len(data)
        assert c.receipt() == {
            "Records received": 5,
            "Format Errors": 2,
            "Invalid AAM ID": 0,
            "Records processed": 5,
        }
        assert c.errors_by_reason == {R_NO_TAB: 1, R_NOT_UTF8: 1}


def test_over_long_line_at_the_platform_limit() -> None:
    ok = b"u\t" + b"d_sid=1," * ((MAX_LINE_BYTES - 10) // 8) + b"d_sid=2"
    assert len(ok) <= MAX_LINE_BYTES
    too_long = b"v\t" + b"d_sid=1," * (MAX_LINE_BYTES // 8) + b"d_sid=2"
    data = ok + b"\r\n" + too_long + b"\nw\td_sid=3\n"
    items, p = parse(data, cuts=list(range(0, len(data), 4096)))
    assert [r.user_id for r in records(items)] == ["u", "w"]
    [err] = errors(items)
    assert (err.line_number, err.reason, err.file_name) == (2, R_TOO_LONG, SYNC.name)
    assert p.counters.format_errors == 1


def test_lines_after_the_200th_of_a_user_are_reported() -> None:
    data = b"".join(b"u\td_sid=%d\n" % i for i in range(203)) + b"v\td_sid=1\n"
    items, p = parse(data)
    assert len(records(items)) == 201
    errs = errors(items)
    assert [(e.line_number, e.reason, e.user_id) for e in errs] == [
        (201, R_OVER_USER_LIMIT, "u"),
        (202, R_OVER_USER_LIMIT, "u"),
        (203, R_OVER_USER_LIMIT, "u"),
    ]
    c = p.counters
    assert (c.records_received, c.discarded_over_user_limit, c.records_processed, c.format_errors) == (
        204,
        3,
        201,
        0,
    )
    items, _ = parse(data, max_lines_per_user=None)
    assert not errors(items)


def test_user_id_type_is_checked_when_asked() -> None:
    data = f"{UUID}\td_sid=1\ncrm-42\td_sid=1\n".encode()
    items, p = parse(data, id_type="ecid")
    [err] = errors(items)
    assert (err.line_number, err.reason, err.detail, err.user_id) == (
        2,
        R_INVALID_ID,
        "not 38 digits",
        "crm-42",
    )
    assert p.counters.invalid_ids == 1
    assert p.counters.format_errors == 0
    assert p.counters.receipt()["Invalid AAM ID"] == 1


@pytest.mark.parametrize("data", [b"", b"\n", b"\r\n\n\n", b"\xef\xbb\xbf"])
def test_empty_files_are_invalid(data: bytes) -> None:
    with pytest.raises(EmptyFile):
        parse(data)
    with pytest.raises(EmptyFile):
        parse(gzip.compress(data), InboundFileName(1, 1234567890, gzip=True))


def test_file_with_only_bad_lines_is_not_empty() -> None:
    items, _ = parse(b"garbage\n")
    assert [e.reason for e in errors(items)] == [R_NO_TAB]


def test_gzip_file_and_corrupt_gzip() -> None:
    name = InboundFileName(1, 1234567890, gzip=True)
    z = gzip.compress(b"u\td_sid=1\n") + gzip.compress(b"v\td_sid=2\n")
    items, p = parse(z, name, cuts=[3, 10, 30])
    assert [r.user_id for r in records(items)] == ["u", "v"]
    assert p.counters.bytes_read == len(z)
    with pytest.raises(CorruptGzip):
        parse(z[:-3], name)
    with pytest.raises(CorruptGzip):
        parse(b"u\td_sid=1\n", name)
    # An explicit gzip flag wins over the name.
    items, _ = parse(z, SYNC, gzip=True)
    assert len(records(items)) == 2


@FAST
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=6), st.booleans())
def test_arbitrary_bytes_only_yield_items_or_typed_errors(data: bytes, cuts: list[int], gz: bool) -> None:
    name = InboundFileName(1, 1234567890, "overwrite" if gz else "sync", gzip=gz)
    try:
        items, p = parse(data, name, cuts, max_line_bytes=64, max_lines_per_user=2)
    except (EmptyFile, CorruptGzip):
        return
    assert all(isinstance(i, InboundRecord | LineError) for i in items)
    c = p.counters
    assert c.records_received == c.records_parsed + c.format_errors + c.invalid_ids + c.discarded_over_user_limit
    assert c.lines == c.records_received + c.blank_lines
    numbers = [i.line_number for i in items]
    assert numbers == sorted(set(numbers))


# ------------------------------------------------------------------------------------- writing

user_ids = st.text(min_size=1, max_size=20).filter(
    lambda s: not any(c in s for c in "\t\r\n") and not s.startswith("\ufeff")
)
trait_ids = st.lists(st.integers(0, 2**63 - 1) | st.integers(0, 1000), max_size=6)
rows_strategy = st.lists(st.tuples(user_ids, trait_ids, trait_ids), max_size=25)


def write_and_parse(rows: list[InboundRow], name: InboundFileName, limit: int, cuts: list[int]) -> list[InboundRecord]:
    w = InboundWriter(name, max_part_bytes=limit, chunk_bytes=50)
    parts = list(collect_parts(w.write(rows)))
    assert [p.summary for p in parts] == w.parts
    if not rows:
        assert parts == []
        return []
    if len(parts) == 1:
        assert parts[0].summary.name == name.name
    else:
        assert [p.summary.name for p in parts] == [name.part_name(i) for i in range(1, len(parts) + 1)]
    out: list[InboundRecord] = []
    for part in parts:
        s = part.summary
        assert s.content_bytes <= limit
        assert s.byte_size == len(part.data)
        assert s.md5 == hashlib.md5(part.data).hexdigest()
        parsed_name = parse_inbound_name(s.name)
        items, p = parse(part.data, parsed_name, cuts, max_lines_per_user=None)
        assert not errors(items)
        assert p.counters.lines == s.line_count
        out.extend(records(items))
    return out


@FAST
# The smallest limit holds the longest line the strategy can make (a 20-character ID of 4-byte characters and
# 12 trait tokens of 19 digits: ~400 bytes); a longer line is refused by design (tested apart).
@given(rows_strategy, st.booleans(), st.integers(450, 2000), st.lists(st.integers(0, 3000), max_size=6))
def test_write_then_parse_round_trip(rows: list[InboundRow], gz: bool, limit: int, cuts: list[int]) -> None:
    name = InboundFileName(478, 1366545717, gzip=gz)
    got = write_and_parse(rows, name, limit, cuts)
    assert [(r.user_id, list(r.adds), list(r.removes)) for r in got] == [(u, a, r) for u, a, r in rows]


@FAST
@given(st.lists(st.tuples(user_ids, trait_ids), max_size=15), st.booleans())
def test_overwrite_round_trip(rows: list[tuple[str, list[int]]], gz: bool) -> None:
    name = InboundFileName(478, 1366545717, "overwrite", gzip=gz)
    got = write_and_parse([(u, a, []) for u, a in rows], name, 300, [])
    assert [(r.user_id, list(r.adds)) for r in got] == [(u, a) for u, a in rows]


def test_writer_refuses_removals_in_overwrite_and_named_parts() -> None:
    with pytest.raises(InvalidRecord):
        list(write_inbound([("u", [1], [2])], OVERWRITE))
    with pytest.raises(BadFileName):
        InboundWriter(SYNC.with_part(1))


def test_large_run_is_split_into_numbered_parts() -> None:
    rows: list[InboundRow] = [(f"{i:038d}", [1, 2], []) for i in range(1000)]
    parts = list(collect_parts(write_inbound(rows, InboundFileName(478, 1366545717, gzip=True), max_part_bytes=10_000)))
    assert len(parts) == 6  # 55-byte lines, 181 per part
    assert [p.summary.name for p in parts][:2] == [
        "ftp_dpm_478_1366545717.sync.1.gz",
        "ftp_dpm_478_1366545717.sync.2.gz",
    ]
    assert sum(p.summary.line_count for p in parts) == 1000


@FAST
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 2**63 - 1)), min_size=1, max_size=8), st.booleans())
def test_fast_and_general_trait_paths_agree(tokens: list[tuple[bool, int]], overwrite: bool) -> None:
    rest = ",".join(f"d_unsid={n}" if un else f"d_sid={n}" for un, n in tokens)
    fast = parse_inbound_line(f"u\t{rest}".encode(), overwrite=overwrite)
    # A space after each comma is legal and takes the general, token-by-token path.
    general = parse_inbound_line(f"u\t{rest.replace(',', ', ')}".encode(), overwrite=overwrite)
    assert fast == general
    assert isinstance(fast, InboundRecord)
    assert fast.adds == tuple(n for un, n in tokens if not un)
    assert fast.removes == (() if overwrite else tuple(n for un, n in tokens if un))


def test_the_package_keeps_the_names_of_the_former_module() -> None:
    """``shared.formats.inbound`` was one module; its public names stay importable from the package."""
    from shared.formats import inbound

    names = [
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
    assert sorted(inbound.__all__) == sorted(names)
    assert all(hasattr(inbound, n) for n in names)
