"""publish's line composition (and the sizes the part plan bounds them by) and part encoding."""

from __future__ import annotations

import gzip
import hashlib

import pytest

from services.publish.encoding import (
    PartEncoder,
    other_trait_bytes,
    overwrite_block,
    overwrite_line,
    overwrite_overhead,
    overwrite_traits,
    sync_block,
    sync_line,
    sync_overhead,
)
from shared.formats import InvalidRecord
from shared.formats.inbound import InboundParser, InboundRecord

TS = 1_700_000_000  # 2023-11-14T22:13:20Z


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
