"""publish's pure rules: file sets per mode, naming and partitioning plan, line composition, encoding."""

from __future__ import annotations

import gzip
import hashlib
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ecsim.settings import DEFAULT_EXPORT_DROPZONE, EcsimSettings
from services.publish.files import FileOptions
from services.publish.plan import (
    FileSet,
    PartEncoder,
    failure_reason,
    file_sets,
    file_timestamp,
    object_key,
    other_trait_bytes,
    overwrite_block,
    overwrite_line,
    overwrite_overhead,
    overwrite_traits,
    plan_parts,
    run_counts,
    sync_block,
    sync_line,
    sync_overhead,
)
from services.publish.settings import PublishSettings
from shared.formats import InvalidRecord
from shared.formats.inbound import InboundFileName, InboundParser, InboundRecord, parse_inbound_name

TS = 1_700_000_000  # 2023-11-14T22:13:20Z


def test_file_sets_per_mode() -> None:
    assert file_sets("append") == (FileSet("sync", "changes"),)
    assert file_sets("mirror") == (FileSet("sync", "changes"),)
    assert file_sets("full") == (FileSet("overwrite", "adds"), FileSet("sync", "removes"))


def test_file_timestamp_is_the_runs_start_in_seconds() -> None:
    assert file_timestamp(datetime(2023, 11, 14, 22, 13, 20, 999_000, tzinfo=UTC)) == TS


def test_no_rows_means_no_file() -> None:
    assert plan_parts(InboundFileName(1001, TS, "sync", gzip=True), 0, 50, 4096) == []


def test_one_part_keeps_the_unnumbered_name() -> None:
    (part,) = plan_parts(InboundFileName(1001, TS, "sync", gzip=True), 80, 50, 4096)
    assert part.name.name == f"ftp_dpm_1001_{TS}.sync.gz"
    assert (part.first_line, part.lines) == (0, 80)


def test_a_large_set_is_split_into_balanced_numbered_parts() -> None:
    parts = plan_parts(InboundFileName(1002, TS, "overwrite"), 250, 100, 1000)  # 10 lines per part at most
    assert [p.name.name for p in parts] == [f"ftp_dpm_1002_{TS}.overwrite.{n}" for n in range(1, 26)]
    assert {p.lines for p in parts} == {10}
    odd = plan_parts(InboundFileName(1002, TS, "sync", gzip=True), 23, 100, 1000)
    assert [p.lines for p in odd] == [8, 8, 7]
    assert [p.first_line for p in odd] == [0, 8, 16]
    assert [parse_inbound_name(p.name.name).part for p in odd] == [1, 2, 3]


@given(
    rows=st.integers(min_value=1, max_value=100_000),
    longest=st.integers(min_value=1, max_value=5000),
    limit=st.integers(min_value=5000, max_value=1_000_000),
)
def test_parts_cover_every_row_once_and_stay_under_the_limit(rows: int, longest: int, limit: int) -> None:
    parts = plan_parts(InboundFileName(7, TS, "sync"), rows, longest, limit)
    assert sum(p.lines for p in parts) == rows
    position = 0
    for part in parts:
        assert part.first_line == position
        assert 0 < part.lines * longest <= limit
        position += part.lines
    assert max(p.lines for p in parts) - min(p.lines for p in parts) <= 1
    assert len({p.name.name for p in parts}) == len(parts)


def test_a_line_longer_than_a_part_cannot_be_planned() -> None:
    with pytest.raises(InvalidRecord):
        plan_parts(InboundFileName(7, TS, "sync"), 3, 5000, 4096)


def test_object_key_uses_the_utc_day_of_the_timestamp() -> None:
    name = InboundFileName(1001, TS, "sync", part=2, gzip=True)
    assert object_key("acme", name) == f"acme/date=2023-11-14/ftp_dpm_1001_{TS}.sync.2.gz"


def test_sync_lines_and_their_planned_size() -> None:
    user = "a" * 64
    add, remove = sync_line(user, 4242, True), sync_line(user, 4242, False)
    assert add == f"{user}\td_sid=4242\n".encode()
    assert remove == f"{user}\td_unsid=4242\n".encode()
    assert len(add) == len(user) + sync_overhead(4242, True)
    assert len(remove) == len(user) + sync_overhead(4242, False)


@pytest.mark.parametrize("is_add", [True, False])
def test_sync_blocks_are_the_lines_sync_line_writes(is_add: bool) -> None:
    ids = [f"{i:038d}" for i in range(1, 101)] + ["a" * 64, "CRM000042", "é" * 10]
    assert sync_block(ids, 123456, is_add=is_add) == b"".join(sync_line(user, 123456, is_add) for user in ids)
    assert sync_block([], 1, is_add=is_add) == b""
    with pytest.raises(InvalidRecord):
        sync_block(["bad\tid"], 1, is_add=is_add)
    with pytest.raises(InvalidRecord):
        sync_block(["bad\nid"], 1, is_add=is_add)


def test_overwrite_blocks_are_the_lines_overwrite_line_writes() -> None:
    rows: list[tuple[str, list[int] | None]] = [("1" * 38, None), ("2" * 38, [7, 3])]
    assert overwrite_block(rows, 5) == overwrite_line("1" * 38, 5, None) + overwrite_line("2" * 38, 5, [7, 3])


def test_overwrite_lines_carry_every_trait_the_bridge_exported_in_the_data_source() -> None:
    assert overwrite_traits(30, None) == (30,)
    assert overwrite_traits(30, [12, 45, 12, 30]) == (12, 30, 45)
    user = "1" * 38
    line = overwrite_line(user, 30, [45, 12])
    assert line == f"{user}\td_sid=12,d_sid=30,d_sid=45\n".encode()
    # The plan's bound: the id, the own trait, and each other trait.
    assert len(line) == len(user) + overwrite_overhead(30) + other_trait_bytes(12) + other_trait_bytes(45)
    (record,) = [r for r in InboundParser(f"ftp_dpm_1_{TS}.overwrite").parse([line]) if isinstance(r, InboundRecord)]
    assert record.adds == (12, 30, 45)
    assert record.removes == ()


@pytest.mark.parametrize("use_gzip", [True, False])
def test_part_encoder_streams_a_valid_part(use_gzip: bool) -> None:
    encoder = PartEncoder(gzip=use_gzip)
    lines = [sync_line(f"{i:038d}", 77, i % 3 != 0) for i in range(1, 3001)]
    blocks = [b"".join(lines[i : i + 500]) for i in range(0, len(lines), 500)]
    stored = b"".join(encoder.add(block) for block in blocks) + encoder.finish()
    content = gzip.decompress(stored) if use_gzip else stored
    assert content == b"".join(lines)
    assert encoder.lines == 3000
    assert encoder.content_bytes == len(content)
    assert encoder.stored_bytes == len(stored)
    assert encoder.md5 == hashlib.md5(stored, usedforsecurity=False).hexdigest()
    name = f"ftp_dpm_1_{TS}.sync" + (".gz" if use_gzip else "")
    parser = InboundParser(name)
    records = [r for r in parser.parse([stored]) if isinstance(r, InboundRecord)]
    assert len(records) == 3000
    assert parser.counters.format_errors == 0
    assert sum(len(r.removes) for r in records) == 1000


def test_run_counts_take_received_and_excluded_from_the_totals() -> None:
    counts = run_counts({"received": 10, "excluded": 2, "batches": 1}, {"received": 9}, added=7, removed=1)
    assert counts == {"received": 10, "added": 7, "removed": 1, "excluded": 2}
    assert run_counts(None, {"received": 9, "excluded": 1}, added=0, removed=0)["received"] == 9


def test_failure_reasons_are_bounded_and_masked() -> None:
    reason = failure_reason("writing", RuntimeError("Authorization: Bearer abc.def.ghi " + "x" * 5000))
    assert "abc.def.ghi" not in reason
    assert reason.startswith("writing: ")
    assert len(reason) <= 1000


def test_the_defaults_match_the_local_ecsim() -> None:
    publish, ecsim = PublishSettings.model_fields, EcsimSettings.model_fields
    assert publish["export_dropzone_url"].default == DEFAULT_EXPORT_DROPZONE.as_uri()
    assert publish["export_partner_folder"].default == str(ecsim["ecsim_partner_id"].default)
    assert publish["export_gzip"].default is True
    assert FileOptions() == FileOptions.from_settings(PublishSettings.model_construct())
