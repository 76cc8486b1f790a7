"""The bad-input corpus itself: in step with its generator, well-formed, and each case already refused by
the pure parsers for the reason its manifest gives (the end-to-end tests then check the services)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.reconcile.catalog import load_catalog_file
from shared.errors import ConfigError, PermanentError, PoisonMessage
from shared.formats import BadFileName, CorruptGzip, EmptyFile, FormatError
from shared.formats.inbound import InboundParser, parse_inbound_name
from shared.formats.outbound import (
    BadInfoFile,
    OutboundParser,
    batch_root_of,
    is_info_name,
    parse_info,
    parse_outbound_name,
)
from shared.messages import MODEL_BY_TOPIC, decode
from tests import corpus
from tests.corpus import generate

TOPIC_OF_KIND = {
    "segment-event": "segment-events",
    "membership": "audience-membership",
    "export-request": "audience-export-requests",
    "export-batch": "audience-export-batches",
}


def test_the_checked_in_corpus_is_what_the_generator_builds() -> None:
    assert generate.differences() == [], "run `python -m tests.corpus.generate`"


def test_the_manifest_is_well_formed_and_covers_every_file() -> None:
    cases = corpus.load()
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "case ids must be unique (they are the Kafka keys)"
    listed: list[Path] = []
    for case in cases:
        assert case.kind in corpus.KINDS, case
        assert case.expect in corpus.OUTCOMES, case
        assert case.description, case
        assert case.reason or case.expect in ("counted", "ecsim-counted"), case
        assert case.files or case.get("tombstone") or case.get("build"), case
        for path in case.paths():
            assert path.is_file(), path
        listed += case.paths()
    assert sorted(listed) == sorted(corpus.walk_files()), "a corpus file belongs to no case, or to two"


@pytest.mark.parametrize("case", corpus.of_kind("outbound-name"), ids=str)
def test_bad_names_break_the_grammar_with_the_reason(case: corpus.CorpusCase) -> None:
    [name] = case.file_bytes()
    # What the importer checks of a listed name: its batch root, and a part's whole name.
    check = batch_root_of if is_info_name(name) else parse_outbound_name
    with pytest.raises(BadFileName) as exc:
        check(name)
    assert case.reason in f"file name breaks the outbound grammar: {exc.value}"


@pytest.mark.parametrize("case", [c for c in corpus.of_kind("outbound-batch") if "bad .info" in c.reason], ids=str)
def test_bad_info_files_are_refused_by_the_parser(case: corpus.CorpusCase) -> None:
    [info] = [data for name, data in case.file_bytes().items() if name.endswith(".info")]
    with pytest.raises(BadInfoFile):
        parse_info(info)


@pytest.mark.parametrize("case", [c for c in corpus.of_kind("outbound-batch") if c.expect == "counted"], ids=str)
def test_counted_batches_parse_with_the_expected_line_errors(case: corpus.CorpusCase) -> None:
    errors = 0
    for name, data in case.file_bytes().items():
        if name.endswith(".info"):
            continue
        parser = OutboundParser(name)
        list(parser.parse([data[i : i + 4096] for i in range(0, len(data), 4096)]))
        errors += parser.counters.errors
    assert errors == case.get("invalid_lines", 0)


@pytest.mark.parametrize(
    "case", [c for kind in TOPIC_OF_KIND for c in corpus.of_kind(kind) if c.expect != "refused"], ids=str
)
def test_messages_decode_or_are_poison_with_the_reason(case: corpus.CorpusCase) -> None:
    model = MODEL_BY_TOPIC[TOPIC_OF_KIND[case.kind]]
    poison: PoisonMessage | None = None
    try:
        decode(model, case.value())
    except PoisonMessage as exc:
        poison = exc
    if poison is not None:
        assert case.reason in str(poison)
    else:
        # Valid as a message: the reason is the service's (unknown list, malformed id, ...).
        assert "validation" not in case.reason
        assert "JSON" not in case.reason


@pytest.mark.parametrize("case", corpus.of_kind("catalog"), ids=str)
def test_hostile_catalogs_are_config_errors(case: corpus.CorpusCase) -> None:
    [path] = case.paths()
    with pytest.raises(ConfigError) as exc:
        load_catalog_file(path)
    assert case.reason in str(exc.value)


@pytest.mark.parametrize("case", corpus.of_kind("inbound-file"), ids=str)
def test_inbound_files_are_refused_or_counted_by_the_parser(case: corpus.CorpusCase) -> None:
    [path] = case.paths()
    name = path.name
    if case.expect == "ecsim-rejected":
        if case.reason.startswith("bad file name") or "PGP" in case.reason:
            with pytest.raises(BadFileName) as bad:
                parse_inbound_name(name)
            assert bad.value.reason in case.reason
        elif case.reason.startswith(("empty", "corrupt")):
            parser = InboundParser(parse_inbound_name(name), id_type="ecid")
            with pytest.raises((EmptyFile, CorruptGzip)):
                list(parser.parse([path.read_bytes()]))
        # Else the platform refuses where the file is or whose it is, not what it holds.
        return
    parser = InboundParser(name, id_type="ecid")
    list(parser.parse([path.read_bytes()]))
    c = parser.counters
    mine = {
        "recordsReceived": c.records_received,
        "formatErrors": c.format_errors,
        "invalidAamIds": c.invalid_ids,
        "discardedOverUserLimit": c.discarded_over_user_limit,
    }
    assert {k: v for k, v in mine.items() if k in case["receipt"]} == {
        k: v for k, v in case["receipt"].items() if k in mine
    }


def test_format_errors_are_permanent() -> None:
    # What the importer and ecsim rely on to reject a file rather than retry it forever.
    assert issubclass(FormatError, PermanentError)
