"""ingest's drop-zone scan against real Postgres, Kafka and a file:// zone: one batch's failure stays its own;
a batch feeds only the audiences of its data source, one that no audience takes is filed unread and said so;
files other writers are still writing are left alone (issue 14, parts 1 and 4)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from services.ingest.audiences import AudienceDirectory, ImportAudience
from services.ingest.files import FileImporter
from services.ingest.run_ids import batch_run_id, file_run_id
from services.reconcile.catalog import (
    CatalogDataSource,
    CatalogImportAudience,
    load_catalog_file,
    upsert_data_source,
    upsert_import_audience,
)
from shared.dropzone import ObjectNotFound
from shared.dropzone.file import FileDropZone
from shared.kafka import Producer, ensure_topics
from shared.messages import AudienceMembership, AudienceSyncStatus
from shared.metrics import RuntimeMetrics
from shared.runs.reporter import RunReporter
from shared.settings import KafkaSettings
from tests.fixtures.bridge_db import Campaign, add_import_audience, ecid_of, hashed_email_of
from tests.helpers import deliver_outbound, eventually, read_topic

pytestmark = pytest.mark.integration


class _VanishingZone(FileDropZone):
    """A zone where the parts of one batch disappear between the listing and the reading (an operator or
    another system removed them)."""

    def __init__(self, root: Path, vanishing: str) -> None:
        super().__init__(root)
        self.vanishing = vanishing

    async def read(self, name: str) -> AsyncGenerator[bytes, None]:
        if name.startswith(self.vanishing) and not name.endswith(".info"):
            raise ObjectNotFound("drop-zone object not found", url=self.url, name=name)
        async for chunk in super().read(name):
            yield chunk


async def test_a_batch_that_fails_unexpectedly_does_not_hold_up_the_next(
    campaign: Campaign, tmp_path: Path, kafka_bootstrap: str, topic_prefix: str
) -> None:
    await add_import_audience(campaign.pool, "scan-a", "visitors", 5001)
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    membership, status = f"{topic_prefix}audience-membership", f"{topic_prefix}audience-sync-status"
    await ensure_topics(settings, [membership, status])
    zone_dir = tmp_path / "import"
    zone_dir.mkdir()
    first = deliver_outbound(zone_dir, "full", [(ecid_of(i), (5001,), ()) for i in range(1, 4)], 1_700_000_000_000)
    second = deliver_outbound(zone_dir, "full", [(ecid_of(i), (5001,), ()) for i in range(4, 9)], 1_700_000_000_001)

    async def allowed(_audience: ImportAudience) -> str | None:
        return None

    producer = Producer(settings, "test", RuntimeMetrics("test"))
    await producer.start()
    try:
        importer = FileImporter(
            zone=_VanishingZone(zone_dir, first.batch_root),
            pool=campaign.pool,
            producer=producer,
            membership_topic=membership,
            directory=AudienceDirectory(campaign.pool),
            governance=allowed,
            status=RunReporter(producer, service="test", topic_prefix=topic_prefix),
        )
        assert await importer.scan() == 1  # the first batch failed; the second went through all the same
    finally:
        await producer.stop()
    ledger = {r["batch_root"]: r["state"] for r in await campaign.pool.fetch("SELECT * FROM processed_file")}
    assert ledger == {second.batch_root: "processed"}
    records = await read_topic(kafka_bootstrap, membership, expect=1)
    batches = [AudienceMembership.model_validate_json(r.value or b"") for r in records]
    assert [sorted(b.adds) for b in batches] == [sorted(ecid_of(i) for i in range(4, 9))]
    # The failed batch stays where it was, to be tried again at the next scan; the other one was filed.
    assert (zone_dir / first.info_name).exists()
    assert not (zone_dir / second.info_name).exists()


async def _allowed(_audience: ImportAudience) -> str | None:
    return None


@dataclass
class Scanner:
    """A FileImporter over a file:// zone, with the real Postgres and Kafka."""

    zone_dir: Path
    prefix: str
    pool: asyncpg.Pool
    producer: Producer
    membership: str
    status: str
    bootstrap: str
    files: list[tuple[str, str]] = field(default_factory=list)  # (name, outcome) as told to the metric

    def importer(self, *, quiet_period_s: float = 0.0) -> FileImporter:
        return FileImporter(
            zone=FileDropZone(self.zone_dir),
            pool=self.pool,
            producer=self.producer,
            membership_topic=self.membership,
            directory=AudienceDirectory(self.pool, min_refresh_s=0.0),
            governance=_allowed,
            status=RunReporter(self.producer, service="test", topic_prefix=self.prefix),
            quiet_period_s=quiet_period_s,
            on_file=lambda name, outcome: self.files.append((name, outcome)),
        )

    def area(self, name: str) -> set[str]:
        folder = self.zone_dir / name
        return {p.name for p in folder.iterdir()} if folder.exists() else set()

    def inbox(self) -> set[str]:
        return {p.name for p in self.zone_dir.iterdir() if p.is_file()}

    async def batches(self, expect: int) -> list[AudienceMembership]:
        records = await read_topic(self.bootstrap, self.membership, expect=expect, timeout=10 if expect else 2)
        return [AudienceMembership.model_validate_json(r.value or b"") for r in records]


@pytest_asyncio.fixture
async def scanner(
    campaign: Campaign, tmp_path: Path, kafka_bootstrap: str, topic_prefix: str
) -> AsyncIterator[Scanner]:
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    membership, status = f"{topic_prefix}audience-membership", f"{topic_prefix}audience-sync-status"
    await ensure_topics(settings, [membership, status])
    zone_dir = tmp_path / "import"
    zone_dir.mkdir()
    producer = Producer(settings, "test", RuntimeMetrics("test"))
    await producer.start()
    try:
        yield Scanner(zone_dir, topic_prefix, campaign.pool, producer, membership, status, kafka_bootstrap)
    finally:
        await producer.stop()


async def test_a_file_feeds_only_the_lists_of_its_data_source(campaign: Campaign, scanner: Scanner) -> None:
    """The README's setup: one segment feeding one list per data source. Each file feeds its own list."""
    await add_import_audience(campaign.pool, "seg-visitors", "visitors", 5001)
    await add_import_audience(campaign.pool, "seg-emails", "hashed-emails", 5001)
    ecids = deliver_outbound(
        scanner.zone_dir, "full", [(ecid_of(i), (5001,), ()) for i in range(1, 6)], 1_700_000_000_000
    )
    emails = [(hashed_email_of(i), (5001,), ()) for i in range(3, 9)]
    mails = deliver_outbound(scanner.zone_dir, "full", emails, 1_700_000_000_001, master_dpid=1002, destination_id=7002)
    assert await scanner.importer().scan() == 2
    sent = await scanner.batches(expect=2)
    by_run = {(b.audience_id, b.run_id): sorted(b.adds) for b in sent}
    assert by_run == {
        ("seg-visitors", file_run_id(ecids.batch_root, "seg-visitors")): sorted(ecid_of(i) for i in range(1, 6)),
        ("seg-emails", file_run_id(mails.batch_root, "seg-emails")): sorted(hashed_email_of(i) for i in range(3, 9)),
    }
    assert {b.data_source for b in sent} == {"visitors", "hashed-emails"}


async def test_a_batch_for_an_unknown_data_source_is_reported_and_filed_then_imported_once_configured(
    campaign: Campaign, scanner: Scanner
) -> None:
    await add_import_audience(campaign.pool, "seg-visitors", "visitors", 5001)
    rows = [(ecid_of(i), (5001,), ()) for i in range(1, 4)]
    batch = deliver_outbound(scanner.zone_dir, "full", rows, 1_700_000_000_000, master_dpid=1009, destination_id=7009)
    assert await scanner.importer().scan() == 1
    reason = "delivered for an unknown data source (DPID 1009)"
    ledger = await campaign.pool.fetchrow("SELECT state, reason, run_ids FROM processed_file")
    assert ledger is not None
    assert dict(ledger) == {"state": "processed", "reason": reason, "run_ids": []}
    assert scanner.inbox() == set()
    assert scanner.area("processed") == {batch.name, batch.info_name}
    assert sorted(scanner.files) == sorted((n, "unknown_data_source") for n in (batch.name, batch.info_name))
    [event] = [
        AudienceSyncStatus.model_validate_json(r.value or b"")
        for r in await read_topic(scanner.bootstrap, scanner.status, expect=1)
    ]
    assert (event.run_id, event.state, event.audience_id, event.reason) == (
        batch_run_id(batch.batch_root),
        "failed",
        None,
        reason,
    )
    assert await scanner.batches(expect=0) == []  # fed to nobody, the visitors list included

    # The operator configures the data source and an audience, and drops the files again: imported.
    await upsert_data_source(campaign.pool, CatalogDataSource(name="partner", dpid=1009, id_type="ecid"))
    await add_import_audience(campaign.pool, "seg-partner", "partner", 5001)
    for name in (batch.name, batch.info_name):
        shutil.move(scanner.zone_dir / "processed" / name, scanner.zone_dir / name)
    assert await scanner.importer().scan() == 1
    [sent] = await scanner.batches(expect=1)
    assert (sent.audience_id, sorted(sent.adds)) == ("seg-partner", sorted(r[0] for r in rows))
    ledger = await campaign.pool.fetchrow("SELECT state, reason, run_ids FROM processed_file")
    assert ledger is not None
    assert dict(ledger) == {
        "state": "processed",
        "reason": None,
        "run_ids": [file_run_id(batch.batch_root, "seg-partner")],
    }


async def test_an_audience_naming_a_destination_takes_only_that_destinations_files(
    campaign: Campaign, scanner: Scanner, tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        "import_audiences:\n"
        "  - {audience_id: from-7003, name: From 7003, platform_segment_id: 5001, data_source: visitors,\n"
        "     list: From 7003, platform_destination_id: 7003}\n"
    )
    [spec] = load_catalog_file(catalog).import_audiences
    assert spec == CatalogImportAudience(
        audience_id="from-7003",
        name="From 7003",
        platform_segment_id=5001,
        data_source="visitors",
        list="From 7003",
        platform_destination_id=7003,
    )
    async with campaign.pool.acquire() as conn:
        await upsert_import_audience(conn, spec)
    rows = [(ecid_of(i), (5001,), ()) for i in range(1, 4)]
    other = deliver_outbound(scanner.zone_dir, "full", rows, 1_700_000_000_000, destination_id=7001)
    own = deliver_outbound(scanner.zone_dir, "full", rows, 1_700_000_000_001, destination_id=7003)
    assert await scanner.importer().scan() == 2
    [sent] = await scanner.batches(expect=1)
    assert sent.run_id == file_run_id(own.batch_root, "from-7003")
    reason = await campaign.pool.fetchval("SELECT reason FROM processed_file WHERE batch_root = $1", other.batch_root)
    assert reason == (
        "delivered for data source DPID 1001 by destination 7001, which no import audience of that data source takes"
    )
    assert sorted(outcome for _name, outcome in scanner.files) == ["processed"] * 2 + ["unrouted"] * 2


async def test_files_being_written_are_left_alone_and_a_misnamed_one_waits_for_the_quiet_period(
    campaign: Campaign, scanner: Scanner
) -> None:
    await add_import_audience(campaign.pool, "seg-visitors", "visitors", 5001)
    partial = [
        "s3_7001_1001_full_1700000000000.sync.tmp",
        ".s3_7001_1001_full_1700000000000.info",
        "x.filepart",
        "notes.txt~",
        ".hidden",
        "x.PART",
        "y.partial",
    ]
    for name in partial:
        (scanner.zone_dir / name).write_bytes(b"half a file")
    misnamed = scanner.zone_dir / "report.csv"
    misnamed.write_bytes(b"a,b\n")
    importer = scanner.importer(quiet_period_s=1.0)
    assert await importer.scan() == 0
    assert scanner.inbox() == {*partial, "report.csv"}  # nothing touched yet: the misnamed file is new
    misnamed.write_bytes(b"a,b\n1,2\n")  # it grows: the wait starts over
    assert await importer.scan() == 0
    assert "report.csv" in scanner.inbox()

    async def inbox_after_scan() -> set[str]:
        await importer.scan()
        return scanner.inbox()

    await eventually(inbox_after_scan, until=lambda names: "report.csv" not in names, timeout=10)
    assert scanner.area("rejected") == {"report.csv", "report.csv.reason.txt"}
    assert scanner.inbox() == set(partial)  # the others were never touched
    assert scanner.files == [("report.csv", "rejected")]
    assert await campaign.pool.fetchval("SELECT count(*) FROM processed_file") == 0
