"""Schedules, dry runs and the HTTP API through the running services: reconcile and publish as processes, ecsim
as the platform, a workflow engine speaking only HTTP (with a bearer token) and an operator at the CLI.

* an export requested and followed through the API only ends ``succeeded`` and the platform holds the trait;
* a dry run through the API records and sends nothing, and the real run afterwards is what it said;
* a schedule added at the CLI is fired by reconcile once per slot (a missed slot once, a restart not again),
  and the status page and ``GET /api/schedules`` show its last and next run.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from services.reconcile.exporting import export_audience_id
from services.reconcile.schedule_slots import slot_request_id
from tests.e2e.test_export_guards import SOURCE, GuardStack
from tests.fixtures.bridge_db import hashed_email_of
from tests.fixtures.service_stack import ServiceStack, service_stack
from tests.fixtures.stack import ServiceProcess
from tests.helpers import eventually, read_topic

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

TOKEN = "wf-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENDED = ("succeeded", "partial", "failed", "blocked", "cancelled")
# What an export run leaves behind, and what a dry run must not touch.
LEDGERS = ("export_request", "run", "exported_member", "export_excluded", "shared_audience", "published_file")


@dataclass
class ApiStack(GuardStack):
    reconcile: ServiceProcess | None = None
    base: ServiceStack | None = None

    async def http(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> tuple[int, Any]:
        assert self.reconcile is not None
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.reconcile.url + path, json=body, headers=AUTH if auth else {}) as resp,
        ):
            kind = resp.content_type
            return resp.status, (await resp.json(content_type=None) if "json" in kind else await resp.text())

    async def run_until_ended(self, any_id: str, timeout: float = 60) -> dict[str, Any]:
        async def view() -> dict[str, Any]:
            status, body = await self.http("GET", f"/api/runs/{any_id}")
            if status == 404:  # a schedule's request not fired yet
                return {"state": "not yet"}
            assert status == 200, body
            return dict(body)

        return await eventually(view, until=lambda v: v["state"] in ENDED, timeout=timeout, interval=0.1)

    async def ledgers(self) -> dict[str, str]:
        prints = {}
        for table in LEDGERS:
            prints[table] = await self.pool.fetchval(
                f"SELECT md5(coalesce(string_agg(x::text, chr(10) ORDER BY x::text), '')) FROM {table} x"
            )
        return prints

    async def restart_reconcile(self) -> None:
        assert self.base is not None
        self.reconcile = await self.base.restart("reconcile")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(infra: None, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ApiStack]:
    """One stack for the module (tests/fixtures/service_stack.py): each test its own lists and audiences."""
    async with service_stack(
        tmp_path_factory.mktemp("workflow-api"),
        services=("reconcile", "publish"),
        env={
            "EXPORT_ALLOW_UNDECLARED": "true",
            "SCHEDULE_POLL_S": "0.3",
            "STATUS_PAGE_CREDENTIALS": f"token:wf-engine:{TOKEN}",
        },
        topics=("audience-export-requests", "audience-export-batches"),
    ) as base:
        yield ApiStack(
            pool=base.pool,
            ecsim=base.ecsim,
            producer=base.producer,
            env=base.env,
            topic_prefix=base.topic_prefix,
            reconcile=base.services["reconcile"],
            base=base,
        )


async def _add_schedule(stack: ApiStack, list_name: str, audience: str) -> int:
    code, out = await stack.cli(
        "schedule", "add", "--list", list_name, "--audience", audience, "--data-source", SOURCE,
        "--mode", "mirror", "--every", "1h",
    )  # fmt: skip
    assert code == 0, out
    found = re.search(r"schedule (\d+): every 3600 s", out)
    assert found is not None, out
    return int(found.group(1))


async def _backdate(stack: ApiStack, schedule_id: int, by: timedelta) -> datetime:
    """As if the schedule had been added ``by`` ago; its new creation time."""
    created: datetime = await stack.pool.fetchval(
        """UPDATE export_schedule SET created_at = created_at - $2::interval, anchor = anchor - $2::interval
            WHERE schedule_id = $1 RETURNING created_at""",
        schedule_id,
        by,
    )
    return created


def _export(list_name: str, audience: str, mode: str = "mirror", **more: Any) -> dict[str, Any]:
    return {"list": list_name, "audience": audience, "data_source": SOURCE, "mode": mode, **more}


async def _sizes(stack: ApiStack, topics: list[str]) -> list[int]:
    """How many records each topic holds: all read for 1.5 s (the topics side by side), late ones included."""
    read = (read_topic(stack.env["KAFKA_BOOTSTRAP_SERVERS"], t, expect=10_000, timeout=1.5) for t in topics)
    return [len(records) for records in await asyncio.gather(*read)]


async def test_an_export_through_the_api_only(stack: ApiStack) -> None:
    await stack.make_list("Api list", range(1, 31))
    status, body = await stack.http("POST", "/api/exports", _export("Api list", "Api audience"), auth=False)
    assert status == 401, body

    request_id = str(uuid.uuid4())
    status, accepted = await stack.http(
        "POST", "/api/exports", _export("Api list", "Api audience", request_id=request_id)
    )
    assert status in (200, 202), accepted
    run = await stack.run_until_ended(accepted["run_url"].rsplit("/", 1)[1])
    assert run["state"] == "succeeded", run
    assert run["request_id"] == request_id
    assert run["counts"]["added"] == 30
    assert run["files"]
    assert all(f["receipt"] == "applied" for f in run["files"]), run["files"]
    expected = {hashed_email_of(r) for r in range(1, 31)}
    assert await eventually(lambda: stack.on_platform("Api audience"), until=lambda ids: ids == expected)
    # Who asked is the authenticated user, through the API.
    asked = await stack.pool.fetchrow(
        "SELECT requested_by, requested_via FROM run WHERE run_id = $1", uuid.UUID(run["run_id"])
    )
    assert asked is not None
    assert (asked["requested_by"], asked["requested_via"]) == ("wf-engine", "api")

    # The same request again (a workflow engine retrying): the same run, nothing new.
    status, again = await stack.http("POST", "/api/exports", _export("Api list", "Api audience", request_id=request_id))
    assert (status, again["run_id"], again["state"]) == (200, run["run_id"], "succeeded")
    status, body = await stack.http("GET", "/api/audiences")
    assert status == 200
    # Every audience the bridge holds (the module's other tests add theirs), this one once.
    names = [a["name"] for a in body["audiences"]]
    assert names.count("Api audience") == 1
    assert sorted(names) == sorted(await stack.pool.fetchval("SELECT array_agg(name) FROM shared_audience"))


async def test_a_dry_run_changes_nothing_and_the_real_run_is_what_it_said(stack: ApiStack) -> None:
    await stack.make_list("Dry", range(1, 41))
    status, accepted = await stack.http("POST", "/api/exports", _export("Dry", "Dry audience"))
    assert (await stack.run_until_ended(accepted["request_id"]))["state"] == "succeeded"
    await stack.pool.execute("UPDATE recipient SET email = NULL WHERE recipient_id = 45")
    await stack.make_list("Dry", range(11, 51))  # 10 leave, 10 join, one of them has no ID

    before = await stack.ledgers()
    topics = [f"{stack.topic_prefix}audience-export-requests", f"{stack.topic_prefix}audience-export-batches"]
    sent_before = await _sizes(stack, topics)
    status, dry = await stack.http("POST", "/api/exports/dry-run", _export("Dry", "Dry audience"))
    assert status == 200, dry
    assert (dry["verdict"], dry["to_add"], dry["to_remove"], dry["excluded"], dry["shared"]) == (
        "would_run",
        9,
        10,
        1,
        40,
    )
    assert dry["samples"]["excluded"] == ["45"]
    assert await stack.ledgers() == before
    assert await _sizes(stack, topics) == sent_before

    status, accepted = await stack.http("POST", "/api/exports", _export("Dry", "Dry audience"))
    run = await stack.run_until_ended(accepted["request_id"])
    assert run["state"] == "succeeded", run
    assert (run["counts"]["added"], run["counts"]["removed"], run["counts"]["excluded"]) == (9, 10, 1)
    kept = {hashed_email_of(r) for r in range(11, 51) if r != 45}
    assert await eventually(lambda: stack.on_platform("Dry audience"), until=lambda ids: ids == kept)


async def test_a_schedule_fires_each_slot_once_through_reconcile(stack: ApiStack) -> None:
    await stack.make_list("Nightly", range(1, 21))
    schedule_id = await _add_schedule(stack, "Nightly", "Nightly audience")
    # As if reconcile had been down for two slots: the latest fires, once.
    slot = await _backdate(stack, schedule_id, timedelta(hours=2, minutes=5)) + timedelta(hours=2)
    request_id = slot_request_id(schedule_id, slot)
    run = await stack.run_until_ended(str(request_id))
    assert run["state"] == "succeeded", run
    everyone = {hashed_email_of(r) for r in range(1, 21)}
    assert await eventually(lambda: stack.on_platform("Nightly audience"), until=lambda ids: ids == everyone)

    # A restart, then a second schedule due: once it fired, the scheduler has looked at the first one again.
    await stack.restart_reconcile()
    await stack.make_list("Later", range(1, 6))
    later_id = await _add_schedule(stack, "Later", "Later audience")
    later_slot = await _backdate(stack, later_id, timedelta(hours=1, minutes=1)) + timedelta(hours=1)
    later = await stack.run_until_ended(str(slot_request_id(later_id, later_slot)))
    assert later["state"] == "succeeded", later
    # The requests for these two audiences (the module's other tests made their own): one per fired slot.
    requests = await stack.pool.fetch(
        "SELECT request_id FROM export_request WHERE audience_id = ANY($1::text[])",
        [export_audience_id(SOURCE, a) for a in ("Nightly audience", "Later audience")],
    )
    assert {r["request_id"] for r in requests} == {request_id, slot_request_id(later_id, later_slot)}

    status, body = await stack.http("GET", "/api/schedules")
    assert status == 200, body
    nightly = next(s for s in body["schedules"] if s["schedule_id"] == schedule_id)
    assert nightly["last_run_at"] is not None
    assert nightly["last_request_id"] == str(request_id)
    assert nightly["next_run_at"] == (slot + timedelta(hours=1)).isoformat().replace("+00:00", "Z")

    status, page = await stack.http("GET", "/")
    assert status == 200
    section = page.split('<section id="schedules">', 1)[1].split("</section>", 1)[0]
    assert "Nightly audience" in section
    assert (slot + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S") in section
    assert "never" not in section
