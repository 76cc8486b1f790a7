"""Export authorisation through the running services: reconcile as a process with its catalog file and
``EXPORT_ALLOW_UNDECLARED`` off (the default), requests put on Kafka as a workflow would and by the CLI.

An undeclared export is refused with the reason (a failed run and its status event); a declared one goes
ahead; who asked is on the run, on the status page's API and in ``audience-bridge runs``.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
from pathlib import Path

import orjson
import pytest

from services.reconcile.catalog import ensure_list
from shared.kafka import OutgoingMessage, Producer, ensure_topics
from shared.messages import AudienceExportRequest, AudienceSyncStatus
from shared.metrics import RuntimeMetrics
from shared.runs import store
from shared.runs.outcome import RunOutcome
from shared.settings import KafkaSettings
from tests.fixtures.bridge_db import Campaign
from tests.fixtures.stack import StartService, start_service  # noqa: F401
from tests.helpers import eventually, read_topic

pytestmark = pytest.mark.e2e

CLI = [sys.executable, "-m", "services.cli"]

CATALOG = """
export_audiences:
  - {list: vip, data_source: hashed-emails, audience_name: VIP, modes: [append, mirror],
     requesters: ["kafka:campaign-workflow"]}
  - {list: vip, data_source: hashed-emails, audience_name: VIP desk, requesters: ["cli:*"]}
"""


async def _ended(campaign: Campaign, request: AudienceExportRequest) -> RunOutcome:
    async def latest() -> RunOutcome | None:
        async with campaign.pool.acquire() as conn:
            return await store.latest_of_request(conn, request.request_id)

    run = await eventually(latest, until=lambda r: r is not None and r.state in ("progress", "failed"), timeout=60)
    assert run is not None
    return run


async def test_undeclared_exports_are_refused_and_who_asked_is_recorded(
    campaign: Campaign,
    start_service: StartService,  # noqa: F811
    database_url: str,
    topic_prefix: str,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    async with campaign.pool.acquire() as conn:
        list_id = await ensure_list(conn, "vip")
        await conn.executemany(
            "INSERT INTO list_member (list_id, recipient_id) VALUES ($1, $2)", [(list_id, r) for r in range(1, 11)]
        )
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG)
    env = {
        "TOPIC_PREFIX": topic_prefix,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "CATALOG_FILE": str(catalog),
        "EXPORT_ALLOW_UNDECLARED": "false",  # the default outside the test fixtures
    }
    reconcile = await start_service("reconcile", env=env)
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    topic = f"{topic_prefix}audience-export-requests"
    await ensure_topics(settings, [topic])
    producer = Producer(settings, "test", RuntimeMetrics("test"))
    await producer.start()
    declared = AudienceExportRequest(
        list_id="vip", audience_name="VIP", data_source="hashed-emails", requested_by="campaign-workflow"
    )
    undeclared = AudienceExportRequest(
        list_id="vip", audience_name="Everyone", data_source="hashed-emails", requested_by="campaign-workflow"
    )
    try:
        await producer.send([OutgoingMessage.of(topic, r) for r in (declared, undeclared)])
    finally:
        await producer.stop()

    refused = await _ended(campaign, undeclared)
    assert refused.state == "failed"
    assert "no export audience 'Everyone' of data source 'hashed-emails' is declared" in (refused.reason or "")
    assert (await _ended(campaign, declared)).state == "progress"  # emitted: publish takes it from here

    records = await read_topic(kafka_bootstrap, f"{topic_prefix}audience-sync-status", expect=3)
    statuses = [AudienceSyncStatus.model_validate_json(r.value or b"") for r in records]
    assert any(s.state == "failed" and "is declared in the catalog" in (s.reason or "") for s in statuses)

    status, body = await reconcile.get("/api/runs")
    assert status == 200
    runs = orjson.loads(body)
    shown = runs["runs"] if isinstance(runs, dict) else runs
    assert {(r["requested_via"], r["requested_by"], r["state"]) for r in shown} == {
        ("kafka", "campaign-workflow", "failed"),
        ("kafka", "campaign-workflow", "progress"),
    }

    # The CLI asks as the OS user; "cli:*" may ask for "VIP desk", and `runs` shows who asked each.
    cli_env = {**os.environ, **env, "COLUMNS": "250"}
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "export",
        "--list",
        "vip",
        "--audience",
        "VIP desk",
        "--data-source",
        "hashed-emails",
        env=cli_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()

    async def cli_runs() -> str:
        proc = await asyncio.create_subprocess_exec(
            *CLI, "runs", env=cli_env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        return out.decode()

    table = await eventually(cli_runs, until=lambda t: f"cli:{getpass.getuser()}" in t, timeout=60)
    assert "kafka:campaign-workflow" in table
