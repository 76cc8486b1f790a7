"""Every variant of the platform's outbound files its documentation shows, read as the documentation writes
it (issue 14, part 2). Each test names the page its example comes from (Adobe Audience Manager, Experience
League, "Batch Outbound Data Transfers"):

* NAMES: "Outbound Data File Name: Syntax and Examples" (outbound-file-name-contents);
* CONTENTS: the same page's "Outbound Data File Contents: Syntax and Parameters";
* MACROS: "Outbound Template Macros" (outbound-template-macros);
* MACRO_EXAMPLES: "Outbound Macro Examples" (outbound-macro-examples);
* CONTROL: "Transfer-Control Files for Log File Transfers" (transfer-control-files).

A reader must never guess: where a line can be read two ways and nothing in its part decides, it is a
counted error, never a silent reading.
"""

from __future__ import annotations

import gzip as gz
import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.formats import BadFileName
from shared.formats.lines import UTF8_BOM, LineError
from shared.formats.outbound import (
    MAX_HELD_LINES,
    R_AMBIGUOUS,
    R_BAD_SEGMENT,
    R_FIELDS,
    BadTemplate,
    LineLayout,
    NameTemplate,
    OutboundFileName,
    OutboundItem,
    OutboundNames,
    OutboundParser,
    OutboundRecord,
    OutboundRow,
    OutboundWriter,
    RecordBlock,
    SplitStyle,
    parse_info,
    parse_outbound_line,
    parse_outbound_name,
)
from shared.formats.parts import collect_parts

NAMES = "Outbound Data File Name: Syntax and Examples"
CONTENTS = "Outbound Data File Contents: Syntax and Parameters"
MACROS = "Outbound Template Macros"
MACRO_EXAMPLES = "Outbound Macro Examples"
CONTROL = "Transfer-Control Files for Log File Transfers"

UUID = "59767559181262060060278870901087098252"
BATCH = OutboundFileName("ftp", 655, 269, "iter", 1337229891903)
FAST = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def parse(
    data: bytes, name: OutboundFileName = BATCH, piece: int = 1 << 20
) -> tuple[list[OutboundItem], OutboundParser]:
    p = OutboundParser(name)
    items: list[OutboundItem] = []
    for start in range(0, max(len(data), 1), piece):
        items.extend(p.feed(data[start : start + piece]))
    items.extend(p.close())
    return items, p


def records(items: list[OutboundItem]) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    return [(i.user_id, i.segments, i.removed) for i in items if isinstance(i, OutboundRecord)]


def errors(items: list[OutboundItem]) -> list[tuple[int, str]]:
    return [(i.line_number, i.reason) for i in items if isinstance(i, LineError)]


# ------------------------------------------------------------------------------------------ contents


def test_the_contents_example_line_with_two_spaces() -> None:
    """From "Outbound Data File Contents: Syntax and Parameters": "59767559181262060060278870901087098252 24,26,27
    25,28" (two spaces each time)."""
    line = f"{UUID}  24,26,27  25,28"
    assert parse_outbound_line(line.encode()) == OutboundRecord(1, UUID, (24, 26, 27), (25, 28))
    items, p = parse(f"{line}\n".encode())
    assert records(items) == [(UUID, (24, 26, 27), (25, 28))]
    assert p.separator_widths == {2}


def test_the_contents_syntax_with_one_space() -> None:
    """From "Outbound Data File Contents: Syntax and Parameters":
    "UUID<SPACE>SEGMENT_1,SEGMENT_2<SPACE>REMOVED_SEGMENT_..." (one space)."""
    items, p = parse(f"{UUID} 24,26,27 25,28\n{UUID} 24 \n".encode())
    assert records(items) == [(UUID, (24, 26, 27), (25, 28)), (UUID, (24,), ())]
    assert p.separator_widths == {1}


def test_two_spaces_before_a_lone_list_are_read_by_the_parts_separator() -> None:
    """From "Outbound Data File Contents: Syntax and Parameters": "u X" is X the segments after the example's two-space
    separator, or the removals after the syntax's one space and an empty segment list? The part's other lines tell,
    before or after it."""
    two = f"{UUID}  24,26\n{UUID}  24,26,27  25,28\n{UUID}  27\n".encode()
    items, _ = parse(two)
    assert records(items) == [(UUID, (24, 26), ()), (UUID, (24, 26, 27), (25, 28)), (UUID, (27,), ())]
    assert [i.line_number for i in items] == [1, 2, 3]
    one = f"{UUID}  25\n{UUID} 24 \n".encode()
    assert records(parse(one)[0]) == [(UUID, (), (25,)), (UUID, (24,), ())]
    # The issue's delivery: nothing but "ID  SEGMENTS" lines among two-space ones, never read as removals.
    issue = b"".join(f"{i:038d}  5001\n".encode() for i in range(20)) + f"{UUID}  5001  5002\n".encode()
    items, p = parse(issue, piece=7)
    assert records(items)[:20] == [(f"{i:038d}", (5001,), ()) for i in range(20)]
    assert p.counters.segment_removals == 1


def test_a_part_showing_two_separators_makes_its_undecidable_lines_errors() -> None:
    """From "Outbound Data File Contents: Syntax and Parameters": a part whose lines are one space apart and two spaces
    apart cannot say what "u X" is."""
    data = f"{UUID} 24 \n{UUID}  24  25\n{UUID}  26\n{UUID} 27 28\n".encode()
    items, p = parse(data)
    assert records(items) == [(UUID, (24,), ()), (UUID, (24,), (25,)), (UUID, (27,), (28,))]
    assert errors(items) == [(3, R_AMBIGUOUS)]
    assert p.separator_widths == {1, 2}


def test_a_part_that_never_shows_its_separator_follows_the_documented_separators() -> None:
    """From "Outbound Data File Contents: Syntax and Parameters": with nothing in the part to tell, a line is
    read by the syntax's one space, else by the example's two: a delta of removals only, in either."""
    items, _ = parse(f"{UUID}  25\n{UUID}  26,27\n".encode())
    assert records(items) == [(UUID, (), (25,)), (UUID, (), (26, 27))]
    items, _ = parse(f"{UUID}    25\n{UUID}    26\n".encode())  # two-space separators, an empty segment list
    assert records(items) == [(UUID, (), (25,)), (UUID, (), (26,))]
    items, _ = parse(f"{UUID}      25\n".encode())  # 6 spaces: 3 and an empty field, or 6: no documented one
    assert errors(items) == [(1, R_AMBIGUOUS)]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"u  24  ", ("u", (24,), ())),  # two-space separators, empty removal field
        (b"u    25", ("u", (), (25,))),  # two-space separators and an empty segment field (or a 4-space one)
        (b"u      25", R_AMBIGUOUS),  # 3-space separators and an empty segment field, or a 6-space one
        (b"u   24", ("u", (24,), ())),  # three spaces: only a 3-space separator fits
        (b"u  24 25", R_FIELDS),  # separators of different widths in one line
        (b"u 24  ", R_FIELDS),  # a trailing run that fits no separator
    ],
)
def test_runs_of_spaces(line: bytes, expected: tuple[str, tuple[int, ...], tuple[int, ...]] | str) -> None:
    """From "Outbound Data File Contents: Syntax and Parameters": fields apart by runs of spaces, the same run
    everywhere in a line."""
    items, _ = parse(line + b"\n")
    if isinstance(expected, str):
        assert [r for _n, r in errors(items)] == [expected]
    else:
        assert records(items) == [expected]


def test_a_separator_known_beforehand_decides_at_once() -> None:
    """From "Outbound Data File Contents: Syntax and Parameters": a caller that knows the part's separator (an
    earlier part of the batch showed it) says so, and "u  X" is read by it at once."""
    p = OutboundParser(BATCH, separator_width=2)
    items = [*p.feed(f"{UUID}  25\n".encode()), *p.close()]
    assert records(items) == [(UUID, (25,), ())]


def test_lines_held_for_the_separator_are_bounded() -> None:
    """From "Outbound Data File Contents: Syntax and Parameters": lines wait for their part's separator, but not
    without bound: after MAX_HELD_LINES the documented syntax is taken, and a later two-space line makes the rest
    undecidable."""
    data = f"{UUID}  25\n".encode() * (MAX_HELD_LINES + 2) + f"{UUID}  24  25\n{UUID}  26\n".encode()
    items, p = parse(data)
    assert records(items)[: MAX_HELD_LINES + 2] == [(UUID, (), (25,))] * (MAX_HELD_LINES + 2)
    assert errors(items) == [(MAX_HELD_LINES + 4, R_AMBIGUOUS)]
    assert p.separator_widths == {1, 2}


def test_crlf_mixed_line_ends_bom_blank_lines_and_header_rows() -> None:
    """From "Transfer-Control Files for Log File Transfers": "Byte sizes of files and line counts are inclusive of any
    header and spacer (blank) lines/rows"; the header row is "Outbound Macro Examples"' "<ORDER_ID>
    <TAB><SYNC_TYPE>" ("888 full.sync")."""
    name = OutboundFileName("ftp", 888, 20915, "full", 1449756724000)
    data = (
        UTF8_BOM
        + b"888\tfull.sync\r\n\r\nUUID SEGMENT_LIST REMOVED_SEGMENT_LIST\n"
        + f"{UUID} 24,26 \r\n\n{UUID} 27 28\n{UUID} 29 \r\n".encode()
    )
    for piece in (1, 5, 1 << 20):
        items, p = parse(data, name, piece)
        assert records(items) == [(UUID, (24, 26), ()), (UUID, (27,), (28,)), (UUID, (29,), ())]
        c = p.counters
        assert (c.lines, c.header_lines, c.blank_lines, c.records, c.errors) == (7, 2, 2, 3, 0)


def test_header_rows_only_before_the_records_and_only_of_header_words() -> None:
    """From "Outbound Template Macros": header rows are made of the file-name and header macros; anything else, or
    anything after the first record, is an error as before."""
    name = OutboundFileName("ftp", 888, 20915, "full", 1449756724000)
    items, p = parse(f"not a header\n{UUID} 1 \n".encode(), name)
    assert errors(items) == [(1, R_BAD_SEGMENT)]
    items, p = parse(f"{UUID} 1 \n888\tfull.sync\n".encode(), name)
    assert errors(items) == [(2, R_FIELDS)]
    items, p = parse(f"999\tfull.sync\n{UUID} 1 \n".encode(), name)  # not this file's order id
    assert errors(items) == [(1, R_FIELDS)]
    assert p.counters.header_lines == 0


# --------------------------------------------------------------------------- writing every variant


LAYOUTS = [
    LineLayout(),
    LineLayout(separator="  "),
    LineLayout(line_ends="crlf"),
    LineLayout(line_ends="mixed", bom=True),
    LineLayout(header_rows=("888\tfull.sync", "UUID SEGMENT_LIST REMOVED_SEGMENT_LIST"), blank_every=3),
    LineLayout(separator="  ", line_ends="mixed", bom=True, header_rows=("888\tfull.sync",), blank_every=2),
]
ROWS = st.lists(
    st.tuples(
        st.integers(0, 10**38 - 1).map(lambda i: f"{i:038d}"),
        st.lists(st.integers(1, 9), max_size=3),
        st.lists(st.integers(1, 9), max_size=2),
    ).filter(lambda r: bool(r[1] or r[2])),
    min_size=1,
    max_size=300,
)


@FAST
@given(ROWS, st.sampled_from(LAYOUTS), st.booleans(), st.integers(1, 5000))
def test_every_layout_reads_back_as_its_rows(
    rows: list[OutboundRow], layout: LineLayout, gzip: bool, piece: int
) -> None:
    """From "Outbound Data File Contents: Syntax and Parameters" and "Transfer-Control Files for Log File Transfers":
    each variant reads back exactly as the strict form, and the .info counts its every line; a two-space part of
    removals only cannot show its separator and is refused line by line."""
    batch = OutboundFileName("ftp", 888, 20915, "full", 1449756724000, gzip=gzip)
    writer = OutboundWriter(batch, layout=layout)
    [part] = list(collect_parts(writer.write(rows)))
    info = writer.info()
    assert info.files[0].md5 == hashlib.md5(part.data).hexdigest()
    fast_items, fast = parse(part.data, batch)
    slow_items, slow = parse(part.data, batch, piece)
    assert fast_items == slow_items
    assert fast.counters == slow.counters
    assert fast.counters.lines == info.files[0].line_count
    assert records(fast_items) == [(u, tuple(s), tuple(r)) for u, s, r in rows]
    content = gz.decompress(part.data) if gzip else part.data
    assert content.count(b"\n") == info.files[0].line_count


def test_ordinary_pieces_of_crlf_or_bom_files_still_take_the_fast_path() -> None:
    """From "Outbound Data File Contents: Syntax and Parameters": CRLF line ends and a byte order mark leave ordinary
    lines ordinary (1M-line files)."""
    rows: list[OutboundRow] = [(f"{i:038d}", [1, i % 3], [] if i % 2 else [4]) for i in range(3000)]
    layout = LineLayout(line_ends="crlf", bom=True)
    [part] = list(collect_parts(OutboundWriter(BATCH, layout=layout).write(rows)))
    p = OutboundParser(BATCH)
    items = [*p.feed_blocks(part.data), *p.close_blocks()]
    assert [type(i) for i in items] == [RecordBlock]


# ------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("name", "destination", "dpid", "alias", "part"),
    [
        ("S3_1234_20914_XYZCustomer_iter_1486140844000.sync.gz", 1234, 20914, "XYZCustomer", None),
        ("S3_1234_20914_XYZCustomer_full_1486140844000001.sync.gz", 1234, 20914, "XYZCustomer", 1),
        ("ftp_1234_20915_iter_1486140843000002.sync.gz", 1234, 20915, None, 2),
        ("ftp_1234_45454_XYZCustomer_full_1486140843200001.sync.gz", 1234, 45454, "XYZCustomer", 1),
    ],
)
def test_the_name_pages_scenarios(name: str, destination: int, dpid: int, alias: str | None, part: int | None) -> None:
    """From "Outbound Data File Name: Syntax and Examples": scenarios 1 to 3 (Amazon S3 with a PID alias and GAIDs, FTP
    with IDFAs, a vendor DPID)."""
    parsed = parse_outbound_name(name)
    assert (parsed.destination_id, parsed.master_dpid, parsed.pid_alias, parsed.part) == (
        destination,
        dpid,
        alias,
        part,
    )
    same = OutboundNames(
        {"*": '<SYNC_TYPE>_<ORDER_ID>_<MASTER_DPID>[_<PID_ALIAS>]_<SYNC_MODE>_<TIMESTAMP; unit="ms">SPLITNUM.sync'}
    )
    as_template = same.parse(name)
    assert (as_template.destination_id, as_template.master_dpid, as_template.pid_alias, as_template.part) == (
        destination,
        dpid,
        alias,
        part,
    )
    assert as_template.batch_root == parsed.batch_root


def test_the_macro_pages_splitnum_example() -> None:
    """From "Outbound Template Macros": "<SYNC_TYPE>_<ORDER_ID>_<DPID>_<SYNC_MODE>_<TIMESTAMP>SPLITNUM.csv" gives
    s3_123456_9999_full_1566906141001.csv, ...002, ...003 (a 10-digit timestamp, then the split number)."""
    names = OutboundNames({"123456": "<SYNC_TYPE>_<ORDER_ID>_<DPID>_<SYNC_MODE>_<TIMESTAMP>SPLITNUM.csv"})
    parts = [names.parse(f"s3_123456_9999_full_1566906141{k:03d}.csv") for k in (1, 2, 3)]
    assert [p.part for p in parts] == [1, 2, 3]
    assert {(p.timestamp_ms, p.destination_id, p.dpid, p.master_dpid) for p in parts} == {
        (1566906141000, 123456, 9999, 9999)
    }
    assert {p.batch_root for p in parts} == {"s3_123456_9999_full_1566906141"}
    assert names.batch_root_of("s3_123456_9999_full_1566906141.info") == "s3_123456_9999_full_1566906141"
    assert parts[0].totals_name == "s3_123456_9999_full_1566906141.csv"


@pytest.mark.parametrize(
    ("template", "name", "fields"),
    [
        (
            "<SYNC_TYPE>_<ORDER_ID>_<DPID>_<SYNC_MODE>_<TIMESTAMP>.sync",
            "ftp_215_888_iter_1449756724.sync",
            ("ftp", 215, 888, 888, "iter"),
        ),
        (
            "<SYNC_TYPE>_<ORDER_ID>_<DPID>_<MASTER_DPID>_<SYNC_MODE>_<TIMESTAMP>.sync",
            "ftp_215_888_20915_iter_1449756724.sync",
            ("ftp", 215, 888, 20915, "iter"),
        ),
        (
            "<SYNC_TYPE>_<ORDER_ID>_<DPID>_<SYNC_MODE>_<TIMESTAMP>.sync",
            "ftp_215_888_full_1449756724.sync",
            ("ftp", 215, 888, 888, "full"),
        ),
        (
            "<SYNC_TYPE>_<ORDER_ID>_<DPID>_<SYNC_MODE>_<TIMESTAMP>.sync",
            "http_215_888_iter_1449756724.sync",
            ("http", 215, 888, 888, "iter"),
        ),
        (
            "<SYNC_TYPE>_<ORDER_ID>_<DPID>_<SYNC_MODE>_<TIMESTAMP>.sync",
            "s3_215_888_iter_1449756724.sync",
            ("s3", 215, 888, 888, "iter"),
        ),
    ],
)
def test_the_macro_examples_file_names(template: str, name: str, fields: tuple[object, ...]) -> None:
    """From "Outbound Macro Examples": "File Name Macros" (DPID, MASTER_DPID, ORDER_ID, SYNC_MODE, SYNC_TYPE,
    TIMESTAMP): with MASTER_DPID the file's data source is it, with DPID alone the DPID."""
    parsed = OutboundNames({"215": template}).parse(name)
    assert (parsed.sync_type, parsed.destination_id, parsed.dpid, parsed.master_dpid, parsed.mode) == fields
    assert parsed.timestamp_ms == 1449756724000
    assert parsed.name == name


def test_the_control_pages_dash_parts_group_with_their_info() -> None:
    """From "Transfer-Control Files for Log File Transfers": parts "ftp_12345_67890_full_1500727351632-1.sync.gz" ...
    and the control file named after the batch root with .info, in the documented default and in a template with
    <TIMESTAMP; unit="ms">."""
    for names in (
        OutboundNames(),
        OutboundNames({"12345": '<SYNC_TYPE>_<ORDER_ID>_<DPID>_<SYNC_MODE>_<TIMESTAMP; unit="ms">'}),
    ):
        roots = {names.batch_root_of(f"ftp_12345_67890_full_1500727351632-{k}.sync.gz") for k in (1, 2, 3, 4)}
        assert roots == {names.batch_root_of("ftp_12345_67890_full_1500727351632.info")}
        assert names.parse("ftp_12345_67890_full_1500727351632-4.sync.gz").split_style == "dash"


def test_a_name_template_is_read_and_written_alike() -> None:
    """From "Outbound Template Macros": names a template writes read back to the same fields, split in either
    documented style."""
    template = NameTemplate(
        "<SYNC_TYPE>_<ORDER_ID>_<DPID>[_<PID_ALIAS>]_<SYNC_MODE>_<TIMESTAMP>SPLITNUM.sync", destination_id=7
    )
    names = OutboundNames({"7": template.text})
    splits: list[tuple[int | None, SplitStyle]] = [(None, "padded"), (1, "padded"), (12, "dash"), (1234, "padded")]
    for alias in (None, "Campaign"):
        for part, style in splits:
            built = OutboundFileName(
                "s3", 7, 1001, "full", 1_700_000_000_000, part, True, alias, style, template=template
            )
            assert names.parse(built.name) == built
            assert names.batch_root_of(built.info_name) == built.batch_root


def test_names_of_a_destination_follow_its_template_only() -> None:
    """From "Outbound Template Macros": each destination names its files by its own template; other destinations by the
    default."""
    names = OutboundNames({"215": "<SYNC_TYPE>_<ORDER_ID>_<DPID>_<SYNC_MODE>_<TIMESTAMP>.sync"})
    assert names.parse("ftp_216_888_iter_1449756724000.sync").master_dpid == 888  # the default, 13 digits
    with pytest.raises(BadFileName, match="template"):
        names.parse("ftp_215_888_iter_1449756724000.sync")  # 215's names carry seconds
    without_order_id = OutboundNames({"215": "<SYNC_TYPE>_<DPID>_<SYNC_MODE>_<TIMESTAMP>.sync"})
    assert without_order_id.parse("ftp_888_iter_1449756724.sync").destination_id == 215
    with pytest.raises(BadFileName, match="leading zeros"):
        names.parse("ftp_215_0888_iter_1449756724.sync")
    with pytest.raises(BadFileName, match="leading zeros"):
        parse_outbound_name("ftp_655_269_iter_13372298919030001.sync")


@pytest.mark.parametrize(
    ("templates", "reason"),
    [
        ({"1": "<SYNC_TYPE>_<FOO>_<SYNC_MODE>_<TIMESTAMP>"}, "not a documented macro"),
        ({"1": "<UUID>_<SYNC_MODE>_<TIMESTAMP>"}, "not a file-name macro"),
        ({"1": "<ORDER_ID><DPID>_<SYNC_MODE>_<TIMESTAMP>"}, "followed by a character"),
        ({"1": "<ORDER_ID>_<TIMESTAMP>"}, "<SYNC_MODE>"),
        ({"1": "<SYNC_MODE>_<DPID>"}, "<TIMESTAMP>"),
        ({"1": "DPID_<SYNC_MODE>_<TIMESTAMP>"}, "as <DPID>"),
        ({"1": '<SYNC_MODE>_<TIMESTAMP; format="YYYYMMDDhhmmss">'}, "not supported"),
        ({"1": "<SYNC_MODE>_<TIMESTAMP>SPLITNUM_x.sync"}, "right before the extension"),
        ({"1": "<SYNC_MODE>_<TIMESTAMP>.info"}, "extension"),
        ({"1": "<SYNC_MODE> <TIMESTAMP>"}, "cannot be part of a file name"),
        ({"1": "<DPID>_<DPID>_<SYNC_MODE>_<TIMESTAMP>"}, "twice"),
        ({"*": "<SYNC_TYPE>_<DPID>_<SYNC_MODE>_<TIMESTAMP>"}, "<ORDER_ID>"),
        ({"x": "<SYNC_MODE>_<TIMESTAMP>"}, "destination id"),
    ],
)
def test_templates_the_bridge_cannot_read_names_with_are_refused(templates: dict[str, str], reason: str) -> None:
    """From "Outbound Template Macros": only the documented file-name macros, in a template that reads one way."""
    with pytest.raises(BadTemplate, match=reason):
        OutboundNames(templates)


def test_the_documented_default_may_be_named_as_the_name_page_writes_it() -> None:
    """From "Outbound Data File Name: Syntax and Examples": "[SYNC_TYPE][_DID][_MASTER_DPID][_PID_ALIAS][_SYNC-
    MODE][_TIMESTAMP]SPLITNUM.sync[.gz]"."""
    names = OutboundNames(
        {"*": "[SYNC_TYPE][_DID][_MASTER_DPID][_PID_ALIAS][_SYNC-MODE][_TIMESTAMP]SPLITNUM.sync[.gz]"}
    )
    assert names.parse("ftp_655_269_iter_1337229891903.sync") == parse_outbound_name(
        "ftp_655_269_iter_1337229891903.sync"
    )


# -------------------------------------------------------------------------------------------- .info


CONTROL_PAGE_INFO = b"""{
  Files: [
    {
      FileByteSize: 293029329,
      FileLineCount: 36893908,
      FileName: "ftp_12345_67890_full_1500727351632-1.sync.gz",
      FileSequenceNumber: 1,
      md5: "983g634be2ad5263c6a6c4958bf61d9f"
    },
    {
      FileByteSize: 293039238,
      FileLineCount: 36895184,
      FileName: "ftp_12345_67890_full_1500727351632-2.sync.gz",
      FileSequenceNumber: 2,
      md5: "6sn9907c8e78cfd78409622e7b55a984"
    },
    {
      FileByteSize: 293050833,
      FileLineCount: 36896787,
      FileName: "ftp_12345_67890_full_1500727351632-3.sync.gz",
      FileSequenceNumber: 3,
      md5: "7cdfb8e74cd6cec1jy6vel21ccb4a962"
    },
    {
      FileByteSize: 218425764,
      FileLineCount: 27498226,
      FileName: "ftp_12345_67890_full_1500727351632-4.sync.gz",
      FileSequenceNumber: 4,
      md5: "7hs53149f8a2444457g968f04cbbdee5"
    }
  ],
  Totals: {
    FileName: "ftp_12345_67890_full_1500727351632.sync",
    TotalByteSize: 1097545164,
    TotalNumberFiles: 4,
    TotalNumberLines: 138184105
    }
}"""


def test_the_control_pages_info_file_as_it_writes_it() -> None:
    """From "Transfer-Control Files for Log File Transfers": "File Format", keys without quotes as in a JavaScript
    object; it adds up."""
    info = parse_info(CONTROL_PAGE_INFO)
    assert [e.file_name for e in info.files] == [
        f"ftp_12345_67890_full_1500727351632-{k}.sync.gz" for k in (1, 2, 3, 4)
    ]
    assert info.totals.total_number_lines == 138184105
    assert info.inconsistencies() == []
    assert (
        parse_info(info.to_json()) == info == parse_info(info.to_javascript()) == parse_info(UTF8_BOM + info.to_json())
    )


@pytest.mark.parametrize(
    "data",
    [
        CONTROL_PAGE_INFO.replace(b"TotalByteSize: 1097545164", b'TotalByteSize: "1097545164"'),  # a string
        CONTROL_PAGE_INFO.replace(
            b'"ftp_12345_67890_full_1500727351632.sync"', b"'ftp_12345_67890_full_1500727351632.sync'"
        ),
        CONTROL_PAGE_INFO.replace(b"TotalNumberLines: 138184105", b"TotalNumberLines: 138184105,"),  # trailing comma
        CONTROL_PAGE_INFO.replace(b"FileSequenceNumber: 4,", b"FileSequenceNumber: -4,"),
    ],
)
def test_the_control_pages_notation_keeps_the_values_strict(data: bytes) -> None:
    """From "Transfer-Control Files for Log File Transfers": only the keys' quotes are spared; values, quotes and
    commas are JSON's."""
    with pytest.raises(Exception, match=r"bad \.info file"):
        parse_info(data)
