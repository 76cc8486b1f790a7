"""publish's file layout: file sets per mode, the run's file timestamp, names and the partitioning plan."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ecsim.settings import DEFAULT_EXPORT_DROPZONE, EcsimSettings
from services.publish.files import FileOptions
from services.publish.parts import FileSet, file_sets, file_timestamp, object_key, plan_parts
from services.publish.settings import PublishSettings
from shared.formats import InvalidRecord
from shared.formats.inbound import InboundFileName, parse_inbound_name

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


def test_the_defaults_match_the_local_ecsim() -> None:
    publish, ecsim = PublishSettings.model_fields, EcsimSettings.model_fields
    assert publish["export_dropzone_url"].default == DEFAULT_EXPORT_DROPZONE.as_uri()
    assert publish["export_partner_folder"].default == str(ecsim["ecsim_partner_id"].default)
    assert publish["export_gzip"].default is True
    # Except waiting for receipts: the service does by default, a bare FileOptions (a test, a tool) does not.
    from_settings = FileOptions.from_settings(PublishSettings.model_construct())
    assert from_settings.await_receipts is True
    assert FileOptions() == dataclasses.replace(from_settings, await_receipts=False)
