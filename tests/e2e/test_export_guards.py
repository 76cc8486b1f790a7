"""Export guards and runs that always end, through the running services: reconcile and publish as processes,
ecsim as the platform (processing the inbound files and writing receipts), the CLI as an operator.

* a mirror that would empty a large audience is held ``blocked`` (nothing reaches the platform) until
  ``audience-bridge release RUN --yes``;
* a request naming an audience with another list is refused until ``audience-bridge audience rebind``;
* an audience's stuck run does not delay another audience's export, and ends ``failed`` after
  ``EXPORT_RUN_TIMEOUT_S``, its audience's waiting request then going ahead;
* ``audience-bridge cancel RUN`` ends a run for good and its audience's next request goes ahead.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
import pytest_asyncio

from services.reconcile.catalog import ensure_list
from services.reconcile.exporting import export_audience_id
from shared.kafka import OutgoingMessage, Producer
from shared.messages import AudienceExportRequest
from shared.runs import store
from shared.runs.outcome import RunOutcome
from shared.settings import REPO_ROOT
from tests.fixtures.bridge_db import hashed_email_of
from tests.fixtures.ecsim import EcsimEndpoint
from tests.fixtures.service_stack import service_stack
from tests.helpers import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

SOURCE = "hashed-emails"
RUN_TIMEOUT_S = 10.0
ENDED = ("succeeded", "partial", "failed", "blocked", "cancelled")


@dataclass
class GuardStack:
    pool: asyncpg.Pool
    ecsim: EcsimEndpoint
    producer: Producer
    env: dict[str, str]
    topic_prefix: str

    async def make_list(self, name: str, recipients: range) -> None:
        async with self.pool.acquire() as conn:
            list_id = await ensure_list(conn, name)
            await conn.execute("DELETE FROM list_member WHERE list_id = $1", list_id)
            await conn.executemany(
                "INSERT INTO list_member (list_id, recipient_id) VALUES ($1, $2)", [(list_id, r) for r in recipients]
            )

    async def request(self, list_name: str, audience: str, mode: str = "mirror") -> AudienceExportRequest:
        request = AudienceExportRequest(
            list_id=list_name, audience_name=audience, data_source=SOURCE, mode=mode, requested_by="e2e"
        )
        topic = f"{self.topic_prefix}audience-export-requests"
        await self.producer.send([OutgoingMessage.of(topic, request)])
        return request

    async def ended(self, request: AudienceExportRequest, timeout: float = 60) -> RunOutcome:
        """The request's run once it ended (``succeeded``, ``failed``, ``blocked``…)."""

        async def latest() -> RunOutcome | None:
            async with self.pool.acquire() as conn:
                return await store.latest_of_request(conn, request.request_id)

        run = await eventually(
            latest, until=lambda r: r is not None and r.state in ENDED, timeout=timeout, interval=0.05
        )
        assert run is not None
        return run

    async def run_now(self, run_id: uuid.UUID) -> RunOutcome:
        async with self.pool.acquire() as conn:
            run = await store.load(conn, run_id)
        assert run is not None
        return run

    async def ended_run(self, run_id: uuid.UUID, timeout: float = 60) -> RunOutcome:
        run = await eventually(
            lambda: self.run_now(run_id), until=lambda r: r.state in ENDED, timeout=timeout, interval=0.05
        )
        return run

    async def members(self, audience: str) -> set[str]:
        rows = await self.pool.fetch(
            "SELECT id FROM exported_member WHERE audience_id = $1", export_audience_id(SOURCE, audience)
        )
        return {r["id"] for r in rows}

    async def on_platform(self, audience: str) -> set[str]:
        """Who holds the audience's trait in ecsim's profile store."""
        sid = await self.pool.fetchval(
            "SELECT platform_trait_id FROM shared_audience WHERE audience_id = $1", export_audience_id(SOURCE, audience)
        )
        body = await self.ecsim.admin("GET", f"/traits/{sid}/members?ids=true&pageSize=100000")
        return set(body["ids"])

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
        )
        out, _ = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode()

    async def stuck_run(self, audience: str, list_name: str) -> uuid.UUID:
        """A run of the audience whose batches were lost on their way to publish: it stays in ``progress``."""
        run_id, request_id = uuid.uuid4(), uuid.uuid4()
        audience_id = export_audience_id(SOURCE, audience)
        async with self.pool.acquire() as conn, conn.transaction():
            list_id = await ensure_list(conn, list_name)
            source = await conn.fetchrow("SELECT data_source_id, dpid FROM data_source WHERE name = $1", SOURCE)
            assert source is not None
            await conn.execute(
                """INSERT INTO shared_audience (audience_id, name, direction, data_source_id, list_id, export_mode)
                   VALUES ($1, $2, 'export', $3, $4, 'mirror')""",
                audience_id,
                audience,
                source["data_source_id"],
                list_id,
            )
            await conn.execute(
                """INSERT INTO export_request (request_id, audience_id, attempts, emitted_run, requested_by)
                   VALUES ($1, $2, 1, $3, 'e2e')""",
                request_id,
                audience_id,
                run_id,
            )
            await store.open_run(
                conn,
                store.NewRun(
                    run_id=run_id,
                    direction="export",
                    audience_id=audience_id,
                    mode="mirror",
                    data_source_id=source["data_source_id"],
                    list_id=list_id,
                    id_type="declared",
                    state="progress",
                    request_id=request_id,
                    dpid=source["dpid"],
                ),
            )
        return run_id


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(infra: None, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[GuardStack]:
    """One stack for the module (tests/fixtures/service_stack.py): each test its own lists and audiences."""
    async with service_stack(
        tmp_path_factory.mktemp("export-guards"),
        services=("reconcile", "publish"),
        env={
            "EXPORT_GUARD_MIN_SIZE": "50",
            "EXPORT_MAX_REMOVAL_SHARE": "0.5",
            "EXPORT_RUN_TIMEOUT_S": str(RUN_TIMEOUT_S),
        },
        topics=("audience-export-requests",),
        # One partition: every request meets in the same one (and in the same polls), the hardest case for an
        # audience whose request must wait.
        kafka_topic_partitions=1,
    ) as base:
        yield GuardStack(
            pool=base.pool, ecsim=base.ecsim, producer=base.producer, env=base.env, topic_prefix=base.topic_prefix
        )


async def test_a_mass_removal_is_held_until_released(stack: GuardStack) -> None:
    await stack.make_list("Guarded", range(1, 121))
    first = await stack.ended(await stack.request("Guarded", "Guarded audience"))
    assert first.state == "succeeded", first.reason
    everyone = {hashed_email_of(r) for r in range(1, 121)}
    assert await stack.members("Guarded audience") == everyone

    await stack.make_list("Guarded", range(1, 21))  # 100 of the 120 leave: 83%
    held = await stack.ended(await stack.request("Guarded", "Guarded audience"))
    assert held.state == "blocked"
    assert "would remove 100 of the 120 IDs" in (held.reason or "")
    # Nothing left the bridge: the platform and the record still hold everyone.
    assert await stack.on_platform("Guarded audience") == everyone
    assert await stack.members("Guarded audience") == everyone

    code, out = await stack.cli("release", str(held.run_id), "--yes")
    assert code == 0, out
    assert "removes 100" in out
    released = await stack.ended_run(held.run_id)
    assert released.state == "succeeded", released.reason
    kept = {hashed_email_of(r) for r in range(1, 21)}
    assert await stack.members("Guarded audience") == kept
    assert await eventually(lambda: stack.on_platform("Guarded audience"), until=lambda ids: ids == kept)


async def test_an_audience_is_refused_with_another_list_until_rebound(stack: GuardStack) -> None:
    await stack.make_list("Owner", range(1, 11))
    await stack.make_list("Intruder", range(5, 16))
    assert (await stack.ended(await stack.request("Owner", "Owned"))).state == "succeeded"

    refused = await stack.ended(await stack.request("Intruder", "Owned"))
    assert refused.state == "failed"
    assert "belongs to list 'Owner'" in (refused.reason or "")
    assert await stack.members("Owned") == {hashed_email_of(r) for r in range(1, 11)}

    code, out = await stack.cli("audience", "rebind", "Owned", "--list", "Intruder", "--by", "ops")
    assert code == 0, out
    moved = await stack.ended(await stack.request("Intruder", "Owned"))
    assert moved.state == "succeeded", moved.reason
    assert await stack.members("Owned") == {hashed_email_of(r) for r in range(5, 16)}


async def test_a_stuck_run_holds_up_nobody_and_ends_after_the_bound(stack: GuardStack) -> None:
    await stack.make_list("Other", range(1, 31))
    await stack.make_list("Stuck", range(31, 61))
    # The normal time of an export here, measured on the same stack.
    began = time.monotonic()
    assert (await stack.ended(await stack.request("Other", "Baseline"))).state == "succeeded"
    normal = time.monotonic() - began

    stuck = await stack.stuck_run("Stuck audience", "Stuck")
    behind = await stack.request("Stuck", "Stuck audience")  # must wait for the stuck run
    began = time.monotonic()
    other = await stack.ended(await stack.request("Other", "Other audience"))
    took = time.monotonic() - began
    assert other.state == "succeeded", other.reason
    assert took < 2 * normal + 2, f"another audience's export took {took:.1f}s (normal: {normal:.1f}s)"
    assert (await stack.run_now(stuck)).state == "progress"  # still stuck meanwhile

    failed = await stack.ended_run(stuck, timeout=RUN_TIMEOUT_S + 30)
    assert failed.state == "failed"
    assert "EXPORT_RUN_TIMEOUT_S" in (failed.reason or "")
    went_ahead = await stack.ended(behind)
    assert went_ahead.state == "succeeded", went_ahead.reason
    assert await stack.members("Stuck audience") == {hashed_email_of(r) for r in range(31, 61)}


async def test_cancel_ends_a_run_and_its_audience_goes_on(stack: GuardStack) -> None:
    await stack.make_list("Given up", range(1, 11))
    stuck = await stack.stuck_run("Given up audience", "Given up")
    behind = await stack.request("Given up", "Given up audience")
    code, out = await stack.cli("cancel", str(stuck), "--by", "ops")
    assert code == 0, out
    cancelled = await stack.ended_run(stuck)
    assert (cancelled.state, cancelled.reason) == ("cancelled", "cancelled by ops")
    assert (await stack.ended(behind)).state == "succeeded"
    code, out = await stack.cli("cancel", str(stuck))
    assert code == 2
    assert "ended already" in out
