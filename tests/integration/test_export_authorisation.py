"""Who may export what, against real Postgres and Kafka: the catalog's export audiences, refusals with their
reason (a failed run and its status event), the audit trail, and an audience no request can re-point."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from services.reconcile.catalog import (
    CatalogExportAudience,
    CatalogFile,
    apply_catalog,
    ensure_list,
    load_catalog_file,
)
from services.reconcile.exporting import Exporter, export_audience_id
from shared.errors import ConfigError
from shared.kafka import Producer, ensure_topics
from shared.messages import AudienceExportBatch, AudienceExportRequest, AudienceSyncStatus, ExportMode, RequestChannel
from shared.metrics import RuntimeMetrics
from shared.runs.reporter import RunReporter
from shared.settings import KafkaSettings
from tests.fixtures.bridge_db import Campaign
from tests.helpers import read_topic

pytestmark = pytest.mark.integration

VIP = CatalogExportAudience(
    list="vip",
    data_source="hashed-emails",
    audience_name="VIP",
    modes=("append", "mirror"),
    requesters=("api:*", "cli:alice", "kafka:campaign-workflow"),
)


@dataclass
class Rig:
    campaign: Campaign
    producer: Producer
    reporter: RunReporter
    batches_topic: str
    status_topic: str
    bootstrap: str

    def exporter(self, *, allow_undeclared: bool = False) -> Exporter:
        return Exporter(
            self.campaign.pool,
            self.producer,
            batches_topic=self.batches_topic,
            reporter=self.reporter,
            batch_size=1000,
            allow_undeclared=allow_undeclared,
        )

    async def run_of(self, request: AudienceExportRequest) -> dict[str, object]:
        row = await self.campaign.pool.fetchrow(
            """SELECT state, reason, requested_by, requested_via FROM run WHERE request_id = $1
                ORDER BY started_at DESC LIMIT 1""",
            request.request_id,
        )
        assert row is not None, "the request has no run"
        return dict(row)

    async def statuses(self, expect: int) -> list[AudienceSyncStatus]:
        records = await read_topic(self.bootstrap, self.status_topic, expect=expect)
        return [AudienceSyncStatus.model_validate_json(r.value) for r in records]


@pytest_asyncio.fixture
async def rig(campaign: Campaign, kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[Rig]:
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    batches, status = f"{topic_prefix}audience-export-batches", f"{topic_prefix}audience-sync-status"
    await ensure_topics(settings, [batches, status])
    producer = Producer(settings, "test", RuntimeMetrics("test"))
    await producer.start()
    reporter = RunReporter(producer, service="test", topic_prefix=topic_prefix)
    async with campaign.pool.acquire() as conn:
        for name, members in (("vip", range(1, 21)), ("everyone", range(1, 41))):
            list_id = await ensure_list(conn, name)
            await conn.executemany(
                "INSERT INTO list_member (list_id, recipient_id) VALUES ($1, $2)", [(list_id, r) for r in members]
            )
        await apply_catalog(conn, CatalogFile(export_audiences=[VIP]))
    yield Rig(campaign, producer, reporter, batches, status, kafka_bootstrap)
    await producer.stop()


def request(
    list_id: str = "vip",
    *,
    audience: str = "VIP",
    mode: ExportMode = "append",
    by: str = "campaign-workflow",
    via: RequestChannel = "kafka",
) -> AudienceExportRequest:
    return AudienceExportRequest(
        list_id=list_id,
        audience_name=audience,
        data_source="hashed-emails",
        mode=mode,
        requested_by=by,
        requested_via=via,
    )


async def test_a_declared_export_goes_ahead_and_records_who_asked(rig: Rig) -> None:
    asked = request(by="alice", via="cli")
    run_id = await rig.exporter().export(asked)
    assert run_id is not None
    [batch] = [
        AudienceExportBatch.model_validate_json(r.value)
        for r in await read_topic(rig.bootstrap, rig.batches_topic, expect=1)
    ]
    assert len(batch.adds) == 20
    run = await rig.run_of(asked)
    assert (run["state"], run["requested_by"], run["requested_via"]) == ("progress", "alice", "cli")
    via = await rig.campaign.pool.fetchval(
        "SELECT requested_via FROM export_request WHERE request_id = $1", asked.request_id
    )
    assert via == "cli"


@pytest.mark.parametrize(
    ("asked", "reason"),
    [
        (request(audience="Everyone"), "no export audience 'Everyone' of data source 'hashed-emails' is declared"),
        (
            request("everyone"),
            "declares export audience 'VIP' of data source 'hashed-emails' for list 'vip', not 'everyone'",
        ),
        (request(mode="full"), "in mode append, mirror, not 'full'"),
        (request(by="mallory"), "'kafka:mallory' may not ask for export audience 'VIP'"),
        # The channel is part of who asks: the workflow's name claimed at the CLI is another requester.
        (request(by="campaign-workflow", via="cli"), "'cli:campaign-workflow' may not ask"),
    ],
    ids=["undeclared", "other-list", "mode", "requester", "channel"],
)
async def test_a_request_outside_the_catalog_is_refused_with_the_reason(
    rig: Rig, asked: AudienceExportRequest, reason: str
) -> None:
    await rig.exporter().export(asked)
    run = await rig.run_of(asked)
    assert run["state"] == "failed"
    assert reason in str(run["reason"])
    assert (run["requested_by"], run["requested_via"]) == (asked.requested_by, asked.requested_via)
    [status] = await rig.statuses(expect=1)
    assert status.state == "failed"
    assert reason in (status.reason or "")
    # Nothing was shared, and no audience was created for the refused request.
    assert await read_topic(rig.bootstrap, rig.batches_topic, expect=1, timeout=2) == []
    audience_id = export_audience_id("hashed-emails", asked.audience_name)
    shared = await rig.campaign.pool.fetchval(
        "SELECT count(*) FROM shared_audience WHERE audience_id = $1", audience_id
    )
    assert shared == 0


async def test_allow_undeclared_opens_undeclared_audiences_only(rig: Rig) -> None:
    exporter = rig.exporter(allow_undeclared=True)
    undeclared = request("everyone", audience="Everyone", by="dev")
    assert await exporter.export(undeclared) is not None
    assert (await rig.run_of(undeclared))["state"] == "progress"
    # A declared audience keeps its rules.
    await exporter.resume([wrong := request(by="mallory")])
    assert (await rig.run_of(wrong))["state"] == "failed"


async def test_a_request_never_repoints_an_audience(rig: Rig) -> None:
    exporter = rig.exporter(allow_undeclared=True)
    first = request("vip", audience="Shared", by="dev")
    assert await exporter.export(first) is not None
    audience_id = export_audience_id("hashed-emails", "Shared")
    bound = await rig.campaign.pool.fetchval("SELECT list_id FROM shared_audience WHERE audience_id = $1", audience_id)
    await rig.campaign.pool.execute("UPDATE run SET state = 'succeeded' WHERE request_id = $1", first.request_id)

    await exporter.resume([other := request("everyone", audience="Shared", by="dev")])
    run = await rig.run_of(other)
    assert run["state"] == "failed"
    assert "audience rebind" in str(run["reason"])
    after = await rig.campaign.pool.fetchval("SELECT list_id FROM shared_audience WHERE audience_id = $1", audience_id)
    assert after == bound


async def test_the_catalog_file_declares_and_revokes_export_audiences(rig: Rig, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        "export_audiences:\n"
        "  - {list: everyone, data_source: visitors, audience_name: All, modes: [mirror], requesters: ['api:*']}\n"
    )
    async with rig.campaign.pool.acquire() as conn:
        await apply_catalog(conn, load_catalog_file(catalog))
    exporter = rig.exporter()
    allowed = AudienceExportRequest(
        list_id="everyone",
        audience_name="All",
        data_source="visitors",
        mode="mirror",
        requested_by="bob",
        requested_via="api",
    )
    assert await exporter.export(allowed) is not None
    assert (await rig.run_of(allowed))["state"] == "progress"
    # The file replaced the declarations: VIP, no longer in it, is revoked.
    await exporter.resume([revoked := request(by="campaign-workflow")])
    assert "is declared in the catalog" in str((await rig.run_of(revoked))["reason"])


def test_a_bad_export_audience_in_the_catalog_is_a_clear_error(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        "export_audiences:\n  - {list: l, data_source: d, audience_name: a, modes: [sideways], requesters: []}\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_catalog_file(catalog)
    assert "export_audiences.0.modes.0" in str(raised.value.context)
    assert "export_audiences.0.requesters" in str(raised.value.context)


async def test_an_export_audience_of_an_unknown_data_source_is_refused(rig: Rig) -> None:
    spec = CatalogExportAudience(list="vip", data_source="nowhere", audience_name="X", requesters=("api:*",))
    async with rig.campaign.pool.acquire() as conn:
        with pytest.raises(ConfigError, match="unknown data source"):
            await apply_catalog(conn, CatalogFile(export_audiences=[spec]))
        # Nothing half-written: the earlier declarations stand.
        assert await conn.fetchval("SELECT count(*) FROM export_audience_declaration") == 1
