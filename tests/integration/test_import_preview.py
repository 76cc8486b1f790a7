"""``audience-bridge import preview FILE…`` against real Postgres: the platform's files as ingest reads them, each
list as reconcile would leave it, nothing written; then the same batch imported for real does what it said."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

import pytest

from services.cli.import_preview import _import_audiences, preview_lists, read_batch
from services.reconcile.importing import Importer, ImportGuards
from shared.formats.outbound import OutboundFileName
from shared.formats.outbound.name_grammar import OutboundNames
from shared.messages import AudienceMembership
from tests.fixtures.bridge_db import Campaign, add_import_audience, ecid_of, hashed_email_of
from tests.helpers import deliver_outbound
from tests.integration.test_export_dry_run import database_fingerprint

pytestmark = pytest.mark.integration

GUARDS = ImportGuards(max_removal_share=0.5, min_list_size=10)


def _parts(zone: Path, batch: OutboundFileName) -> list[Path]:
    return sorted(p for p in zone.iterdir() if p.name.startswith(batch.batch_root) and not p.name.endswith(".info"))


async def _apply(importer: Importer, audience: str, mode: str, adds: set[str], removes: set[str]) -> dict[str, int]:
    data_source, id_type = ("visitors", "ecid") if audience == "seg-visitors" else ("hashed-emails", "declared")
    done = await importer.apply(
        AudienceMembership.model_validate(
            {
                "run_id": uuid.uuid4(),
                "seq": 0,
                "last": True,
                "audience_id": audience,
                "data_source": data_source,
                "id_type": id_type,
                "mode": mode,
                "adds": sorted(adds),
                "removes": sorted(removes),
            }
        )
    )
    assert done is not None
    return dict(done.counts)


async def test_a_full_batch_previewed_then_imported(campaign: Campaign, importer: Importer, tmp_path: Path) -> None:
    await add_import_audience(campaign.pool, "seg-visitors", "visitors", 5001)
    await add_import_audience(campaign.pool, "seg-emails", "hashed-emails", 5001)
    # The list holds 1..20 already; the visitors' snapshot keeps 6..20, adds 21..30, and names an unknown ECID.
    await _apply(importer, "seg-visitors", "full", {ecid_of(i) for i in range(1, 21)}, set())
    zone = tmp_path / "zone"
    zone.mkdir()
    rows = [(ecid_of(i), (5001,), ()) for i in range(6, 31)] + [("9" * 38, (5001, 5999), ())]
    batch = deliver_outbound(zone, "full", rows, 1_700_000_000_000, max_part_bytes=400)
    files = _parts(zone, batch)
    assert len(files) > 1  # several parts: the batch is read whole

    names = OutboundNames()
    parts = [(names.parse(p.name), p.read_bytes()) for p in files]
    async with campaign.pool.acquire() as conn:
        before = await database_fingerprint(conn)
        read = read_batch(parts, await _import_audiences(conn))
        previews = await preview_lists(conn, read, GUARDS)
        assert await database_fingerprint(conn) == before
    # The file's master DPID is the visitors' (1001): the e-mail audience of the same segment is not fed.
    assert (read.mode, read.records, read.unrouted_segments) == ("full", 26, (5999,))
    [visitors] = previews
    assert (visitors.audience_id, visitors.list_name, visitors.verdict) == (
        "seg-visitors",
        "List seg-visitors",
        "would_apply",
    )
    assert (visitors.received, visitors.matched, visitors.unmatched) == (26, 25, 1)
    assert (visitors.size_before, visitors.to_add, visitors.to_remove, visitors.size_after) == (20, 10, 5, 25)

    [ids] = read.audiences
    imported = await _apply(importer, "seg-visitors", "full", ids.adds, ids.removes)
    assert (imported["added"], imported["removed"], imported["matched"]) == (10, 5, 25)


async def test_a_mass_removal_is_previewed_as_held_and_a_delta_counted(
    campaign: Campaign,
    importer: Importer,
    tmp_path: Path,
) -> None:
    await add_import_audience(campaign.pool, "seg-emails", "hashed-emails", 5002)
    await _apply(importer, "seg-emails", "full", {hashed_email_of(i) for i in range(1, 41)}, set())
    zone = tmp_path / "zone"
    zone.mkdir()
    names = OutboundNames()

    small = deliver_outbound(zone, "full", [(hashed_email_of(1), (5002,), ())], 1_700_000_000_001, master_dpid=1002)
    async with campaign.pool.acquire() as conn:
        parts = [(names.parse(p.name), p.read_bytes()) for p in _parts(zone, small)]
        [held] = await preview_lists(conn, read_batch(parts, await _import_audiences(conn)), GUARDS)
    assert (held.verdict, held.to_remove) == ("would_be_held", 39)
    assert "would remove 39 of 40 list members" in (held.reason or "")

    delta_rows = [(hashed_email_of(50), (5002,), ()), (hashed_email_of(2), (), (5002,)), ("f" * 64, (), (5002,))]
    delta = deliver_outbound(zone, "iter", delta_rows, 1_700_000_000_002, master_dpid=1002)
    async with campaign.pool.acquire() as conn:
        parts = [(names.parse(p.name), p.read_bytes()) for p in _parts(zone, delta)]
        read = read_batch(parts, await _import_audiences(conn))
        [changes] = await preview_lists(conn, read, GUARDS)
    assert (changes.mode, changes.verdict, changes.to_add, changes.to_remove, changes.unmatched) == (
        "delta",
        "would_apply",
        1,
        1,
        1,
    )
    [ids] = read.audiences
    imported = await _apply(importer, "seg-emails", "delta", ids.adds, ids.removes)
    assert (imported["added"], imported["removed"]) == (1, 1)


async def test_the_command(campaign: Campaign, database_url: str, tmp_path: Path) -> None:
    await add_import_audience(campaign.pool, "seg-visitors", "visitors", 5001)
    zone = tmp_path / "zone"
    zone.mkdir()
    batch = deliver_outbound(zone, "full", [(ecid_of(i), (5001,), ()) for i in range(1, 4)], 1_700_000_000_007)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "import",
        "preview",
        *map(str, _parts(zone, batch)),
        env={**os.environ, "DATABASE_URL": database_url, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out = (await proc.communicate())[0].decode()
    assert proc.returncode == 0, out
    assert "list 'List seg-visitors' (audience seg-visitors): would apply" in out
    assert "members: adds 3, removes 0: 0 -> 3" in out
    assert "nothing was written, emitted or moved" in out
    assert await campaign.pool.fetchval("SELECT count(*) FROM list_member") == 0

    bad = tmp_path / "not-a-platform-file.txt"
    bad.write_text("x")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "import", "preview", str(bad),
        env={**os.environ, "DATABASE_URL": database_url}, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out = (await proc.communicate())[0].decode()
    assert proc.returncode == 2, out
    assert "not-a-platform-file.txt" in out
