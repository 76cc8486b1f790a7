"""Issue 19, import polling intervals, through the running services: an import audience with ``poll_every``
gets the deliveries that feed it only at its slots, each imported once; a restarted ingest does not poll before
the next slot; the status page shows the audience's last and next poll.

A dedicated ecsim delivers the platform's batches into the import zone the real ingest and reconcile work
from. The e-mail destination's audience has no interval: its deliveries, imported at once, show that ingest
scanned the zone after the held delivery arrived. The clock is moved by moving the interval's anchor back in
``import_poll`` (as if an hour had gone by), which is all a slot depends on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import pytest_asyncio

from services.reconcile.catalog import CatalogImportAudience, upsert_import_audience
from tests.e2e.test_import_routing import ECID_DESTINATION, EMAIL_DESTINATION, PLATFORM_SEED, SEGMENT
from tests.fixtures.bridge_db import Campaign, add_import_audience, ecid_of, hashed_email_of
from tests.fixtures.ecsim import EcsimEndpoint, EcsimFactory, ecsim_factory  # noqa: F401
from tests.fixtures.stack import ServiceProcess, StartService, start_service  # noqa: F401
from tests.helpers import eventually

pytestmark = pytest.mark.e2e


@dataclass
class PollingStack:
    campaign: Campaign
    ecsim: EcsimEndpoint
    root: Path
    env: dict[str, str]
    start: StartService
    ingest: ServiceProcess
    reconcile: ServiceProcess

    async def deliver(self, destination: int, mode: str, members: list[str]) -> set[str]:
        body = {"destination_id": destination, "mode": mode, "membership": {str(SEGMENT): members}}
        result: dict[str, Any] = await self.ecsim.admin("POST", "/deliveries", body)
        return set(result["writeOrder"])

    async def members(self, audience: str) -> set[int]:
        rows = await self.campaign.pool.fetch(
            "SELECT recipient_id FROM list_member JOIN shared_audience USING (list_id) WHERE audience_id = $1",
            audience,
        )
        return {r["recipient_id"] for r in rows}

    async def runs(self, audience: str) -> list[asyncpg.Record]:
        return await self.campaign.pool.fetch(
            "SELECT * FROM run WHERE direction = 'import' AND audience_id = $1 ORDER BY started_at", audience
        )

    async def poll(self) -> asyncpg.Record | None:
        return await self.campaign.pool.fetchrow("SELECT * FROM import_poll WHERE audience_id = 'hourly'")

    def inbox(self) -> set[str]:
        return {p.name for p in self.root.iterdir() if p.is_file()}

    async def witness(self, emails: range) -> None:
        """A delivery fed at every scan, imported: ingest has scanned the zone since everything before it."""
        await self.deliver(EMAIL_DESTINATION, "full", [hashed_email_of(i) for i in emails])
        await eventually(lambda: self.members("mails"), until=lambda m: m == set(emails), timeout=60)


@pytest_asyncio.fixture
async def stack(
    campaign: Campaign,
    ecsim_factory: EcsimFactory,  # noqa: F811
    start_service: StartService,  # noqa: F811
    database_url: str,
    topic_prefix: str,
) -> AsyncIterator[PollingStack]:
    ecsim = await ecsim_factory()
    await ecsim.seed(PLATFORM_SEED)
    async with campaign.pool.acquire() as conn:
        await upsert_import_audience(
            conn,
            CatalogImportAudience(
                audience_id="hourly",
                name="Hourly visitors",
                platform_segment_id=SEGMENT,
                data_source="visitors",
                list="Hourly visitors",
                poll_every="1h",
            ),
        )
    await add_import_audience(campaign.pool, "mails", "hashed-emails", SEGMENT)
    env = {
        "TOPIC_PREFIX": topic_prefix,
        "DATABASE_URL": database_url,
        "IMPORT_DROPZONE_URL": ecsim.import_dropzone_url,
        "IMPORT_POLL_INTERVAL_S": "0.2",
        "PLATFORM_IMS_URL": ecsim.ims_url,
        "PLATFORM_API_URL": ecsim.api_url,
        "FULL_IMPORT_GUARD_MIN_LIST_SIZE": "1000",
    }
    # Side by side: the database is migrated already, and each creates the topics it needs.
    reconcile, ingest = await asyncio.gather(start_service("reconcile", env=env), start_service("ingest", env=env))
    assert ecsim.import_dir is not None
    yield PollingStack(campaign, ecsim, ecsim.import_dir, env, start_service, ingest, reconcile)


async def test_an_audiences_deliveries_are_imported_at_its_slots_only(stack: PollingStack) -> None:
    seen = await eventually(stack.poll, until=lambda row: row is not None, timeout=30)
    assert seen is not None
    assert seen["every_s"] == 3600
    assert seen["last_slot"] is None

    held = await stack.deliver(ECID_DESTINATION, "full", [ecid_of(i) for i in range(1, 21)])
    await stack.witness(range(1, 11))
    assert held <= stack.inbox()  # still waiting in the zone, untouched
    assert await stack.runs("hourly") == []

    # An hour goes by: the running ingest polls the slot and imports the batch, once.
    await stack.campaign.pool.execute(
        "UPDATE import_poll SET anchor = anchor - interval '61 minutes' WHERE audience_id = 'hourly'"
    )
    await eventually(lambda: stack.members("hourly"), until=lambda m: m == set(range(1, 21)), timeout=60)
    [run] = await eventually(
        lambda: stack.runs("hourly"), until=lambda runs: len(runs) == 1 and runs[0]["state"] == "succeeded"
    )
    assert orjson.loads(run["counts"])["received"] == 20
    # Recorded when the scan ends, after the batch is filed away: possibly a moment after reconcile ended the run.
    polled = await eventually(stack.poll, until=lambda row: row is not None and row["last_slot"] is not None)
    assert polled is not None
    assert polled["last_slot"] == polled["anchor"] + timedelta(hours=1)
    assert not held & stack.inbox()

    # A restarted ingest does not poll again before the next slot.
    assert await stack.ingest.stop() == 0
    later = await stack.deliver(ECID_DESTINATION, "full", [ecid_of(i) for i in range(1, 31)])
    await stack.start("ingest", env=stack.env)
    await stack.witness(range(11, 16))
    assert later <= stack.inbox()
    assert len(await stack.runs("hourly")) == 1
    assert await stack.members("hourly") == set(range(1, 21))
    assert await stack.poll() == polled

    # The status page shows the audience's last and next poll.
    status, body = await stack.reconcile.get("/api/status")
    assert status == 200, body
    [shown] = orjson.loads(body)["import_polls"]
    assert shown["audience_id"] == "hourly"
    assert shown["last_poll_at"] is not None
    assert shown["next_poll_at"] == (polled["last_slot"] + timedelta(hours=1)).isoformat()
    status, page = await stack.reconcile.get("/status")
    assert status == 200
    assert 'id="import-polls"' in page
    assert 'data-audience-id="hourly"' in page
