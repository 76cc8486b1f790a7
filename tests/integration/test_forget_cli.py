"""``audience-bridge forget`` and the consent column of ``load recipients``, as the installed CLI runs them."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

import pytest

from shared.messages import AudienceExportRequest
from tests.fixtures.bridge_db import Campaign, add_export_run, add_import_audience, ecid_of, hashed_email_of
from tests.helpers import read_topic

pytestmark = pytest.mark.integration


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *args,
        env={**os.environ, **env, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_forget_removes_everywhere_and_requests_the_exports(
    campaign: Campaign, database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    env = {"DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TOPIC_PREFIX": topic_prefix}
    await add_import_audience(campaign.pool, "seg-1", "visitors", 1)
    await add_export_run(campaign.pool, audience_id="ab-hashed", data_source="hashed-emails", mode="mirror")
    async with campaign.pool.acquire() as conn:
        for audience in ("seg-1", "ab-hashed"):
            await conn.execute(
                """INSERT INTO list_member (list_id, recipient_id)
                   SELECT list_id, r FROM shared_audience, unnest('{2,3}'::bigint[]) r WHERE audience_id = $1""",
                audience,
            )
        await conn.execute(
            "INSERT INTO exported_member (audience_id, id, run_id) VALUES ('ab-hashed', $1, $3), ('ab-hashed', $2, $3)",
            hashed_email_of(2),
            hashed_email_of(3),
            uuid.uuid4(),
        )

    # Without a terminal and without --yes, nothing is forgotten.
    code, out = await _cli(env, "forget", "2")
    assert code == 2, out
    assert await campaign.pool.fetchval("SELECT count(*) FROM recipient WHERE recipient_id = 2") == 1

    code, out = await _cli(env, "forget", "2", "999999", "--yes")
    assert code == 0, out
    assert "forgotten: 1 recipient(s) 2" in out
    assert "unknown (nothing to forget): 999999" in out
    assert "list 'List seg-1': 1 member(s) removed" in out
    assert "list 'List ab-hashed': 1 member(s) removed" in out
    assert "visitor links removed: 2" in out  # recipient 2 has two ECIDs
    assert "audience ab-hashed 'Audience ab-hashed' (hashed-emails): 1 ID(s) withdrawn; export requested" in out
    async with campaign.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM recipient WHERE recipient_id = 2") == 0
        assert await conn.fetchval("SELECT count(*) FROM visitor_link WHERE ecid = $1", ecid_of(2)) == 0
        withdrawn = await conn.fetch("SELECT audience_id, id FROM withdrawn_id")
        assert [(r["audience_id"], r["id"]) for r in withdrawn] == [("ab-hashed", hashed_email_of(2))]
        assert await conn.fetchval("SELECT deleted FROM recipient_version WHERE recipient_id = 2") is True
    requests = await read_topic(kafka_bootstrap, f"{topic_prefix}audience-export-requests", expect=1)
    assert len(requests) == 1
    request = AudienceExportRequest.model_validate_json(requests[0].value or b"")
    assert (request.audience_name, request.data_source, request.mode) == (
        "Audience ab-hashed",
        "hashed-emails",
        "mirror",
    )


async def test_load_reads_consent_and_keeps_it_when_the_column_is_absent(
    campaign: Campaign, database_url: str, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": database_url}
    first = tmp_path / "consent.csv"
    first.write_text("recipient_id,email,opted_out\n1,a@example.com,true\n2,b@example.com,\n3,c@example.com,maybe\n")
    code, out = await _cli(env, "load", "recipients", str(first))
    assert code == 0, out
    assert "3 rows read, 2 loaded, 1 skipped" in out
    without = tmp_path / "plain.csv"
    without.write_text("recipient_id,email\n1,new@example.com\n")
    code, out = await _cli(env, "load", "recipients", str(without))
    assert code == 0, out
    rows = await campaign.pool.fetch("SELECT recipient_id, opted_out FROM recipient WHERE recipient_id <= 3")
    assert {r["recipient_id"]: r["opted_out"] for r in rows} == {1: True, 2: False, 3: False}
