"""The campaign side streaming in, through the running services: reconcile and publish as processes, ecsim as
the platform (processing inbound files), recipient changes and clicks produced to the real broker.

* a click for an unmatched ECID puts its recipient in the list within seconds;
* an e-mail change moves the recipient's declared key on the platform (the old hash leaves, the new joins);
* a delete and an opt-out leave every list and, on the next mirror export, the platform (the opt-out counted);
* ``audience-bridge forget`` removes a person's IDs from the platform at once, even from an append audience;
* a malformed change goes to the DLQ with its reason while the rest applies.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import orjson
import pytest
import pytest_asyncio

from services.reconcile.catalog import ensure_list
from services.reconcile.exporting import export_audience_id
from shared.kafka import OutgoingMessage, Producer
from shared.messages import AudienceExportRequest, AudienceMembership, Message, RecipientChange, VisitorLink
from shared.runs import store
from shared.runs.outcome import RunOutcome
from shared.settings import REPO_ROOT
from tests.fixtures.bridge_db import add_import_audience, ecid_of, email_of, hashed_email_of
from tests.fixtures.ecsim import EcsimEndpoint
from tests.fixtures.service_stack import service_stack
from tests.helpers import eventually, read_topic

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ENDED = ("succeeded", "partial", "failed", "blocked", "cancelled")
HASHED, VISITORS = "hashed-emails", "visitors"


@dataclass
class StreamStack:
    pool: asyncpg.Pool
    ecsim: EcsimEndpoint
    producer: Producer
    env: dict[str, str]
    topic_prefix: str
    bootstrap: str

    async def send(self, base_topic: str, messages: Sequence[Message | bytes]) -> None:
        topic = f"{self.topic_prefix}{base_topic}"
        await self.producer.send(
            [
                OutgoingMessage(topic=topic, value=m, key=b"raw")
                if isinstance(m, bytes)
                else OutgoingMessage.of(topic, m)
                for m in messages
            ]
        )

    async def make_list(self, name: str, recipients: Sequence[int]) -> None:
        async with self.pool.acquire() as conn:
            list_id = await ensure_list(conn, name)
            await conn.executemany(
                "INSERT INTO list_member (list_id, recipient_id) VALUES ($1, $2)", [(list_id, r) for r in recipients]
            )

    async def export(self, list_name: str, audience: str, source: str, mode: str = "mirror") -> RunOutcome:
        request = AudienceExportRequest(
            list_id=list_name, audience_name=audience, data_source=source, mode=mode, requested_by="e2e"
        )
        await self.send("audience-export-requests", [request])

        async def latest() -> RunOutcome | None:
            async with self.pool.acquire() as conn:
                return await store.latest_of_request(conn, request.request_id)

        run = await eventually(latest, until=lambda r: r is not None and r.state in ENDED, timeout=60, interval=0.05)
        assert run is not None
        assert run.state == "succeeded", run.reason
        return run

    async def on_platform(self, audience: str, source: str) -> set[str]:
        """Who holds the audience's trait in ecsim's profile store."""
        sid = await self.pool.fetchval(
            "SELECT platform_trait_id FROM shared_audience WHERE audience_id = $1", export_audience_id(source, audience)
        )
        body = await self.ecsim.admin("GET", f"/traits/{sid}/members?ids=true&pageSize=100000")
        return set(body["ids"])

    async def platform_settles(self, audience: str, source: str, expected: set[str]) -> None:
        held = await eventually(
            lambda: self.on_platform(audience, source), until=lambda ids: ids == expected, timeout=30
        )
        assert held == expected

    async def applied(self, sql: str, *args: object, until: object = True) -> None:
        value = await eventually(lambda: self.pool.fetchval(sql, *args), until=lambda v: v == until, timeout=30)
        assert value == until

    async def cli(self, *args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli",
            *args,
            cwd=REPO_ROOT,
            env={**os.environ, **self.env, "COLUMNS": "200"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
        )
        out, _ = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(infra: None, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[StreamStack]:
    """One stack for the module (tests/fixtures/service_stack.py): each test its own lists and recipients."""
    async with service_stack(
        tmp_path_factory.mktemp("campaign-streams"),
        services=("reconcile", "publish"),
        env={},
        topics=("audience-export-requests", "audience-membership", "recipient-changes", "visitor-links"),
    ) as base:
        yield StreamStack(base.pool, base.ecsim, base.producer, base.env, base.topic_prefix, base.bootstrap)


async def test_a_click_puts_an_unmatched_ecid_in_its_list_within_seconds(stack: StreamStack) -> None:
    await add_import_audience(stack.pool, "engaged", VISITORS, 5001)
    unknown = "4" * 38
    batch = AudienceMembership(
        run_id=uuid.uuid4(), seq=0, last=True, audience_id="engaged", data_source=VISITORS, id_type="ecid",
        mode="delta", adds=[unknown, ecid_of(1)],
    )  # fmt: skip
    await stack.send("audience-membership", [batch])
    await stack.applied("SELECT count(*) FROM unmatched_id WHERE audience_id = 'engaged' AND id = $1", unknown, until=1)

    clicked = time.monotonic()
    await stack.send("visitor-links", [VisitorLink(ecid=unknown, recipient_id=7, seen_at=datetime.now(UTC))])
    members_sql = """SELECT array_agg(recipient_id ORDER BY recipient_id) FROM list_member
                      WHERE list_id = (SELECT list_id FROM shared_audience WHERE audience_id = 'engaged')"""
    await stack.applied(members_sql, until=[1, 7])
    assert time.monotonic() - clicked < 5
    assert await stack.pool.fetchval("SELECT count(*) FROM unmatched_id WHERE audience_id = 'engaged'") == 0


async def test_an_email_change_moves_the_declared_key_on_the_platform(stack: StreamStack) -> None:
    await stack.make_list("Readers", [31, 32, 33])
    await stack.export("Readers", "Readers", HASHED)
    await stack.platform_settles("Readers", HASHED, {hashed_email_of(r) for r in (31, 32, 33)})

    await stack.send(
        "recipient-changes", [RecipientChange(recipient_id=33, op="upsert", email="New.Three@Example.com", position=1)]
    )
    await stack.applied("SELECT email FROM recipient WHERE recipient_id = 33", until="New.Three@Example.com")
    await stack.export("Readers", "Readers", HASHED)
    new_hash = await stack.pool.fetchval("SELECT key_email_sha256 FROM recipient WHERE recipient_id = 33")
    await stack.platform_settles("Readers", HASHED, {hashed_email_of(31), hashed_email_of(32), new_hash})


async def test_a_delete_and_an_opt_out_leave_the_platform_on_the_next_mirror(stack: StreamStack) -> None:
    await stack.make_list("Leavers", [1, 2, 3, 4])
    for source in (HASHED, VISITORS):
        await stack.export("Leavers", "Leavers", source)
    await stack.platform_settles("Leavers", VISITORS, {ecid_of(1), ecid_of(2), ecid_of(2, 1), ecid_of(3), ecid_of(4)})

    await stack.send(
        "recipient-changes",
        [
            RecipientChange(recipient_id=2, op="delete", position=10),
            RecipientChange(recipient_id=4, op="upsert", email=email_of(4), opted_out=True, position=10),
        ],
    )
    await stack.applied("SELECT opted_out FROM recipient WHERE recipient_id = 4")
    await stack.applied("SELECT count(*) FROM list_member WHERE recipient_id = 2", until=0)
    assert await stack.pool.fetchval("SELECT count(*) FROM visitor_link WHERE recipient_id = 2") == 0

    hashed = await stack.export("Leavers", "Leavers", HASHED)
    visitors = await stack.export("Leavers", "Leavers", VISITORS)
    for run in (hashed, visitors):
        assert run.counts["opted_out"] == 1
        assert run.counts.get("excluded", 0) == 0
    await stack.platform_settles("Leavers", HASHED, {hashed_email_of(1), hashed_email_of(3)})
    await stack.platform_settles("Leavers", VISITORS, {ecid_of(1), ecid_of(3)})


async def test_forget_removes_a_persons_ids_from_the_platform_at_once(stack: StreamStack) -> None:
    await stack.make_list("Newsletter", [5, 6, 7])
    await stack.export("Newsletter", "Newsletter", HASHED, mode="append")
    await stack.platform_settles("Newsletter", HASHED, {hashed_email_of(r) for r in (5, 6, 7)})

    code, out = await stack.cli("forget", "6", "--yes")
    assert code == 0, out
    assert "list 'Newsletter': 1 member(s) removed" in out
    assert "1 ID(s) withdrawn; export requested" in out
    # No export asked for by anyone else: the forget's own request, in the audience's append mode, removes it.
    await stack.platform_settles("Newsletter", HASHED, {hashed_email_of(5), hashed_email_of(7)})


async def test_a_malformed_change_goes_to_the_dlq_while_the_rest_applies(stack: StreamStack) -> None:
    truncate = orjson.dumps({"op": "t", "before": None, "after": None, "source": {"lsn": 5, "ts_ms": 1}})
    await stack.send(
        "recipient-changes",
        [
            RecipientChange(recipient_id=9100, op="upsert", email="a@example.com", position=1),
            orjson.dumps({"recipient_id": 9101, "op": "upsert"}),  # neither position nor changed_at
            truncate,
            RecipientChange(recipient_id=9102, op="upsert", email="b@example.com", position=1),
        ],
    )
    await stack.applied("SELECT count(*) FROM recipient WHERE recipient_id IN (9100, 9102)", until=2)
    letters = await read_topic(stack.bootstrap, f"{stack.topic_prefix}recipient-changes.dlq", expect=2)
    reasons = sorted(dict(r.headers)["dlq.reason"].decode() for r in letters)
    assert len(reasons) == 2
    assert any("could not be ordered" in r for r in reasons), reasons
    assert any("truncate" in r for r in reasons), reasons
    assert await stack.pool.fetchval("SELECT count(*) FROM recipient WHERE recipient_id = 9101") == 0
