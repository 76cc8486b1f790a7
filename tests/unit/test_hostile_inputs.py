"""Random bytes and random well-formed-but-hostile values against every parser and message model.

Whatever comes in, each one either answers (a model, a record, a ``LineError`` item) or raises its typed
error (a ``BridgeError`` subclass), never anything else, and never hangs: inputs are bounded and every
example has a deadline far above what it needs. The format modules' own tests check the happy paths and
the arbitrary-bytes cases of one parser each; these aim the hostile values at all of them.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, TypeVar

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from services.cli.loads import load_recipients, load_visitor_links
from services.reconcile.catalog import CatalogFile, load_catalog_file
from shared.errors import BridgeError, ConfigError, PermanentError, PoisonMessage
from shared.formats import BadFileName, CorruptGzip, EmptyFile
from shared.formats.inbound import MAX_TRAIT_ID, InboundParser, InboundRecord, parse_inbound_name
from shared.formats.lines import GzipDecoder, LineError, LineSplitter
from shared.formats.outbound import (
    MAX_SEGMENT_ID,
    BadInfoFile,
    BadTemplate,
    InfoFile,
    NameTemplate,
    OutboundNames,
    OutboundParser,
    OutboundRecord,
    batch_root_of,
    info_name_for,
    parse_info,
    parse_outbound_name,
)
from shared.ids import (
    IdType,
    InvalidId,
    declared_id_problem,
    declared_key,
    id_problem,
    is_ecid,
    validate_declared_id,
    validate_ecid,
    validate_id,
)
from shared.messages import (
    MAX_ID_LENGTH,
    MAX_IDS_PER_BATCH,
    TOPIC_MODELS,
    AudienceExportBatch,
    AudienceExportRequest,
    AudienceMembership,
    AudienceSyncStatus,
    Message,
    RecipientChange,
    SegmentEvent,
    VisitorLink,
    decode,
)

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)
ID_BATCHES: Final[list[type[Message]]] = [AudienceMembership, AudienceExportBatch]

# Bounded inputs, and a deadline that only a hang (or a blow-up) can reach on a loaded two-core machine.
HOSTILE = settings(
    max_examples=150,
    deadline=timedelta(seconds=5),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# ---------------------------------------------------------------------------------------- hostile values

# Strings that break things: separators of every platform format, control characters, look-alike digits,
# byte order marks, bidi overrides, SQL and format-string metacharacters, path traversal.
NASTY_STRINGS = [
    "",
    " ",
    "\t",
    "\r\n",
    "\x00",
    "\x1f",
    "\x7f",
    ",",
    "=",
    ":",
    "%3A",
    "'",
    '"',
    "\\",
    "`",
    ";",
    "--",
    "'; DROP TABLE recipient; --",
    "%s",
    "{}",
    "$1",
    "../",
    "/etc/passwd",
    "\ufeff",
    "\u202e",
    "\u200b",
    "é",
    "٣",  # Arabic-Indic digit three
    "²",
    "\U0001d7d8",  # mathematical double-struck zero
    "☃",
    "d_sid=",
    "d_unsid=",
    "1" * 37,
    "1" * 38,
    "1" * 39,
    "9" * 25,
]
nasty_text = st.lists(st.sampled_from(NASTY_STRINGS) | st.text(max_size=8), max_size=8).map("".join)
huge_ints = st.sampled_from([-(2**70), -1, 0, 2**31, 2**63 - 1, 2**63, 2**64, 2**70])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    huge_ints,
    st.floats(allow_nan=False, allow_infinity=False),
    nasty_text,
    st.text(max_size=30),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def _sample(model: type[Message]) -> dict[str, Any]:
    """A valid value of ``model``, as JSON data."""
    run = str(uuid.UUID(int=1))
    samples: dict[type[Message], dict[str, Any]] = {
        SegmentEvent: {
            "event_id": "e1",
            "segment_id": "5001",
            "id_type": "ecid",
            "data_source": "visitors",
            "id": "1" * 38,
            "op": "add",
            "occurred_at": "2024-05-01T00:00:00Z",
        },
        AudienceMembership: {
            "run_id": run,
            "seq": 0,
            "last": True,
            "audience_id": "a",
            "data_source": "visitors",
            "id_type": "ecid",
            "mode": "full",
            "adds": ["1" * 38],
            "removes": [],
            "totals": {"received": 1},
        },
        AudienceExportRequest: {
            "request_id": run,
            "list_id": "List",
            "audience_name": "Audience",
            "data_source": "visitors",
            "mode": "append",
            "requested_by": "me",
        },
        AudienceExportBatch: {
            "run_id": run,
            "seq": 0,
            "last": False,
            "audience_id": "a",
            "data_source": "visitors",
            "dpid": 1,
            "mode": "mirror",
            "adds": [],
            "removes": ["x"],
        },
        AudienceSyncStatus: {
            "run_id": run,
            "direction": "import",
            "state": "failed",
            "reason": "r",
            "service": "ingest",
            "counts": {"received": 1},
        },
        RecipientChange: {
            "recipient_id": 7,
            "op": "upsert",
            "email": "a@example.com",
            "opted_out": False,
            "position": 1,
        },
        VisitorLink: {"ecid": "1" * 38, "recipient_id": 7, "seen_at": "2024-05-01T00:00:00Z"},
    }
    return dict(samples[model])


# What separates fields in the platform's files: an ID holding one could never be written back out.
_SEPARATORS: Final = frozenset(" \t\n\r\v\f,\x85\xa0\u2028\u2029")


def _check_message(message: Message) -> None:
    """What a decoded message guarantees downstream, whatever it was decoded from."""
    data = message.model_dump()
    for key in ("event_id", "segment_id", "id"):
        if key in data:
            value = data[key]
            assert 1 <= len(value) <= MAX_ID_LENGTH
            assert not _SEPARATORS.intersection(value)
    for key in ("adds", "removes"):
        if key in data:
            assert len(data[key]) <= MAX_IDS_PER_BATCH
            assert all(i and not _SEPARATORS.intersection(i) for i in data[key])
    for key in ("audience_id", "data_source", "list_id", "audience_name", "requested_by"):
        if isinstance(data.get(key), str) and not isinstance(message, AudienceSyncStatus):
            assert 1 <= len(data[key]) <= 200
            assert not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in data[key])


def attempt(fn: Callable[..., T], *args: Any, errors: type[E]) -> T | E:
    """``fn(*args)``, or the error of one of the ``errors`` types it raised (anything else propagates)."""
    try:
        return fn(*args)
    except errors as exc:
        return exc


def _decode_all(value: bytes | None) -> None:
    for model in TOPIC_MODELS:
        message = attempt(decode, model, value, errors=PoisonMessage)
        if isinstance(message, PoisonMessage):
            assert message.message  # a reason, for the dlq.reason header
            continue
        assert type(message) is model
        _check_message(message)


# ------------------------------------------------------------------------------------------- messages


@HOSTILE
@given(st.binary(max_size=600))
@example(b"[" * 3000)
@example(b'{"a": ' * 2000)
@example(b'"\\ud800"')
@example(b"1e400")
@example(b'{"schema_version": [1]}')
@example(b'{"schema_version": true}')
def test_random_bytes_are_a_message_or_poison_for_every_topic(value: bytes) -> None:
    _decode_all(value)


@HOSTILE
@given(json_values)
def test_any_json_is_a_message_or_poison_for_every_topic(data: Any) -> None:
    _decode_all(json.dumps(data).encode())


@HOSTILE
@given(st.sampled_from(TOPIC_MODELS), st.data())
def test_a_valid_message_with_one_hostile_field_is_a_message_or_poison(
    model: type[Message], data: st.DataObject
) -> None:
    value = _sample(model)
    field = data.draw(st.sampled_from([*value, "schema_version", "surprise"]))
    value[field] = data.draw(json_values)
    message = attempt(decode, model, json.dumps(value).encode(), errors=PoisonMessage)
    if not isinstance(message, PoisonMessage):
        _check_message(message)


@HOSTILE
@given(st.sampled_from(ID_BATCHES), st.integers(0, 3), st.sampled_from(NASTY_STRINGS))
def test_oversized_and_hostile_id_lists_are_poison_or_safe(model: type[Message], extra: int, nasty: str) -> None:
    value = _sample(model)
    value["adds"] = ["1" * 38] * (MAX_IDS_PER_BATCH - 1 + extra) + [nasty or "x"]
    message = attempt(decode, model, orjson.dumps(value), errors=PoisonMessage)
    if isinstance(message, PoisonMessage):
        assert "adds" in str(message)
    else:
        _check_message(message)


def test_every_valid_sample_decodes() -> None:
    for model in TOPIC_MODELS:
        assert type(decode(model, orjson.dumps(_sample(model)))) is model


# ------------------------------------------------------------------------------------- file contents

# Pieces of outbound and inbound lines, valid and not: the parsers must sort every mix out line by line.
LINE_TOKENS = [
    "1" * 38,
    "u",
    " ",
    "  ",
    "\t",
    ",",
    ",,",
    "5001",
    "9" * 20,
    str(2**63 - 1),
    str(2**63),
    "-1",
    "d_sid=",
    "d_unsid=",
    "d_sid=5",
    ":0",
    ":-1",
    "=",
    '"k"="v"',
    "\r",
    "\n",
    "\r\n",
    "\ufeff",
    "é",
    "٣",
    "\x00",
]
line_text = st.lists(st.sampled_from(LINE_TOKENS), max_size=40).map("".join)
raw_bytes = st.binary(max_size=300)
file_bytes = st.lists(line_text.map(str.encode) | raw_bytes, max_size=6).map(b"".join)
cuts = st.lists(st.integers(0, 2000), max_size=6)


def _chunks(data: bytes, at: list[int]) -> Iterator[bytes]:
    start = 0
    for cut in sorted({min(c, len(data)) for c in at}):
        yield data[start:cut]
        start = cut
    yield data[start:]


def _outbound_items(parser: OutboundParser, chunks: Iterable[bytes]) -> list[OutboundRecord | LineError]:
    try:
        return list(parser.parse(chunks))
    except CorruptGzip:
        return []


@HOSTILE
@given(file_bytes, cuts, st.booleans(), st.sampled_from([None, "ecid", "declared"]), st.integers(1, 200))
def test_outbound_parser_sorts_any_mix_into_records_and_line_errors(
    data: bytes, at: list[int], gz: bool, id_type: Any, max_line: int
) -> None:
    name = "s3_1_2_iter_1337229891903.sync" + (".gz" if gz else "")
    stored = gzip.compress(data) if gz else data
    parser = OutboundParser(name, id_type=id_type, max_line_bytes=max_line)
    items = _outbound_items(parser, _chunks(stored, at))
    c = parser.counters
    assert c.lines == c.records + c.errors + c.blank_lines + c.header_lines
    assert c.errors == sum(c.errors_by_reason.values())
    for item in items:
        if isinstance(item, LineError):
            assert item.reason
            assert item.line_number >= 1
            continue
        assert isinstance(item, OutboundRecord)
        assert item.user_id
        assert " " not in item.user_id
        assert "\n" not in item.user_id
        assert item.segments or item.removed
        assert all(0 <= s <= MAX_SEGMENT_ID for s in (*item.segments, *item.removed))
        if id_type is not None:
            assert id_problem(id_type, item.user_id) is None


@HOSTILE
@given(file_bytes, cuts, st.booleans(), st.sampled_from([None, "ecid", "declared"]), st.integers(1, 200))
def test_inbound_parser_sorts_any_mix_into_records_and_line_errors(
    data: bytes, at: list[int], gz: bool, id_type: Any, max_line: int
) -> None:
    name = "ftp_dpm_21_1437432000.overwrite" + (".gz" if gz else "")
    stored = gzip.compress(data) if gz else data
    parser = InboundParser(name, id_type=id_type, max_line_bytes=max_line, max_lines_per_user=3)
    try:
        items = list(parser.parse(_chunks(stored, at)))
    except (EmptyFile, CorruptGzip):
        return
    c = parser.counters
    assert c.records_received == c.records_parsed + c.format_errors + c.invalid_ids + c.discarded_over_user_limit
    for item in items:
        if isinstance(item, LineError):
            continue
        assert isinstance(item, InboundRecord)
        assert item.user_id
        assert "\t" not in item.user_id
        assert all(0 <= t <= MAX_TRAIT_ID for t in (*item.adds, *item.removes))
        assert not item.removes  # an .overwrite file removes nothing


@HOSTILE
@given(st.binary(min_size=1, max_size=400), st.integers(0, 10_000), st.integers(0, 7), cuts, st.integers(1, 64))
def test_truncated_or_bit_flipped_gzip_is_corrupt_gzip_or_data(
    content: bytes, where: int, bit: int, at: list[int], piece: int
) -> None:
    good = gzip.compress(content)
    pos = where % len(good)
    for damaged in (good[:pos], good[:pos] + bytes([good[pos] ^ (1 << bit)]) + good[pos + 1 :]):
        decoder = GzipDecoder(max_piece_bytes=piece)
        out: list[bytes] = []
        try:
            for chunk in _chunks(damaged, at):
                out.extend(decoder.feed(chunk))
            out.extend(decoder.close())
        except CorruptGzip:
            continue
        assert all(len(p) <= piece for p in out)


@HOSTILE
@given(
    st.lists(st.binary(max_size=200) | st.sampled_from([b"\n", b"\r\n", b"x" * 500]), max_size=20), st.integers(1, 50)
)
def test_a_line_splitter_never_buffers_more_than_a_line(chunks: list[bytes], max_line: int) -> None:
    splitter = LineSplitter(max_line)
    for chunk in chunks:
        for _, line in splitter.feed(chunk):
            assert line is None or len(line) <= max_line
        assert splitter.buffered <= max_line + 1
    for _, line in splitter.close():
        assert line is None or len(line) <= max_line


# ------------------------------------------------------------------------------------------ .info files

info_values = st.one_of(huge_ints, st.integers(-5, 5), nasty_text, st.none(), st.floats(allow_nan=False), json_values)
info_entries = st.fixed_dictionaries(
    {},
    optional={
        "FileName": nasty_text | st.just("s3_1_2_full_1337229891903.sync"),
        "FileByteSize": info_values,
        "FileLineCount": info_values,
        "FileSequenceNumber": info_values,
        "md5": st.text(min_size=31, max_size=33) | info_values,
        "Extra": json_values,
    },
)


@HOSTILE
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "Files": st.lists(info_entries, max_size=5) | json_values,
            "Totals": st.fixed_dictionaries(
                {},
                optional={
                    "FileName": nasty_text,
                    "TotalByteSize": info_values,
                    "TotalNumberFiles": info_values,
                    "TotalNumberLines": info_values,
                },
            )
            | json_values,
        },
    )
)
def test_any_info_json_is_an_info_file_or_bad_info(data: dict[str, Any]) -> None:
    info = attempt(parse_info, json.dumps(data).encode(), errors=BadInfoFile)
    if isinstance(info, BadInfoFile):
        assert info.context["reason"]
        return
    assert isinstance(info, InfoFile)
    info.inconsistencies()  # never raises: it only compares numbers
    for entry in info.files:
        assert entry.byte_size >= 0
        assert entry.line_count >= 0
        assert entry.sequence_number >= 1


@HOSTILE
@given(info_entries.map(lambda e: {"Files": [e], "Totals": e}) | json_values)
def test_the_control_pages_notation_reads_as_its_json_does(data: Any) -> None:
    """Keys without quotes (the "Transfer-Control Files" page's notation) change nothing about the values."""
    strict = json.dumps(data).encode()
    javascript = re.sub(rb'"([A-Za-z_][A-Za-z0-9_]*)"(\s*:)', rb"\1\2", strict)
    as_json = attempt(parse_info, strict, errors=BadInfoFile)
    as_javascript = attempt(parse_info, javascript, errors=BadInfoFile)
    if isinstance(as_json, InfoFile):
        assert as_javascript == as_json
    else:
        assert isinstance(as_javascript, BadInfoFile)


@pytest.mark.parametrize(
    "data",
    [b"{" + b"a" * 200_000 + b"}", b"{" + b'"' + b"a" * 200_000, b"{" + b"Files " * 40_000, b"{" + b"a:" * 100_000],
)
def test_a_hostile_info_in_the_pages_notation_is_refused_quickly(data: bytes) -> None:
    """Turning bare keys into JSON never backtracks over a long run of letters: linear in the file."""
    started = time.monotonic()
    assert isinstance(attempt(parse_info, data, errors=BadInfoFile), BadInfoFile)
    assert time.monotonic() - started < 5


# ------------------------------------------------------------------------------------------- file names

NAME_TOKENS = [
    "ftp_dpm_",
    "ftp",
    "s3",
    "S3",
    "http",
    "_",
    ".",
    "..",
    "/",
    "-",
    "sync",
    "overwrite",
    "gz",
    "info",
    "pgp",
    "full",
    "iter",
    "odc_",
    "1",
    "001",
    "1337229891903",
    "1437432000",
    "9" * 20,
    "\x00",
    "é",
    "٣",
    " ",
]
names = st.lists(st.sampled_from(NAME_TOKENS), max_size=14).map("".join) | st.text(max_size=60)


@HOSTILE
@given(names)
@example("s3_1_2_full_1337229891903/../x.sync")
@example("../s3_1_2_full_1337229891903.sync")
@example("s3_1_2_full_1337229891903.info")
def test_outbound_names_parse_or_are_bad_names(name: str) -> None:
    for parse in (parse_outbound_name, batch_root_of, info_name_for):
        result = attempt(parse, name, errors=BadFileName)
        if isinstance(result, BadFileName):
            assert result.reason
            continue
        text = str(result)
        assert "/" not in text
        assert "\x00" not in text
    parsed = attempt(parse_outbound_name, name, errors=BadFileName)
    if not isinstance(parsed, BadFileName):
        assert "/" not in name
        assert parse_outbound_name(parsed.name) == parsed


TEMPLATED = OutboundNames(
    {
        "1": "<SYNC_TYPE>_<ORDER_ID>_<DPID>[_<PID_ALIAS>]_<SYNC_MODE>_<TIMESTAMP>SPLITNUM.sync",
        "2": '<SYNC_TYPE>_<DPID>_<MASTER_DPID>_<SYNC_MODE>_<TIMESTAMP; unit="ms">SPLITNUM.csv',
        "*": "<ORDER_ID>-<SYNC_MODE>-<TIMESTAMP>",
    }
)


@HOSTILE
@given(names)
@example("s3_1_2_full_1437432000001.sync")
@example("s3_2_3_full_1337229891903-2.csv.gz")
@example("5-full-1437432000-3.sync")
def test_templated_names_parse_or_are_bad_names(name: str) -> None:
    for read in (TEMPLATED.parse, TEMPLATED.batch_root_of):
        result = attempt(read, name, errors=BadFileName)
        assert isinstance(result, BadFileName) or "/" not in str(result)
    parsed = attempt(TEMPLATED.parse, name, errors=BadFileName)
    if not isinstance(parsed, BadFileName):
        assert parsed.name == name  # one spelling per name: its batch, .info and ledger row go by it
        assert TEMPLATED.parse(parsed.info_name.removesuffix(".info") + parsed.extension).part is None


@HOSTILE
@given(
    st.lists(
        st.sampled_from(
            [
                "<",
                ">",
                "[",
                "]",
                "_",
                ".",
                "SPLITNUM",
                "SYNC_MODE",
                "TIMESTAMP",
                "DPID",
                "ORDER_ID",
                "PID_ALIAS",
                ";",
                ' unit="ms"',
                "sync",
                "1",
                " ",
            ]
        ),
        max_size=16,
    ).map("".join)
    | st.text(max_size=40)
)
@example("<SYNC_MODE>_<TIMESTAMP>")
def test_any_template_text_is_a_template_or_a_config_error(text: str) -> None:
    result = attempt(NameTemplate, text, errors=BadTemplate)
    assert isinstance(result, NameTemplate | BadTemplate)


@HOSTILE
@given(names)
@example("ftp_dpm_1_1437432000.sync/../../x")
@example("ftp_dpm_odc_1_1437432000.sync")
def test_inbound_names_parse_or_are_bad_names(name: str) -> None:
    parsed = attempt(parse_inbound_name, name, errors=BadFileName)
    if isinstance(parsed, BadFileName):
        assert parsed.reason
        return
    assert "/" not in name
    assert parse_inbound_name(parsed.name) == parsed


# ----------------------------------------------------------------------------------------------- IDs


@HOSTILE
@given(nasty_text | st.text(st.characters(codec=None), max_size=300))
@example("\ud800")
@example("\u0661" * 38)  # Arabic-Indic digit one
@example("1" * 38 + "\n")
def test_id_validators_answer_or_raise_invalid_id(value: str) -> None:
    for validate in (validate_ecid, validate_declared_id):
        checked = attempt(validate, value, errors=InvalidId)
        assert checked.reason if isinstance(checked, InvalidId) else checked == value
    id_types: tuple[IdType, ...] = ("ecid", "declared")
    for id_type in id_types:
        if id_problem(id_type, value) is None:
            assert validate_id(id_type, value) == value
    if is_ecid(value):
        assert declared_id_problem(value) is None
    for transform in ("none", "sha256", "md5"):
        key = attempt(declared_key, value, transform, errors=PermanentError)
        if not isinstance(key, PermanentError):
            assert declared_id_problem(key) is None
    with pytest.raises(PermanentError):
        id_problem("email", value)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- catalog files

YAML_TOKENS = [
    "data_sources:",
    "import_audiences:",
    "\n",
    "  ",
    "\t",
    "- ",
    "{",
    "}",
    "[",
    "]",
    ": ",
    ", ",
    "name: ",
    "dpid: ",
    "id_type: ",
    "ecid",
    "declared",
    "reconciliation_key: email",
    "&a ",
    "*a",
    "!!python/object/apply:os.system ['true']",
    "!!binary x",
    "2024-13-45",
    "1e999",
    "0x1F",
    "~",
    "yes",
    "'",
    '"',
    "\\",
    "é",
    "%TAG ! x\n---\n",
    "? ",
    "|",
    ">",
]
yaml_text = st.lists(st.sampled_from(YAML_TOKENS), max_size=30).map("".join)


@HOSTILE
@given(yaml_text.map(str.encode) | st.binary(max_size=300))
@example(b"[" * 5000)
@example(b"data_sources: &a [*a]")
@example(b"x: 2024-02-30")
@example(b"\xff\xfe")
def test_any_catalog_file_loads_or_is_a_config_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "catalog.yaml"
        path.write_bytes(content)
        catalog = attempt(load_catalog_file, path, errors=ConfigError)
    if isinstance(catalog, ConfigError):
        assert catalog.message.startswith("catalog file")
    else:
        assert isinstance(catalog, CatalogFile)


# ---------------------------------------------------------------------------------------- CLI CSV headers


class _ReachedTheDatabase(Exception):
    """The loader accepted the header and went on to Postgres."""


class _NoDatabase:
    def __getattr__(self, name: str) -> Any:
        raise _ReachedTheDatabase(name)


csv_headers = st.lists(
    st.sampled_from(["recipient_id", "email", "crm_id", "first_name", "ecid", "x", '"', ",", "\x00", "é", "\r"]),
    max_size=8,
).map(",".join)


@HOSTILE
@given(csv_headers.map(str.encode) | st.binary(max_size=200))
@example(b"\xff\xfe,recipient_id\n")
@example(b'"' + b"a" * (csv.field_size_limit() + 10) + b'"\n')
@example(b"ecid,recipient_id\n")
async def test_csv_loaders_refuse_bad_headers_with_a_typed_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "load.csv"
        path.write_bytes(content)
        for loader in (load_recipients, load_visitor_links):
            try:
                await loader(_NoDatabase(), path, lambda _n: None)
            except (PermanentError, _ReachedTheDatabase):
                continue


def test_errors_raised_on_purpose_are_bridge_errors() -> None:
    for error in (PoisonMessage, BadFileName, CorruptGzip, EmptyFile, BadInfoFile, InvalidId, ConfigError):
        assert issubclass(error, BridgeError)
