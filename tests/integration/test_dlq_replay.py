"""``audience-bridge dlq list|show|replay`` against the real broker, Postgres and a running reconcile.

A membership batch naming an audience the catalog does not have yet is dead-lettered by reconcile; once the
audience exists, replaying it applies it (the unapplied batch). Replaying it again after a later batch removed
one of its members changes nothing (the applied batch): ``applied_batch`` makes the replay a no-op.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import pytest
import pytest_asyncio
from aiokafka import ConsumerRecord

from shared.kafka import Producer
from shared.messages import AudienceMembership
from shared.settings import KafkaSettings
from tests.fixtures.bridge_db import Campaign, add_import_audience, ecid_of
from tests.fixtures.stack import ServiceProcess, StartService, start_service  # noqa: F401
from tests.helpers import committed_offsets, eventually, read_all

pytestmark = pytest.mark.integration

AUDIENCE = "late-visitors"
CLI = [sys.executable, "-m", "services.cli"]


@dataclass
class DlqStack:
    campaign: Campaign
    env: dict[str, str]
    settings: KafkaSettings
    reconcile: ServiceProcess

    def topic(self, base: str) -> str:
        return self.settings.topic_prefix + base

    async def cli(self, *args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            *args,
            env={**os.environ, **self.env, "COLUMNS": "250"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode()

    async def send(self, batch: AudienceMembership) -> None:
        producer = Producer(self.settings, "test")
        try:
            await producer.send_model(self.topic("audience-membership"), batch)
        finally:
            await producer.stop()

    async def members(self) -> set[int]:
        rows = await self.campaign.pool.fetch(
            "SELECT recipient_id FROM list_member JOIN shared_audience USING (list_id) WHERE audience_id = $1",
            AUDIENCE,
        )
        return {r["recipient_id"] for r in rows}

    async def dead_letters(self) -> list[ConsumerRecord[bytes, bytes]]:
        return await read_all(self.settings.kafka_bootstrap_servers, self.topic("audience-membership.dlq"))

    async def replayed(self) -> list[ConsumerRecord[bytes, bytes]]:
        records = await read_all(self.settings.kafka_bootstrap_servers, self.topic("audience-membership"))
        return [r for r in records if any(name == "replay.from.offset" for name, _ in r.headers or ())]

    async def consumed(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Wait until reconcile committed past ``record`` (it handled it, whatever that did)."""
        group = f"{self.settings.topic_prefix}audience-bridge-reconcile.audience-membership"
        await eventually(
            lambda: committed_offsets(self.settings.kafka_bootstrap_servers, group),
            until=lambda offsets: offsets.get(record.partition, -1) > record.offset,
            timeout=60,
        )


@pytest_asyncio.fixture
async def dlq_stack(
    campaign: Campaign,
    start_service: StartService,  # noqa: F811
    database_url: str,
    topic_prefix: str,
    kafka_bootstrap: str,
) -> AsyncIterator[DlqStack]:
    env = {"TOPIC_PREFIX": topic_prefix, "DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    reconcile = await start_service("reconcile", env=env)
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    yield DlqStack(campaign=campaign, env=env, settings=settings, reconcile=reconcile)


def _batch(run: uuid.UUID, *, adds: list[int] = [], removes: list[int] = []) -> AudienceMembership:  # noqa: B006
    return AudienceMembership.model_validate(
        {
            "run_id": run,
            "seq": 0,
            "last": True,
            "audience_id": AUDIENCE,
            "data_source": "visitors",
            "id_type": "ecid",
            "mode": "delta",
            "adds": [ecid_of(i) for i in adds],
            "removes": [ecid_of(i) for i in removes],
        }
    )


async def test_replay_applies_an_unapplied_batch_once_and_an_applied_one_never_again(dlq_stack: DlqStack) -> None:
    stack = dlq_stack
    run = uuid.uuid4()
    await stack.send(_batch(run, adds=[1, 2, 3, 4, 5]))
    # The catalog has no such audience yet: reconcile dead-letters the batch with the reason.
    letters = await eventually(stack.dead_letters, until=lambda found: len(found) == 1, timeout=60)
    letter = f"{letters[0].partition}:{letters[0].offset}"

    # Independent reads of the DLQ: side by side (each CLI process spends seconds starting).
    (code, out), *filtered = await asyncio.gather(
        stack.cli("dlq", "list", "--topic", "audience-membership", "--since", "10m"),
        stack.cli("dlq", "list", "--run", str(run), "--error", "content"),
        stack.cli("dlq", "list", "--run", str(uuid.uuid4())),
        stack.cli("dlq", "list", "--error", "NoSuchError"),
        stack.cli("dlq", "list", "--until", "10m"),
    )
    assert code == 0, out
    assert "1 dead letters" in out
    assert letter in out
    assert "no import audience with this id" in out
    for (code, out), found in zip(filtered, (1, 0, 0, 0), strict=True):
        assert (code, f"{found} dead letters" in out) == (0, True), out

    code, out = await stack.cli("dlq", "show", "audience-membership", letter)
    assert code == 0, out
    shown = orjson.loads(out)
    assert shown["value"]["run_id"] == str(run)
    assert shown["headers"]["dlq.original.topic"] == stack.topic("audience-membership")
    assert shown["headers"]["dlq.service"] == "reconcile"

    # The catalog catches up; the operator replays what failed: the batch is applied now.
    await add_import_audience(stack.campaign.pool, AUDIENCE, "visitors", 5001)
    code, out = await stack.cli("dlq", "replay", "--topic", "audience-membership", "--by", "ops-test")
    assert code == 0, out
    assert "replayed 1 dead letters to audience-membership" in out
    await eventually(stack.members, until=lambda m: m == {1, 2, 3, 4, 5}, timeout=60)
    (replayed,) = await stack.replayed()
    provenance = {name: value.decode() for name, value in replayed.headers or ()}
    assert provenance["replay.from.topic"] == stack.topic("audience-membership.dlq")
    assert f"{provenance['replay.from.partition']}:{provenance['replay.from.offset']}" == letter
    assert provenance["replay.by"] == "ops-test"
    assert provenance["replay.original"].startswith(stack.topic("audience-membership") + "[")
    assert int(provenance["replay.at"]) > 0
    assert orjson.loads(replayed.value or b"")["run_id"] == str(run)

    # A later batch removes member 1; replaying the first batch again must not bring it back.
    await stack.send(_batch(uuid.uuid4(), removes=[1]))
    await eventually(stack.members, until=lambda m: m == {2, 3, 4, 5}, timeout=60)
    code, out = await stack.cli("dlq", "replay", "--topic", "audience-membership", "--offset", letter)
    assert code == 0, out
    second = await eventually(stack.replayed, until=lambda found: len(found) == 2, timeout=30)
    await stack.consumed(max(second, key=lambda r: r.offset))
    assert await stack.members() == {2, 3, 4, 5}
    row = await stack.campaign.pool.fetchrow("SELECT state, batches_applied, counts FROM run WHERE run_id = $1", run)
    assert row is not None
    assert (row["state"], row["batches_applied"]) == ("succeeded", 1)
    assert orjson.loads(row["counts"])["received"] == 5
    assert await stack.campaign.pool.fetchval("SELECT count(*) FROM applied_batch WHERE run_id = $1", run) == 1
    # Nothing new was dead-lettered by either replay.
    assert len(await stack.dead_letters()) == 1


async def test_replay_needs_a_filter_and_clear_input(dlq_stack: DlqStack) -> None:
    stack = dlq_stack
    cases = [
        (("dlq", "replay"), 2, "say what to replay"),
        (("dlq", "list", "--topic", "no-such-topic"), 2, "unknown topic 'no-such-topic'"),
        (("dlq", "replay", "--offset", "0:1"), 2, "exactly one --topic"),
        (("dlq", "list", "--since", "yesterday"), 2, "not a time"),
        (("dlq", "show", "audience-membership", "0:999"), 1, "no dead letter 0:999"),
    ]
    # Independent calls: side by side (each CLI process spends seconds starting).
    answers = await asyncio.gather(*(stack.cli(*args) for args, _, _ in cases))
    for (args, code, text), (got, out) in zip(cases, answers, strict=True):
        assert (got, text in out) == (code, True), (args, out)
