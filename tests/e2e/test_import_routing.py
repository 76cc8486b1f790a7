"""Issue 14, parts 1 and 4, through the running services: a file feeds only the lists of its data source;
a delivery for an unknown data source is reported and filed, nothing imported; files still being written are
left alone.

A dedicated ecsim delivers the platform's batches (``POST /sim/deliveries``) into the import zone that the
real ingest and reconcile processes work from; one platform segment feeds one list per data source, as the
README recommends.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import pytest_asyncio

from services.ingest.run_ids import batch_run_id
from shared.formats.outbound import OutboundFileName, OutboundWriter
from shared.formats.parts import collect_parts
from shared.messages import AudienceSyncStatus
from tests.fixtures.bridge_db import Campaign, add_import_audience, ecid_of, hashed_email_of
from tests.fixtures.ecsim import EcsimEndpoint, EcsimFactory, ecsim_factory  # noqa: F401
from tests.fixtures.stack import ServiceProcess, StartService, start_service  # noqa: F401
from tests.helpers import eventually, read_topic

pytestmark = pytest.mark.e2e

SEGMENT = 5001
ECID_DESTINATION, EMAIL_DESTINATION, PARTNER_DESTINATION = 7001, 7002, 7009
QUIET_PERIOD_S = 2.0

PLATFORM_SEED: dict[str, Any] = {
    "datasources": [
        {"dataSourceId": 1001, "name": "Campaign (MID)", "integrationCode": "ac-mid", "idType": "COOKIE"},
        {"dataSourceId": 1002, "name": "Campaign (DeclaredId)", "integrationCode": "ac-decl", "idType": "CROSS_DEVICE"},
        {"dataSourceId": 1009, "name": "A partner's IDs", "integrationCode": "partner", "idType": "COOKIE"},
    ],
    "traits": [
        {"sid": 9001, "name": "engaged", "traitType": "ON_BOARDED_TRAIT", "dataSourceId": 1001, "folderId": 0},
    ],
    # One segment, delivered by one destination per data source (each destination's master DPID is its own).
    "segments": [{"sid": SEGMENT, "name": "Engaged", "segmentRule": "9001T", "dataSourceId": 1001, "folderId": 0}],
    "destinations": [
        {
            "destinationId": destination,
            "name": f"Campaign {destination}",
            "destinationType": "S2S",
            "dataSourceId": dpid,
            "mappings": [{"sid": SEGMENT}],
        }
        for destination, dpid in ((ECID_DESTINATION, 1001), (EMAIL_DESTINATION, 1002), (PARTNER_DESTINATION, 1009))
    ],
}


@dataclass
class RoutingStack:
    campaign: Campaign
    ecsim: EcsimEndpoint
    root: Path
    ingest: ServiceProcess
    reconcile: ServiceProcess
    status_topic: str
    bootstrap: str

    async def deliver(self, destination: int, mode: str, members: list[str]) -> dict[str, Any]:
        body = {"destination_id": destination, "mode": mode, "membership": {str(SEGMENT): members}}
        result: dict[str, Any] = await self.ecsim.admin("POST", "/deliveries", body)
        return result

    async def members(self, audience: str) -> set[int]:
        rows = await self.campaign.pool.fetch(
            "SELECT recipient_id FROM list_member JOIN shared_audience USING (list_id) WHERE audience_id = $1",
            audience,
        )
        return {r["recipient_id"] for r in rows}

    async def runs(self, audience: str | None = None) -> list[asyncpg.Record]:
        return await self.campaign.pool.fetch(
            "SELECT * FROM run WHERE direction = 'import' AND ($1::text IS NULL OR audience_id = $1) "
            "ORDER BY started_at",
            audience,
        )

    def area(self, name: str) -> set[str]:
        folder = self.root / name
        return {p.name for p in folder.iterdir()} if folder.exists() else set()

    def inbox(self) -> set[str]:
        return {p.name for p in self.root.iterdir() if p.is_file()} if self.root.exists() else set()


@pytest_asyncio.fixture
async def stack(
    campaign: Campaign,
    ecsim_factory: EcsimFactory,  # noqa: F811
    start_service: StartService,  # noqa: F811
    database_url: str,
    topic_prefix: str,
    kafka_bootstrap: str,
) -> AsyncIterator[RoutingStack]:
    ecsim = await ecsim_factory()  # its own import zone: nothing left over by other tests
    await ecsim.seed(PLATFORM_SEED)
    await add_import_audience(campaign.pool, "seg-visitors", "visitors", SEGMENT)
    await add_import_audience(campaign.pool, "seg-emails", "hashed-emails", SEGMENT)
    env = {
        "TOPIC_PREFIX": topic_prefix,
        "DATABASE_URL": database_url,
        "IMPORT_DROPZONE_URL": ecsim.import_dropzone_url,
        "IMPORT_POLL_INTERVAL_S": "0.2",
        "IMPORT_QUIET_PERIOD_S": str(QUIET_PERIOD_S),
        "PLATFORM_IMS_URL": ecsim.ims_url,
        "PLATFORM_API_URL": ecsim.api_url,
        "FULL_IMPORT_GUARD_MIN_LIST_SIZE": "1000",
    }
    # Side by side: the database is migrated already, and each creates the topics it needs.
    reconcile, ingest = await asyncio.gather(start_service("reconcile", env=env), start_service("ingest", env=env))
    assert ecsim.import_dir is not None
    yield RoutingStack(
        campaign=campaign,
        ecsim=ecsim,
        root=ecsim.import_dir,
        ingest=ingest,
        reconcile=reconcile,
        status_topic=f"{topic_prefix}audience-sync-status",
        bootstrap=kafka_bootstrap,
    )


async def _wait_members(stack: RoutingStack, audience: str, expected: set[int]) -> None:
    await eventually(lambda: stack.members(audience), until=lambda m: m == expected, timeout=60)


async def _ended(stack: RoutingStack, audience: str, count: int) -> list[asyncpg.Record]:
    def done(runs: list[asyncpg.Record]) -> bool:
        return len(runs) == count and all(r["state"] in ("succeeded", "failed", "blocked") for r in runs)

    return await eventually(lambda: stack.runs(audience), until=done, timeout=60)


async def test_an_ecid_file_and_an_email_file_for_the_same_segment_each_change_only_their_own_list(
    stack: RoutingStack,
) -> None:
    unknown_ecid = "8" * 38
    await stack.deliver(ECID_DESTINATION, "full", [ecid_of(i) for i in range(1, 51)] + [unknown_ecid])
    await _wait_members(stack, "seg-visitors", set(range(1, 51)))
    [visitors_run] = await _ended(stack, "seg-visitors", 1)
    assert visitors_run["state"] == "succeeded"
    assert await stack.runs("seg-emails") == []  # the ECID file made no run of the e-mail list
    assert await stack.members("seg-emails") == set()

    await stack.deliver(EMAIL_DESTINATION, "full", [hashed_email_of(i) for i in range(40, 81)])
    await _wait_members(stack, "seg-emails", set(range(40, 81)))
    [emails_run] = await _ended(stack, "seg-emails", 1)
    assert emails_run["state"] == "succeeded"
    assert orjson.loads(emails_run["counts"])["received"] == 41
    assert await stack.members("seg-visitors") == set(range(1, 51))
    assert len(await stack.runs("seg-visitors")) == 1  # and the e-mail file made none of the ECID list

    # A delta of ECIDs: ten leave the segment; the e-mail list stays as it is.
    await stack.deliver(ECID_DESTINATION, "iter", [ecid_of(i) for i in range(11, 51)] + [unknown_ecid])
    await _wait_members(stack, "seg-visitors", set(range(11, 51)))
    visitors_runs = await _ended(stack, "seg-visitors", 2)
    assert [r["mode"] for r in visitors_runs] == ["full", "delta"]
    assert await stack.members("seg-emails") == set(range(40, 81))
    assert len(await stack.runs("seg-emails")) == 1
    unmatched = await stack.campaign.pool.fetch("SELECT audience_id, id, reason FROM unmatched_id ORDER BY 1")
    # Nothing kept as an unknown declared ID: no ECID ever reached the e-mail list.
    assert [tuple(r) for r in unmatched] == [("seg-visitors", unknown_ecid, "unknown_ecid")]
    assert stack.area("rejected") == set()


async def test_a_delivery_for_an_unknown_data_source_is_reported_and_filed_and_nothing_imported(
    stack: RoutingStack,
) -> None:
    result = await stack.deliver(PARTNER_DESTINATION, "full", [ecid_of(i) for i in range(1, 21)])
    names = set(result["writeOrder"])  # the part and its .info
    assert len(names) == 2
    reason = "delivered for an unknown data source (DPID 1009)"

    async def ledger() -> list[asyncpg.Record]:
        return await stack.campaign.pool.fetch("SELECT batch_root, state, reason, run_ids FROM processed_file")

    [row] = await eventually(ledger, until=lambda rows: len(rows) == 1 and rows[0]["state"] == "processed")
    assert (row["batch_root"], row["reason"], row["run_ids"]) == (result["batchRoot"], reason, [])
    await eventually(lambda: _async(stack.area("processed")), until=lambda filed: filed == names)
    assert stack.inbox() == set()
    assert stack.area("rejected") == set()
    assert await stack.runs() == []
    assert await stack.members("seg-visitors") == set()  # same segment, same ID type: still not fed

    statuses = [
        AudienceSyncStatus.model_validate_json(r.value or b"")
        for r in await read_topic(stack.bootstrap, stack.status_topic, expect=1)
    ]
    assert [(s.run_id, s.state, s.audience_id, s.reason) for s in statuses] == [
        (batch_run_id(row["batch_root"]), "failed", None, reason)
    ]
    _, metrics = await stack.ingest.get("/metrics")
    assert 'ab_dropzone_files_total{outcome="unknown_data_source"} 2.0' in metrics  # the part and its .info
    assert 'ab_dropzone_files_total{outcome="processed"} 0.0' in metrics
    status, page = await stack.reconcile.get("/")
    assert status == 200
    assert reason in page
    assert row["batch_root"] in page
    _, api = await stack.reconcile.get("/api/status")
    [delivery] = orjson.loads(api)["deliveries_not_imported"]
    assert (delivery["batch_root"], delivery["state"], delivery["reason"]) == (row["batch_root"], "processed", reason)


async def _async(value: Any) -> Any:
    return value


async def _write_slowly(path: Path, data: bytes, pieces: int, pause_s: float, on_piece: Any) -> None:
    """Append ``data`` to ``path`` in ``pieces`` writes ``pause_s`` apart, as a slow upload does."""
    step = -(-len(data) // pieces)
    with path.open("wb") as handle:
        for start in range(0, len(data), step):
            handle.write(data[start : start + step])
            handle.flush()
            os.fsync(handle.fileno())
            await on_piece()
            await asyncio.sleep(pause_s)  # the writer's pace (the scenario), not a wait for a condition


async def test_files_written_slowly_under_temporary_names_are_imported_once_and_nothing_is_rejected(
    stack: RoutingStack,
) -> None:
    batch = OutboundFileName("s3", ECID_DESTINATION, 1001, "full", int(time.time() * 1000))
    writer = OutboundWriter(batch)
    [part] = list(collect_parts(writer.write([(ecid_of(i), [SEGMENT], []) for i in range(1, 31)])))
    info = writer.info().to_json()
    stack.root.mkdir(parents=True, exist_ok=True)
    # An SFTP client's way (a hidden name, then a rename) for the .info, a ".tmp" for the part, and a file
    # named in place that breaks the grammar and grows all along: none may be touched while being written.
    part_tmp, info_tmp = stack.root / f"{part.summary.name}.tmp", stack.root / f".{batch.info_name}"
    growing = stack.root / "segment-notes.csv"

    async def nothing_touched() -> None:
        assert stack.area("rejected") == set(), "a file was rejected while it was being written"
        assert stack.area("processed") == set()

    # The temporary files stall longer than the quiet period between writes (as a slow upload does): only
    # their names protect them. The misnamed file keeps growing faster than that: its growth protects it.
    stall = QUIET_PERIOD_S + 1.0
    await asyncio.gather(
        _write_slowly(part_tmp, part.data, 4, stall, nothing_touched),
        _write_slowly(info_tmp, info, 3, stall, nothing_touched),
        _write_slowly(growing, b"segment,note\n" * 400, 16, QUIET_PERIOD_S / 4, nothing_touched),
    )
    assert {part_tmp.name, info_tmp.name} <= stack.inbox()
    os.replace(part_tmp, stack.root / part.summary.name)
    os.replace(info_tmp, stack.root / batch.info_name)

    await _wait_members(stack, "seg-visitors", set(range(1, 31)))
    [run] = await _ended(stack, "seg-visitors", 1)
    assert run["state"] == "succeeded"
    # Filed away after its run was emitted: possibly a moment after reconcile ended it.
    expected = {part.summary.name, batch.info_name}
    await eventually(lambda: _async(stack.area("processed")), until=lambda filed: filed == expected)
    # The misnamed file, once it stopped growing, waited out the quiet period and was rejected, alone.
    await eventually(lambda: _async(stack.area("rejected")), until=lambda r: growing.name in r, timeout=30)
    assert stack.area("rejected") == {growing.name, growing.name + ".reason.txt"}
    assert (stack.root / "rejected" / growing.name).read_bytes() == b"segment,note\n" * 400
    # Logged once its files are moved: a moment after they show in processed/.
    events = await eventually(
        lambda: _async([line["event"] for line in stack.ingest.log_lines()]), until=lambda ev: "batch_processed" in ev
    )
    assert "batch_rejected" not in events
    assert events.count("batch_processed") == 1
