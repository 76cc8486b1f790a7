"""Import end to end: outbound files in the drop zone -> ingest -> Kafka -> reconcile -> campaign lists.

The real services run as subprocesses against the real broker, a fresh database and a real ecsim (for
segment metadata and governance). The platform's files are written with the platform's own format
writer, as ecsim does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from shared.dropzone import FileDropZone
from shared.formats.outbound import OutboundFileName, OutboundWriter
from shared.formats.parts import collect_parts
from shared.kafka import OutgoingMessage, Producer
from shared.messages import SegmentEvent
from shared.metrics import RuntimeMetrics
from shared.settings import KafkaSettings
from tests.fixtures.bridge_db import Campaign, add_import_audience, ecid_of, hashed_email_of
from tests.fixtures.ecsim import EcsimEndpoint, ecsim, ecsim_server  # noqa: F401
from tests.fixtures.stack import ServiceProcess, StartService, start_service  # noqa: F401
from tests.helpers import eventually, read_topic

pytestmark = pytest.mark.e2e

Row = tuple[str, list[int], list[int]]
DESTINATION, MASTER_DPID = 7001, 1001
EMAILS_DESTINATION, EMAILS_DPID = 7002, 1002  # a file's master DPID decides the lists it feeds
SEG_VISITORS, SEG_EMAILS, SEG_PII = 5001, 5002, 5003

PLATFORM_SEED = {
    "datasources": [
        {"dataSourceId": 1001, "name": "Adobe Campaign (MID)", "integrationCode": "ac-mid"},
        {"dataSourceId": 1002, "name": "Adobe Campaign (DeclaredId)", "integrationCode": "ac-declared"},
        {"dataSourceId": 1009, "name": "Partner data", "integrationCode": "partner", "dataExportRestrictions": ["PII"]},
    ],
    "traits": [
        {"sid": 9001, "name": "visitors", "traitType": "ON_BOARDED_TRAIT", "dataSourceId": 1001, "folderId": 0},
        {"sid": 9002, "name": "emails", "traitType": "ON_BOARDED_TRAIT", "dataSourceId": 1002, "folderId": 0},
        {"sid": 9009, "name": "partner", "traitType": "ON_BOARDED_TRAIT", "dataSourceId": 1009, "folderId": 0},
    ],
    "segments": [
        {"sid": SEG_VISITORS, "name": "Visitors", "segmentRule": "9001T", "dataSourceId": 1001, "folderId": 0},
        {"sid": SEG_EMAILS, "name": "Emails", "segmentRule": "9002T", "dataSourceId": 1002, "folderId": 0},
        {"sid": SEG_PII, "name": "Mixed", "segmentRule": "9001T AND 9009T", "dataSourceId": 1001, "folderId": 0},
    ],
}


@dataclass
class ImportStack:
    campaign: Campaign
    zone: FileDropZone
    root: Path
    ingest: ServiceProcess
    reconcile: ServiceProcess
    env: dict[str, str]
    start_service: StartService

    async def deliver(
        self,
        mode: str,
        rows: Iterable[tuple[str, list[int], list[int]]],
        *,
        gzip: bool = False,
        max_part_bytes: int = 1 << 20,
        info_first: bool = False,
        corrupt_part: int | None = None,
        emails: bool = False,
    ) -> OutboundFileName:
        destination, dpid = (EMAILS_DESTINATION, EMAILS_DPID) if emails else (DESTINATION, MASTER_DPID)
        batch = OutboundFileName("s3", destination, dpid, mode, int(time.time() * 1000), gzip=gzip)  # type: ignore[arg-type]
        writer = OutboundWriter(batch, max_part_bytes=max_part_bytes)
        parts = list(collect_parts(writer.write(rows)))
        info = writer.info().to_json()
        if info_first:
            await self.zone.write(batch.info_name, info)
        for part in parts:
            data = part.data
            if corrupt_part == part.summary.number:
                data = data[:-2] + bytes([data[-2] ^ 1]) + data[-1:]  # same size, wrong md5
            await self.zone.write(part.summary.name, data)
        if not info_first:
            await self.zone.write(batch.info_name, info)
        return batch

    async def members(self, audience: str) -> set[int]:
        rows = await self.campaign.pool.fetch(
            "SELECT recipient_id FROM list_member JOIN shared_audience USING (list_id) WHERE audience_id = $1",
            audience,
        )
        return {r["recipient_id"] for r in rows}

    async def runs(self, audience: str) -> list[asyncpg.Record]:
        return await self.campaign.pool.fetch("SELECT * FROM run WHERE audience_id = $1 ORDER BY started_at", audience)

    async def area_names(self, name: str) -> set[str]:
        return self.area(name)

    def area(self, name: str) -> set[str]:
        folder = self.root / name
        return {p.name for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


@pytest_asyncio.fixture
async def stack(
    campaign: Campaign,
    ecsim: EcsimEndpoint,  # noqa: F811
    start_service: StartService,  # noqa: F811
    database_url: str,
    topic_prefix: str,
    tmp_path: Path,
) -> AsyncIterator[ImportStack]:
    await ecsim.seed(PLATFORM_SEED)
    await add_import_audience(campaign.pool, "visitors-5001", "visitors", SEG_VISITORS)
    await add_import_audience(campaign.pool, "emails-5002", "hashed-emails", SEG_EMAILS)
    await add_import_audience(campaign.pool, "mixed-5003", "visitors", SEG_PII)
    # A second list fed by the same platform segment.
    await add_import_audience(campaign.pool, "visitors-5001-copy", "visitors", SEG_VISITORS)
    root = tmp_path / "import"
    env = {
        "TOPIC_PREFIX": topic_prefix,
        "DATABASE_URL": database_url,
        "IMPORT_DROPZONE_URL": f"file://{root}",
        "IMPORT_POLL_INTERVAL_S": "0.2",
        "IMPORT_PARTS_TIMEOUT_S": "600",
        "PLATFORM_IMS_URL": ecsim.ims_url,
        "PLATFORM_API_URL": ecsim.api_url,
        "FULL_IMPORT_GUARD_MIN_LIST_SIZE": "1000",
        # The tests that SIGKILL a service: its group waits this long for it before the restarted one gets its
        # partitions (the broker's minimum; 10 s by default).
        "KAFKA_SESSION_TIMEOUT_S": "6",
    }
    # Side by side: the database is migrated already, and each creates the topics it needs.
    reconcile, ingest = await asyncio.gather(start_service("reconcile", env=env), start_service("ingest", env=env))
    zone = FileDropZone(root)
    yield ImportStack(
        campaign=campaign,
        zone=zone,
        root=root,
        ingest=ingest,
        reconcile=reconcile,
        env=env,
        start_service=start_service,
    )
    await zone.close()


async def _wait_members(stack: ImportStack, audience: str, expected: set[int]) -> None:
    await eventually(lambda: stack.members(audience), until=lambda m: m == expected, timeout=60)


async def test_full_by_visitor_id_and_iter_by_declared_id(stack: ImportStack) -> None:
    unknown, malformed = "8" * 38, "7" * 37
    full_rows: list[Row] = [(ecid_of(i), [SEG_VISITORS], []) for i in range(1, 51)]
    full_rows += [(ecid_of(2, 1), [SEG_VISITORS], []), (unknown, [SEG_VISITORS], []), (malformed, [SEG_VISITORS], [])]
    full = await stack.deliver("full", full_rows)
    iter_rows: list[Row] = [(hashed_email_of(i), [SEG_EMAILS], []) for i in range(100, 131)]
    iter_rows.append(("e" * 64, [SEG_EMAILS], []))
    await stack.deliver("iter", iter_rows, gzip=True, emails=True)

    await _wait_members(stack, "visitors-5001", set(range(1, 51)))
    await _wait_members(stack, "visitors-5001-copy", set(range(1, 51)))
    await _wait_members(stack, "emails-5002", set(range(100, 131)))
    unmatched = {
        r["id"]: r["reason"]
        for r in await stack.campaign.pool.fetch(
            "SELECT id, reason FROM unmatched_id WHERE audience_id = 'visitors-5001'"
        )
    }
    assert unmatched == {unknown: "unknown_ecid", malformed: "invalid_format"}
    run = await _succeeded_run(stack, "visitors-5001")
    assert run["mode"] == "full"
    counts = run["counts"]
    assert '"received": 53' in counts
    assert '"invalid": 1' in counts
    assert '"unmatched": 1' in counts
    await eventually(lambda: stack.area_names("processed"), until=lambda names: full.info_name in names)
    assert stack.area("rejected") == set()

    # Members who left the segment leave the list with the next full snapshot; a delta removes too.
    await stack.deliver("full", [(ecid_of(i), [SEG_VISITORS], []) for i in range(1, 41)])
    await stack.deliver("iter", [(hashed_email_of(100), [], [SEG_EMAILS])], emails=True)
    await _wait_members(stack, "visitors-5001", set(range(1, 41)))
    await _wait_members(stack, "emails-5002", set(range(101, 131)))


async def test_info_first_split_gzip_parts(stack: ImportStack) -> None:
    rows: list[Row] = [(ecid_of(i), [SEG_VISITORS], []) for i in range(1, 181)]
    batch = await stack.deliver("full", rows, gzip=True, max_part_bytes=2500, info_first=True)
    await _wait_members(stack, "visitors-5001", set(range(1, 181)))
    # Filed away once its runs are emitted, which may be a moment after reconcile applied them.
    await eventually(lambda: _inbox(stack), until=lambda names: names == set())
    processed = stack.area("processed")
    assert batch.info_name in processed
    assert sum(1 for name in processed if name.startswith(batch.batch_root) and name.endswith(".gz")) >= 3


async def test_a_part_with_a_wrong_md5_rejects_the_batch(stack: ImportStack) -> None:
    rows: list[Row] = [(ecid_of(i), [SEG_VISITORS], []) for i in range(1, 101)]
    batch = await stack.deliver("full", rows, max_part_bytes=2500, corrupt_part=2)
    await eventually(lambda: stack.area_names("rejected"), until=lambda names: batch.info_name in names)
    rejected = stack.area("rejected")
    reason_files = [n for n in rejected if n.endswith(".reason.txt")]
    assert reason_files
    reason = (stack.root / "rejected" / reason_files[0]).read_text()
    assert "md5" in reason
    assert await stack.members("visitors-5001") == set()
    # The service goes on: a good batch alongside still goes through.
    await stack.deliver("full", rows[:10])
    await _wait_members(stack, "visitors-5001", set(range(1, 11)))


async def test_a_pii_restricted_segment_is_blocked_and_nothing_is_written(stack: ImportStack) -> None:
    rows: list[Row] = [(ecid_of(i), [SEG_PII, SEG_VISITORS], []) for i in range(1, 21)]
    await stack.deliver("full", rows)
    await _wait_members(stack, "visitors-5001", set(range(1, 21)))
    assert await stack.members("mixed-5003") == set()
    assert await stack.runs("mixed-5003") == []

    async def blocked_reports() -> list[dict[str, Any]]:
        return [
            line
            for line in stack.ingest.log_lines()
            if line["event"] == "run_status"
            and line.get("state") == "blocked"
            and line.get("audience_id") == "mixed-5003"
        ]

    # Reported once the batch's runs are emitted, which may be a moment after reconcile applied the other's.
    blocked = await eventually(blocked_reports, until=bool)
    assert "PII" in blocked[0]["reason"] or "personally identifiable" in blocked[0]["reason"]


async def test_ingest_killed_mid_run_neither_loses_nor_duplicates(stack: ImportStack) -> None:
    await stack.ingest.stop()
    env = {**stack.env, "MEMBERSHIP_BATCH_SIZE": "500"}
    ingest = await stack.start_service("ingest", env=env)
    # 200 known recipients and 19,800 unknown IDs: 40 batches, so the kill lands mid-run.
    rows: list[Row] = [(ecid_of(i) if i <= 200 else f"{i:038d}", [SEG_VISITORS], []) for i in range(1, 20_001)]
    await stack.deliver("full", rows)

    async def applied() -> int:
        value = await stack.campaign.pool.fetchval(
            "SELECT count(*) FROM applied_batch JOIN run USING (run_id) WHERE audience_id = 'visitors-5001'"
        )
        return int(value)

    await eventually(applied, until=lambda n: n >= 2, timeout=60, interval=0.02)
    await ingest.kill()
    assert await applied() < 40, "the run finished before the kill: make it bigger"
    await stack.start_service("ingest", env=env)

    await _wait_members(stack, "visitors-5001", set(range(1, 201)))
    run = await _succeeded_run(stack, "visitors-5001")
    assert run["batches_applied"] == 40
    assert await applied() == 40  # every batch once: re-emitted batches were recognised, not re-applied
    assert '"received": 20000' in run["counts"]
    assert (
        await stack.campaign.pool.fetchval("SELECT count(*) FROM unmatched_id WHERE audience_id = 'visitors-5001'")
        == 19_800
    )
    # Recorded by ingest once every batch is emitted, which may be a moment after reconcile ended the run.
    ledger = "SELECT state FROM processed_file"
    await eventually(lambda: stack.campaign.pool.fetchval(ledger), until=lambda state: state == "processed")


async def test_a_processed_batch_is_not_processed_again_after_a_restart(stack: ImportStack) -> None:
    rows: list[Row] = [(ecid_of(i), [SEG_VISITORS], []) for i in range(1, 61)]
    batch = await stack.deliver("full", rows)
    await _wait_members(stack, "visitors-5001", set(range(1, 61)))
    await eventually(lambda: _inbox(stack), until=lambda names: names == set())  # filed away before the restart
    await stack.ingest.stop()
    # The same files delivered again under the same names (a platform retry) after a restart.
    await stack.zone.write(batch.info_name, await stack.zone.read_bytes("processed/" + batch.info_name))
    await stack.zone.write(batch.name, await stack.zone.read_bytes("processed/" + batch.name))
    await stack.start_service("ingest", env=stack.env)
    await eventually(lambda: stack.area_names("processed"), until=lambda names: batch.info_name in names)
    await eventually(lambda: _inbox(stack), until=lambda names: names == set())
    assert len(await stack.runs("visitors-5001")) == 1
    assert (
        await stack.campaign.pool.fetchval(
            "SELECT count(*) FROM applied_batch JOIN run USING (run_id) WHERE audience_id = 'visitors-5001'"
        )
        == 1
    )


async def _inbox(stack: ImportStack) -> set[str]:
    return {o.name for o in await stack.zone.list()}


async def _succeeded_run(stack: ImportStack, audience: str) -> asyncpg.Record:
    def done(runs: list[asyncpg.Record]) -> bool:
        return len(runs) == 1 and runs[0]["state"] == "succeeded"

    runs = await eventually(lambda: stack.runs(audience), until=done)
    return runs[0]


async def test_upstream_segment_events_become_list_membership(stack: ImportStack, kafka_bootstrap: str) -> None:
    topic = stack.env["TOPIC_PREFIX"] + "segment-events"

    def event(i: int, op: str, *, segment: str = str(SEG_VISITORS), ecid: str | None = None) -> SegmentEvent:
        return SegmentEvent.model_validate(
            {
                "event_id": f"e-{i}-{op}-{segment}",
                "segment_id": segment,
                "id_type": "ecid",
                "data_source": "visitors",
                "id": ecid or ecid_of(i),
                "op": op,
                "occurred_at": datetime.now(UTC),
            }
        )

    producer = Producer(KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap), "test", RuntimeMetrics("t"))
    try:
        events = [event(i, "add") for i in range(1, 31)] + [event(5, "remove"), event(6, "remove")]
        bad = [
            event(100, "add", segment="no-such-segment"),
            event(101, "add", ecid="123"),  # not 38 digits
        ]
        await producer.send([OutgoingMessage.of(topic, e) for e in [*events[:10], *bad, *events[10:]]])
        await producer.send([OutgoingMessage(topic=topic, value=b"{oops", key=str(SEG_VISITORS).encode())])
        await _wait_members(stack, "visitors-5001", set(range(1, 31)) - {5, 6})
        dead = await read_topic(kafka_bootstrap, topic + ".dlq", expect=3)
        reasons = sorted(dict(r.headers)["dlq.reason"].decode() for r in dead)
        assert any("no import audience" in r for r in reasons)
        assert any("malformed id" in r for r in reasons)
        assert any("not JSON" in r for r in reasons)
        # PII-restricted segment: events are refused with the reason, nothing is written.
        await producer.send([OutgoingMessage.of(topic, event(7, "add", segment=str(SEG_PII)))])
        dead = await read_topic(kafka_bootstrap, topic + ".dlq", expect=4)
        assert any(b"governance" in dict(r.headers)["dlq.reason"] for r in dead)
        assert await stack.members("mixed-5003") == set()
    finally:
        await producer.stop()


async def test_reconcile_killed_mid_full_run_applies_everything_exactly_once(stack: ImportStack) -> None:
    await stack.ingest.stop()
    env = {**stack.env, "MEMBERSHIP_BATCH_SIZE": "200"}
    await stack.start_service("ingest", env=env)
    rows: list[Row] = [(ecid_of(i) if i <= 200 else f"{i:038d}", [SEG_VISITORS], []) for i in range(1, 16_001)]
    await stack.deliver("full", rows)

    async def applied() -> int:
        return int(
            await stack.campaign.pool.fetchval(
                "SELECT count(*) FROM applied_batch JOIN run USING (run_id) WHERE audience_id = 'visitors-5001'"
            )
        )

    await eventually(applied, until=lambda n: n >= 3, timeout=60, interval=0.01)
    await stack.reconcile.kill()
    assert await applied() < 80, "the run finished before the kill: make it bigger"
    assert await stack.members("visitors-5001") == set()  # a full run applies nothing until it is complete
    await stack.start_service("reconcile", env=stack.env)

    await _wait_members(stack, "visitors-5001", set(range(1, 201)))
    run = await _succeeded_run(stack, "visitors-5001")
    assert run["batches_applied"] == 80
    assert await applied() == 80
    assert (
        await stack.campaign.pool.fetchval("SELECT count(*) FROM unmatched_id WHERE audience_id = 'visitors-5001'")
        == 15_800
    )


async def test_two_ingest_replicas_process_each_batch_once(stack: ImportStack) -> None:
    second = await stack.start_service("ingest", env=stack.env)
    roots = []
    for k in range(3):
        batch = await stack.deliver("iter", [(ecid_of(i), [SEG_VISITORS], []) for i in range(10 * k + 1, 10 * k + 11)])
        roots.append(batch.batch_root)
    await _wait_members(stack, "visitors-5001", set(range(1, 31)))
    await eventually(lambda: _inbox(stack), until=lambda names: names == set())
    assert len(await stack.runs("visitors-5001")) == 3
    assert stack.area("rejected") == set()
    for process in (stack.ingest, second):
        events = [line["event"] for line in process.log_lines()]
        assert "batch_rejected" not in events
        assert "import_scan_failed" not in events
