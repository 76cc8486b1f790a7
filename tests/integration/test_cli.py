"""The operators' CLI, run as the installed ``audience-bridge`` command against real Postgres and Kafka."""

from __future__ import annotations

import asyncio
import getpass
import os
import pty
import sys
import uuid
from pathlib import Path

import orjson
import pytest

from services.reconcile.importing import Importer, ImportGuards
from shared.kafka import Producer
from shared.kafka.admin import ensure_topics
from shared.messages import AudienceExportRequest, AudienceMembership
from shared.metrics import RuntimeMetrics
from shared.runs.reporter import RunReporter
from shared.settings import KafkaSettings
from tests.fixtures.bridge_db import Campaign, add_import_audience, ecid_of
from tests.helpers import read_topic

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "services.cli"]
# What the CLI says when its status event could not be sent (after KAFKA_SEND_TIMEOUT_S: a missing topic).
NOT_ANNOUNCED = "status event was not sent"


async def _status_topic(kafka_bootstrap: str, topic_prefix: str) -> str:
    """The test's audience-sync-status, made before a command announces on it (else each send waits its timeout)."""
    topic = f"{topic_prefix}audience-sync-status"
    await ensure_topics(KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap), [topic])
    return topic


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
    status_topic = await _status_topic(kafka_bootstrap, topic_prefix)
    env = {"DATABASE_URL": database_url, "TOPIC_PREFIX": topic_prefix, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
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
    code, out = await _cli(env, "release", str(shrink.run_id), "--by", "ops", "--yes")
    assert code == 0, out
    assert NOT_ANNOUNCED not in out
    # What it would do, then what it did.
    assert "releasing it adds 0 and removes 20 members: the list goes from 21 to 1 members" in out
    assert "released: 0 added, 20 removed" in out
    rows = await campaign.pool.fetch(
        "SELECT recipient_id FROM list_member JOIN shared_audience USING (list_id) WHERE audience_id = 'seg-r'"
    )
    assert {r["recipient_id"] for r in rows} == {1}
    assert await campaign.pool.fetchval("SELECT released_by FROM run WHERE run_id = $1", shrink.run_id) == "ops"
    assert await campaign.pool.fetchval("SELECT count(*) FROM import_stage_id WHERE run_id = $1", shrink.run_id) == 0
    # The release is announced on audience-sync-status.
    [status] = await read_topic(kafka_bootstrap, status_topic, expect=1)
    assert (orjson.loads(status.value)["run_id"], orjson.loads(status.value)["state"]) == (
        str(shrink.run_id),
        "succeeded",
    )
    code, out = await _cli({"DATABASE_URL": database_url}, "release", str(shrink.run_id), "--yes")
    assert code == 2
    assert "only a blocked run" in out
    await producer.stop()


async def test_rematch_honours_import_opted_out(campaign: Campaign, database_url: str) -> None:
    # Recipient 150 opted out; its ECID, unknown at import, is then linked to it by a click.
    await add_import_audience(campaign.pool, "seg-c", "visitors", 5101)
    await campaign.pool.execute("UPDATE recipient SET opted_out = true WHERE recipient_id = 150")
    list_id = await campaign.pool.fetchval("SELECT list_id FROM shared_audience WHERE audience_id = 'seg-c'")
    run_id = uuid.uuid4()
    late = "7" * 38
    await campaign.pool.execute(
        "INSERT INTO unmatched_id (audience_id, id_type, id, reason, run_id) "
        "VALUES ('seg-c', 'ecid', $1, 'unknown_ecid', $2)",
        late,
        run_id,
    )
    await campaign.pool.execute("INSERT INTO visitor_link (ecid, recipient_id) VALUES ($1, 150)", late)
    members = "SELECT count(*) FROM list_member WHERE list_id = $1 AND recipient_id = 150"
    # IMPORT_OPTED_OUT=false: the ID is matched (it is no longer unknown) but the recipient stays out.
    code, out = await _cli({"DATABASE_URL": database_url, "IMPORT_OPTED_OUT": "false"}, "rematch")
    assert code == 0, out
    assert "1 IDs matched, 0 list members added" in out
    assert await campaign.pool.fetchval(members, list_id) == 0
    # The default admits them: the same ID again, now the recipient joins.
    await campaign.pool.execute(
        "INSERT INTO unmatched_id (audience_id, id_type, id, reason, run_id) "
        "VALUES ('seg-c', 'ecid', $1, 'unknown_ecid', $2)",
        late,
        run_id,
    )
    code, out = await _cli({"DATABASE_URL": database_url}, "rematch")
    assert code == 0, out
    assert "1 IDs matched, 1 list members added" in out
    assert await campaign.pool.fetchval(members, list_id) == 1
    # A value that is not a boolean is a clear error, not a silent default.
    code, out = await _cli({"DATABASE_URL": database_url, "IMPORT_OPTED_OUT": "maybe"}, "rematch")
    assert code == 2
    assert "IMPORT_OPTED_OUT" in out


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
    # Who asks is the OS user, whatever the caller types: --requested-by is recorded after it.
    assert (request.list_id, request.audience_name, request.mode, request.requested_by, request.requested_via) == (
        "VIP",
        "VIP buyers",
        "mirror",
        f"{getpass.getuser()} for workflow-12",
        "cli",
    )
    assert str(request.request_id) in out
    code, out = await _cli(env, "export", "--list", "VIP", "--audience", "x", "--data-source", "d", "--mode", "bogus")
    assert code == 2
    assert out.startswith("error: mode: Input should be 'append', 'mirror' or 'full'")


async def test_retry_of_an_unknown_run_is_a_clear_error(campaign: Campaign, database_url: str) -> None:
    code, out = await _cli({"DATABASE_URL": database_url}, "retry", str(uuid.uuid4()))
    assert code == 2
    assert out.startswith("error:")


async def _cli_at_a_terminal(env: dict[str, str], answer: bytes, *args: str) -> tuple[int, str]:
    """The CLI with its input on a terminal (a pseudo-terminal) on which the operator types ``answer``."""
    controller, terminal = pty.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            *args,
            env={**os.environ, **env, "COLUMNS": "200"},
            stdin=terminal,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        os.write(controller, answer)  # typed ahead: the terminal keeps it until the prompt reads it
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        os.close(terminal)
        os.close(controller)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def _held_back_run(campaign: Campaign, kafka_bootstrap: str, topic_prefix: str, audience: str) -> uuid.UUID:
    """A list of recipients 1..20, then a snapshot of recipient 1 alone: held back (it would remove 19 of 20)."""
    await add_import_audience(campaign.pool, audience, "visitors", 5300)
    await _status_topic(kafka_bootstrap, topic_prefix)
    producer = Producer(KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap), "test", RuntimeMetrics("t"))
    importer = Importer(
        campaign.pool,
        RunReporter(producer, service="t", topic_prefix=topic_prefix),
        ImportGuards(max_removal_share=0.5, min_list_size=10),
    )
    try:
        await importer.apply(_full_batch(audience, [ecid_of(i) for i in range(1, 21)]))
        held = await importer.apply(_full_batch(audience, [ecid_of(1)]))
    finally:
        await producer.stop()
    assert held is not None
    assert held.state == "blocked"
    return held.run_id


def _full_batch(audience: str, adds: list[str], mode: str = "full") -> AudienceMembership:
    return AudienceMembership.model_validate(
        {
            "run_id": uuid.uuid4(),
            "seq": 0,
            "last": True,
            "audience_id": audience,
            "data_source": "visitors",
            "id_type": "ecid",
            "mode": mode,
            "adds": adds,
        }
    )


async def _list_and_run(campaign: Campaign, audience: str, run_id: uuid.UUID) -> tuple[set[int], str]:
    rows = await campaign.pool.fetch(
        "SELECT recipient_id FROM list_member JOIN shared_audience USING (list_id) WHERE audience_id = $1", audience
    )
    state = await campaign.pool.fetchval("SELECT state FROM run WHERE run_id = $1", run_id)
    return {r["recipient_id"] for r in rows}, state


async def test_release_shows_its_plan_and_asks_first(
    campaign: Campaign, database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    run_id = await _held_back_run(campaign, kafka_bootstrap, topic_prefix, "seg-ask")
    env = {"DATABASE_URL": database_url, "TOPIC_PREFIX": topic_prefix, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    untouched = (set(range(1, 21)), "blocked")
    plan = [
        f"import run {run_id}: audience seg-ask, list 'List seg-ask'",
        "held back: full snapshot would remove 19 of 20 list members (more than 50%): held back (release it with "
        "`audience-bridge release`)",
        "matched again now: 1 of 1 IDs match a recipient",
        "releasing it adds 0 and removes 19 members: the list goes from 20 to 1 members",
    ]

    # A script (no terminal) that did not say --yes: the plan, then a refusal saying why; nothing changes.
    code, out = await _cli(env, "release", str(run_id))
    assert code == 2, out
    assert out.splitlines()[: len(plan)] == plan
    assert "error: not released: no terminal to confirm on (give --yes to release without asking)" in out
    assert await _list_and_run(campaign, "seg-ask", run_id) == untouched

    # An operator at a terminal who answers no.
    code, out = await _cli_at_a_terminal(env, b"n\n", "release", str(run_id))
    assert code == 1, out
    assert out.splitlines()[: len(plan)] == plan
    assert "release it? [y/N]: not released" in out
    assert await _list_and_run(campaign, "seg-ask", run_id) == untouched

    # ... and one who answers yes.
    code, out = await _cli_at_a_terminal(env, b"y\n", "release", str(run_id), "--by", "ops")
    assert code == 0, out
    assert f"run {run_id} released: 0 added, 19 removed" in out
    assert NOT_ANNOUNCED not in out
    assert await _list_and_run(campaign, "seg-ask", run_id) == ({1}, "succeeded")


async def test_release_of_a_run_older_than_the_last_applied_one_is_refused(
    campaign: Campaign, database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    run_id = await _held_back_run(campaign, kafka_bootstrap, topic_prefix, "seg-stale")
    producer = Producer(KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap), "test", RuntimeMetrics("t"))
    importer = Importer(campaign.pool, RunReporter(producer, service="t", topic_prefix=topic_prefix), ImportGuards())
    try:
        newer = await importer.apply(_full_batch("seg-stale", [ecid_of(21)], mode="delta"))
    finally:
        await producer.stop()
    assert newer is not None
    assert newer.state == "succeeded"
    code, out = await _cli({"DATABASE_URL": database_url}, "release", str(run_id), "--yes")
    assert code == 2, out
    assert out.startswith("error: a newer run of this audience was applied since: releasing this older snapshot")
    assert f"newer_run='{newer.run_id}'" in " ".join(out.split())
    assert await _list_and_run(campaign, "seg-stale", run_id) == (set(range(1, 22)), "blocked")
