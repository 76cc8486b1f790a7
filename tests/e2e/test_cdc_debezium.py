"""Change data capture through the real thing: SQL in a campaign database reaches the bridge through Debezium.

deploy/local/connect.sh (what `make cdc` runs) starts a campaign Postgres of its own with ``wal_level = logical``
and Kafka Connect standalone with Debezium's Postgres connector, whose change events go through the real broker
to reconcile's ``recipient-changes`` consumer. Inserts, updates and deletes made with SQL end in the bridge's
``recipient`` table and list membership; the captured events replayed out of order and twice change nothing; a
malformed change goes to the DLQ with its reason while the changes around it apply; a change made while Connect
is stopped arrives when it is back. Both forms of the JSON converter's output, with the schema wrapper and without.

Skipped only when Java is missing, or Maven is missing and the jars are not in the cache yet (``make test``
fetches them through ``make tools``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from shared.kafka.dlq_reader import letter_of
from shared.migrations import migrate
from shared.settings import REPO_ROOT
from tests.fixtures.stack import StartService, free_port, start_service  # noqa: F401
from tests.helpers import committed_offsets, eventually, read_topic

# A Postgres cluster and a Kafka Connect worker of its own, started twice: about a minute a case on two idle
# cores, more on busy ones.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CONNECT_SH = REPO_ROOT / "deploy" / "local" / "connect.sh"
LONG_NAME = "x" * 1500  # over the bridge's 1,000 characters for a campaign text field


def _jars_cached() -> bool:
    """Whether connect.sh fetched its jars into the cache (as it finds it: AB_CACHE_DIR, XDG_CACHE_HOME, ~/.cache)."""
    cache = os.environ.get("AB_CACHE_DIR")
    root = (
        Path(cache) if cache else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "audience-bridge"
    )
    return any(root.glob("connect-*/libs/.complete")) and any(root.glob("debezium-postgres-*/plugins/.complete"))


def _missing_tools() -> str | None:
    if shutil.which("java") is None:
        return "Java is not installed (Kafka Connect runs on it)"
    if shutil.which("mvn") is None and not _jars_cached():
        return "Maven is not installed and Kafka Connect's jars are not in the cache"
    return None


async def connect_sh(env: dict[str, str], *args: str, timeout: float = 240) -> str:
    """Run deploy/local/connect.sh; its output, or a failure showing it."""
    process = await asyncio.create_subprocess_exec(
        str(CONNECT_SH),
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout)
    text = out.decode(errors="replace")
    assert process.returncode == 0, f"connect.sh {' '.join(args)} exited {process.returncode}:\n{text}"
    return text


@dataclass
class CdcStack:
    env: dict[str, str]
    campaign_dsn: str
    bridge: asyncpg.Pool
    bootstrap: str
    topic: str
    group: str
    list_id: int

    async def start_connect(self) -> str:
        """connect.sh start, its REST port picked just before (on a busy machine a port picked long before may be
        taken by then)."""
        self.env["CONNECT_REST_PORT"] = str(free_port())
        return await connect_sh(self.env, "start")

    async def sql(self, *statements: str) -> None:
        """Statements in the campaign database, each its own transaction (each its own change events)."""
        conn = await asyncpg.connect(self.campaign_dsn)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    async def state(self) -> dict[str, Any]:
        """What the bridge holds for the campaign's recipients (ids from 1000): rows, keys, list members."""
        rows = await self.bridge.fetch(
            """SELECT recipient_id, email, crm_id, first_name, opted_out, key_email_sha256 FROM recipient
                WHERE recipient_id >= 1000 ORDER BY recipient_id"""
        )
        members = await self.bridge.fetch(
            "SELECT recipient_id FROM list_member WHERE list_id = $1 ORDER BY recipient_id", self.list_id
        )
        versions = await self.bridge.fetch(
            "SELECT recipient_id, position, deleted FROM recipient_version ORDER BY recipient_id"
        )
        return {
            "recipients": {r["recipient_id"]: dict(r) for r in rows},
            "members": [r["recipient_id"] for r in members],
            "versions": [tuple(r) for r in versions],
        }

    async def wait_recipients(self, expected: dict[int, dict[str, Any]]) -> dict[str, Any]:
        def matches(state: dict[str, Any]) -> bool:
            got = state["recipients"]
            return set(got) == set(expected) and all(
                got[r][field] == value for r, fields in expected.items() for field, value in fields.items()
            )

        return await eventually(self.state, until=matches, timeout=60, interval=0.3)

    async def end_offsets(self) -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        await consumer.start()
        try:
            # consumer.topics() would fetch the metadata without keeping it (as shared/kafka/dlq_reader.py says).
            cluster = await consumer._client.fetch_all_metadata()
            partitions = [TopicPartition(self.topic, p) for p in cluster.partitions_for_topic(self.topic) or ()]
            assert partitions, f"{self.topic} has no partitions"
            return {tp.partition: offset for tp, offset in (await consumer.end_offsets(partitions)).items()}
        finally:
            await consumer.stop()

    async def topic_size(self) -> int:
        return sum((await self.end_offsets()).values())

    async def wait_consumed(self) -> None:
        """Until reconcile has committed every record the topic holds now."""
        wanted = {p: o for p, o in (await self.end_offsets()).items() if o > 0}
        await eventually(
            lambda: committed_offsets(self.bootstrap, self.group),
            until=lambda got: all(got.get(p, 0) >= o for p, o in wanted.items()),
            timeout=60,
            interval=0.3,
        )


@pytest_asyncio.fixture(params=["true", "false"], ids=["schema-wrapper", "envelope-only"])
async def cdc(
    request: pytest.FixtureRequest,
    start_service: StartService,  # noqa: F811
    database_url: str,
    topic_prefix: str,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> AsyncIterator[CdcStack]:
    missing = _missing_tools()
    if missing:
        pytest.skip(missing)
    pg_port = free_port()
    env = {
        "AB_VAR_DIR": str(tmp_path / "cdc-var"),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "TOPIC_PREFIX": topic_prefix,
        "CDC_PG_PORT": str(pg_port),
        "CDC_SCHEMAS_ENABLE": request.param,  # the JSON converter's {"schema", "payload"} wrapper, or not
    }
    await connect_sh(env, "fetch", timeout=600)
    bridge = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    assert bridge is not None
    async with bridge.acquire() as conn:
        await migrate(conn)
    list_id = await bridge.fetchval("INSERT INTO list (name) VALUES ('CDC list') RETURNING list_id")
    try:
        await connect_sh(env, "start-db")
        await start_service(
            "reconcile",
            env={
                "TOPIC_PREFIX": topic_prefix,
                "DATABASE_URL": database_url,
                "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            },
        )
        yield CdcStack(
            env=env,
            campaign_dsn=f"postgresql://campaign:campaign@127.0.0.1:{pg_port}/campaign",
            bridge=bridge,
            bootstrap=kafka_bootstrap,
            topic=f"{topic_prefix}recipient-changes",
            group=f"{topic_prefix}audience-bridge-reconcile.recipient-changes",
            list_id=list_id,
        )
    finally:
        await connect_sh(env, "clean")
        await bridge.close()


def _envelope(value: dict[str, Any]) -> dict[str, Any]:
    """Debezium's change event, inside the converter's schema wrapper or not."""
    event: dict[str, Any] = value["payload"] if "schema" in value else value
    assert set(event) >= {"before", "after", "op", "source"}, event
    return event


def _sha256(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


async def _changes_flow_in(cdc: CdcStack) -> dict[str, Any]:
    """A snapshot, then inserts, updates and deletes made with SQL: the bridge follows."""
    # Rows already there when the connector starts arrive as its snapshot (op "r").
    await cdc.sql(
        "INSERT INTO recipient (recipient_id, email, crm_id) VALUES (1001, 'Ann@Example.com', 'CRM1001')",
        "INSERT INTO recipient (recipient_id, email, crm_id) VALUES (1002, 'bob@example.com', 'CRM1002')",
    )
    started = await cdc.start_connect()
    assert f"-> {cdc.topic}" in started
    await cdc.wait_recipients({1001: {"email": "Ann@Example.com"}, 1002: {"crm_id": "CRM1002"}})
    await cdc.bridge.execute(
        "INSERT INTO list_member (list_id, recipient_id) VALUES ($1, 1001), ($1, 1002)", cdc.list_id
    )
    await cdc.sql(
        "INSERT INTO recipient (recipient_id, email, crm_id) VALUES (1003, 'cid@example.com', 'CRM1003')",
        "INSERT INTO recipient (recipient_id, email) VALUES (1004, 'dee@example.com'), (1005, 'eve@example.com')",
        "UPDATE recipient SET email = 'ann.new@example.com', updated_at = now() WHERE recipient_id = 1001",
        "DELETE FROM recipient WHERE recipient_id = 1002",
        "UPDATE recipient SET opted_out = true WHERE recipient_id = 1003",
        "DELETE FROM recipient WHERE recipient_id = 1005",
    )
    await cdc.wait_recipients(
        {
            1001: {"email": "ann.new@example.com", "key_email_sha256": _sha256("ann.new@example.com")},
            1003: {"opted_out": True, "crm_id": "CRM1003"},
            1004: {"email": "dee@example.com", "opted_out": False},
        }
    )
    # The deleted recipient left the list; the one whose e-mail changed is still in it, under its new key.
    await eventually(cdc.state, until=lambda s: s["members"] == [1001], timeout=30)
    return await cdc.state()


async def _produce(cdc: CdcStack, records: list[tuple[bytes | None, bytes, int | None]]) -> None:
    """(key, value, partition) records onto the topic, in this order, as a producer other than Connect would."""
    producer = AIOKafkaProducer(bootstrap_servers=cdc.bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for key, value, partition in records:
            await producer.send_and_wait(cdc.topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


async def _captured_events(cdc: CdcStack) -> list[ConsumerRecord[bytes, bytes]]:
    """Debezium's records so far: 2 snapshot reads, 3 inserts, 2 updates, 2 deletes."""
    captured = await read_topic(cdc.bootstrap, cdc.topic, expect=9, timeout=30)
    values = [orjson.loads(r.value) for r in captured]
    wrapped = cdc.env["CDC_SCHEMAS_ENABLE"] == "true"
    assert all(("schema" in v) == wrapped for v in values), values[0]
    events = [_envelope(v) for v in values]
    assert sorted(e["op"] for e in events) == ["c"] * 3 + ["d"] * 2 + ["r"] * 2 + ["u"] * 2
    assert all(e["source"]["connector"] == "postgresql" and e["source"]["lsn"] > 0 for e in events)
    deleted = next(e for e in events if e["op"] == "d" and e["before"]["recipient_id"] == 1002)
    assert deleted["after"] is None
    assert deleted["before"]["email"] == "bob@example.com"  # the whole row: REPLICA IDENTITY FULL
    return captured


async def _malformed_changes_go_to_the_dlq(cdc: CdcStack, captured: list[ConsumerRecord[bytes, bytes]]) -> None:
    """One change made with SQL that the bridge refuses (a name over its 1,000 characters), and a captured event
    altered by hand (its row without the id): both dead-lettered with their reason; the changes after them apply
    (the update after the refused one carries the whole row again, with a name the bridge takes)."""
    await cdc.sql(f"UPDATE recipient SET first_name = '{LONG_NAME}' WHERE recipient_id = 1004")
    broken = orjson.loads(captured[0].value)
    row = _envelope(broken)["after"] or _envelope(broken)["before"]
    row.pop("recipient_id")
    await _produce(cdc, [(captured[0].key, orjson.dumps(broken), captured[0].partition)])
    await cdc.sql(
        "INSERT INTO recipient (recipient_id, email) VALUES (1006, 'fay@example.com')",
        "UPDATE recipient SET crm_id = 'CRM1004-B', first_name = 'Dee' WHERE recipient_id = 1004",
    )
    await cdc.wait_recipients(
        {
            1001: {"email": "ann.new@example.com"},
            1003: {"opted_out": True},
            1004: {"crm_id": "CRM1004-B", "first_name": "Dee"},
            1006: {"email": "fay@example.com"},
        }
    )
    letters = [letter_of(r) for r in await read_topic(cdc.bootstrap, f"{cdc.topic}.dlq", expect=2, timeout=30)]
    reasons = sorted(letter.reason for letter in letters)
    assert len(letters) == 2, reasons
    assert any("1000" in reason and "first_name" in reason for reason in reasons), reasons
    assert any("recipient id" in reason for reason in reasons), reasons
    assert {letter.original_topic for letter in letters} == {cdc.topic}


async def test_sql_changes_reach_the_bridge_through_debezium(cdc: CdcStack) -> None:
    before_replay = await _changes_flow_in(cdc)
    captured = await _captured_events(cdc)

    # Debezium's own records again, newest first, twice over, each to its partition: every one is stale, so
    # nothing changes (no old e-mail comes back, no deleted recipient returns).
    newest_first = [(r.key, r.value, r.partition) for r in reversed(captured)]
    await _produce(cdc, newest_first * 2)
    await cdc.wait_consumed()
    assert await cdc.state() == before_replay

    await _malformed_changes_go_to_the_dlq(cdc, captured)
    await _connect_resumes_where_it_stopped(cdc)


async def _connect_resumes_where_it_stopped(cdc: CdcStack) -> None:
    """A change made while Connect is down arrives when it is back (the slot kept it, the offsets say where to
    resume), and no second snapshot comes. (Connect delivers at least once: what it may send again is stale.)"""
    before = await cdc.topic_size()
    await connect_sh(cdc.env, "stop")
    await connect_sh(cdc.env, "start-db")
    await cdc.sql("UPDATE recipient SET email = 'ann.back@example.com' WHERE recipient_id = 1001")
    await cdc.start_connect()
    await cdc.wait_recipients(
        {
            1001: {"email": "ann.back@example.com", "key_email_sha256": _sha256("ann.back@example.com")},
            1003: {"opted_out": True},
            1004: {"first_name": "Dee"},
            1006: {"email": "fay@example.com"},
        }
    )
    await cdc.wait_consumed()
    size = await cdc.topic_size()
    assert size > before
    records = await read_topic(cdc.bootstrap, cdc.topic, expect=size, timeout=30)
    # What Connect wrote (its records carry Debezium's context headers; this test's replays carry none).
    events = [
        _envelope(orjson.loads(r.value)) for r in records if any(k.startswith("__debezium") for k, _ in r.headers)
    ]
    assert sum(e["op"] == "r" for e in events) == 2, "a second snapshot"
    assert any(e["op"] == "u" and e["after"]["email"] == "ann.back@example.com" for e in events)
