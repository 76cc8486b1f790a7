"""The operators' CLI, run as the installed ``audience-bridge`` command against real Postgres and Kafka."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

import orjson
import pytest

from services.reconcile.importing import Importer, ImportGuards
from shared.kafka import Producer
from shared.messages import AudienceExportRequest, AudienceMembership
from shared.metrics import RuntimeMetrics
from shared.runs.reporter import RunReporter
from shared.settings import KafkaSettings
from tests.fixtures.bridge_db import Campaign, add_import_audience, ecid_of
from tests.helpers import read_topic

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "services.cli"]


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        env={**os.environ, **env, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_loads_count_what_they_skip(campaign: Campaign, database_url: str, tmp_path: Path) -> None:
    recipients = tmp_path / "recipients.csv"
    recipients.write_text("recipient_id,email,crm_id\n1001,a@example.com,C1\n1002,b@example.com,C2\nnot-a-number,x,y\n")
    code, out = await _cli({"DATABASE_URL": database_url}, "load", "recipients", str(recipients))
    assert code == 0, out
    assert "3 rows read, 2 loaded, 1 skipped" in out
    links = tmp_path / "links.csv"
    links.write_text(f"ecid,recipient_id\n{ecid_of(1001)},1001\n{'1' * 37},1002\n{ecid_of(5)},999999\n")
    code, out = await _cli({"DATABASE_URL": database_url}, "load", "visitor-links", str(links))
    assert code == 0, out
    assert "3 rows read, 1 loaded, 2 skipped" in out
    assert await campaign.pool.fetchval("SELECT recipient_id FROM visitor_link WHERE ecid = $1", ecid_of(1001)) == 1001


async def test_bad_csv_header_is_a_clear_error(campaign: Campaign, database_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,mail\n1,a@b\n")
    code, out = await _cli({"DATABASE_URL": database_url}, "load", "recipients", str(bad))
    assert code == 2
    assert "recipient_id" in out


async def test_datasource_and_audience_commands(campaign: Campaign, database_url: str) -> None:
    env = {"DATABASE_URL": database_url}
    code, out = await _cli(
        env, "datasource", "add", "partner", "--dpid", "4242", "--id-type", "ecid", "--export-control", "PII"
    )
    assert code == 0, out
    code, out = await _cli(env, "datasource", "list")
    assert "partner" in out
    assert "PII" in out
    code, out = await _cli(
        env, "audience", "add-import", "seg-77", "--segment", "77", "--data-source", "visitors", "--list", "Seg 77"
    )
    assert code == 0, out
    code, out = await _cli(env, "audience", "list")
    assert "seg-77" in out
    code, out = await _cli(env, "datasource", "add", "broken", "--dpid", "1", "--id-type", "declared")
    assert code == 2
    assert out.startswith("error:")
    assert "reconciliation_key" in out


async def test_rematch_and_release(
    campaign: Campaign, database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    await add_import_audience(campaign.pool, "seg-r", "visitors", 5100)
    producer = Producer(KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap), "test", RuntimeMetrics("t"))
    importer = Importer(
        campaign.pool,
        RunReporter(producer, service="t", topic_prefix=topic_prefix),
        ImportGuards(max_removal_share=0.5, min_list_size=10),
    )
    late = "5" * 38
    seed = AudienceMembership.model_validate(
        {
            "run_id": uuid.uuid4(),
            "seq": 0,
            "last": True,
            "audience_id": "seg-r",
            "data_source": "visitors",
            "id_type": "ecid",
            "mode": "full",
            "adds": [ecid_of(i) for i in range(1, 21)] + [late],
        }
    )
    await importer.apply(seed)
    # The unknown ECID's recipient clicks a tracked link later: rematch puts them on the list.
    await campaign.pool.execute("INSERT INTO visitor_link (ecid, recipient_id) VALUES ($1, 150)", late)
    code, out = await _cli({"DATABASE_URL": database_url}, "rematch")
    assert code == 0, out
    assert "1 IDs matched, 1 list members added" in out
    assert await campaign.pool.fetchval("SELECT count(*) FROM unmatched_id WHERE audience_id = 'seg-r'") == 0

    shrink = AudienceMembership.model_validate({**seed.model_dump(), "run_id": uuid.uuid4(), "adds": [ecid_of(1)]})
    outcome = await importer.apply(shrink)
    assert outcome is not None
    assert outcome.state == "blocked"
    # Held back with its IDs staged; released, it is matched again and its staged IDs go.
    assert await campaign.pool.fetchval("SELECT count(*) FROM import_stage_id WHERE run_id = $1", shrink.run_id) == 1
    code, out = await _cli({"DATABASE_URL": database_url}, "release", str(shrink.run_id), "--by", "ops")
    assert code == 0, out
    rows = await campaign.pool.fetch(
        "SELECT recipient_id FROM list_member JOIN shared_audience USING (list_id) WHERE audience_id = 'seg-r'"
    )
    assert {r["recipient_id"] for r in rows} == {1}
    assert await campaign.pool.fetchval("SELECT released_by FROM run WHERE run_id = $1", shrink.run_id) == "ops"
    assert await campaign.pool.fetchval("SELECT count(*) FROM import_stage_id WHERE run_id = $1", shrink.run_id) == 0
    code, out = await _cli({"DATABASE_URL": database_url}, "release", str(shrink.run_id))
    assert code == 2
    assert "only a blocked run" in out
    await producer.stop()


async def test_export_puts_a_request_on_the_topic(database_url: str, kafka_bootstrap: str, topic_prefix: str) -> None:
    env = {"DATABASE_URL": database_url, "TOPIC_PREFIX": topic_prefix, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    code, out = await _cli(
        env,
        "export",
        "--list",
        "VIP",
        "--audience",
        "VIP buyers",
        "--data-source",
        "hashed-emails",
        "--mode",
        "mirror",
        "--requested-by",
        "workflow-12",
    )
    assert code == 0, out
    [record] = await read_topic(kafka_bootstrap, f"{topic_prefix}audience-export-requests", expect=1)
    request = AudienceExportRequest.model_validate(orjson.loads(record.value))
    assert (request.list_id, request.audience_name, request.mode, request.requested_by) == (
        "VIP",
        "VIP buyers",
        "mirror",
        "workflow-12",
    )
    assert str(request.request_id) in out
    code, out = await _cli(env, "export", "--list", "VIP", "--audience", "x", "--data-source", "d", "--mode", "bogus")
    assert code == 2
    assert out.startswith("error: mode: Input should be 'append', 'mirror' or 'full'")


async def test_retry_of_an_unknown_run_is_a_clear_error(campaign: Campaign, database_url: str) -> None:
    code, out = await _cli({"DATABASE_URL": database_url}, "retry", str(uuid.uuid4()))
    assert code == 2
    assert out.startswith("error:")
