"""reconcile's HTTP API against real Postgres and Kafka (served by aiohttp's test server, as the service does)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.reconcile import schedules
from services.reconcile.api import RETRY_NAMESPACE, ApiDeps, WorkflowApi
from services.reconcile.api_problems import PROBLEM_JSON
from services.reconcile.export_guard import ExportGuards
from services.reconcile.exporting import Exporter
from services.reconcile.schedule_slots import Cadence
from shared import http_auth
from shared.kafka import ensure_topics
from shared.messages import AudienceExportRequest
from shared.settings import KafkaSettings
from tests.fixtures.export_rig import ExportRig, rig  # noqa: F401
from tests.fixtures.export_rig import export_request as _request
from tests.helpers import read_all
from tests.integration.test_export_dry_run import database_fingerprint

pytestmark = pytest.mark.integration

PRINCIPAL = "wf-engine"


@dataclass
class Api:
    client: TestClient[web.Request, web.Application]
    rig: ExportRig
    requests_topic: str
    exporter: Exporter

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, str, Any]:
        data = body if isinstance(body, bytes) else (orjson.dumps(body) if body is not None else None)
        async with self.client.request(method, path, data=data) as resp:
            raw = await resp.read()
            return resp.status, resp.content_type, orjson.loads(raw) if raw else None

    async def sent(self) -> list[AudienceExportRequest]:
        """Every request on the topic now: the API answers once Kafka acknowledged what it sent."""
        records = await read_all(self.rig.bootstrap, self.requests_topic)
        return [AudienceExportRequest.model_validate_json(r.value) for r in records]


@web.middleware
async def _as_principal(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
    request[http_auth.PRINCIPAL] = PRINCIPAL  # what the service's authentication middleware puts there
    return await handler(request)


@pytest_asyncio.fixture
async def api(rig: ExportRig) -> AsyncIterator[Api]:  # noqa: F811
    requests_topic = rig.topic.replace("audience-export-batches", "audience-export-requests")
    await ensure_topics(KafkaSettings(kafka_bootstrap_servers=rig.bootstrap), [requests_topic])
    exporter = rig.guarded_exporter(max_removal_share=0.5, min_size=10)
    deps = ApiDeps(
        pool=lambda: rig.campaign.pool,
        exporter=lambda: exporter,
        producer=rig.producer,
        reporter=rig.reporter,
        requests_topic=requests_topic,
        guards=ExportGuards(max_removal_share=0.5, min_size=10),
        allow_undeclared=True,
        sample_size=2,
    )
    app = web.Application(middlewares=[_as_principal])
    WorkflowApi(deps).add_routes(app)
    async with TestClient(TestServer(app)) as client:
        yield Api(client, rig, requests_topic, exporter)


def _body(list_name: str = "l", audience: str = "VIP", mode: str = "append", **more: Any) -> dict[str, Any]:
    return {"list": list_name, "audience": audience, "data_source": "crm-ids", "mode": mode, **more}


async def test_an_export_request_is_idempotent_by_its_id(api: Api) -> None:
    await api.rig.make_list("l", range(1, 11))
    request_id = str(uuid.uuid4())
    status, kind, accepted = await api.call("POST", "/api/exports", _body(request_id=request_id))
    assert (status, kind) == (202, "application/json")
    assert accepted == {
        "request_id": request_id,
        "state": "requested",
        "run_id": None,
        "run_url": f"/api/runs/{request_id}",
    }
    status, _, again = await api.call("POST", "/api/exports", _body(request_id=request_id))
    assert (status, again) == (202, accepted)
    status, kind, problem = await api.call("POST", "/api/exports", _body(mode="mirror", request_id=request_id))
    assert (status, kind) == (409, PROBLEM_JSON)
    assert "used for another export" in problem["detail"]

    sent = await api.sent()
    assert {r.request_id for r in sent} == {uuid.UUID(request_id)}
    assert {(r.requested_by, r.requested_via, r.mode) for r in sent} == {(PRINCIPAL, "api", "append")}

    status, _, view = await api.call("GET", f"/api/runs/{request_id}")
    assert (status, view["state"], view["run_id"]) == (200, "requested", None)
    run_id = await api.exporter.export(sent[0])  # what reconcile's consumer does with it
    assert await api.exporter.export(sent[1]) is None  # the same request: emitted once
    status, _, view = await api.call("GET", f"/api/runs/{request_id}")
    assert (status, view["run_id"], view["state"]) == (200, str(run_id), "progress")
    assert view["counts"]["added"] == 10
    assert (await api.call("GET", f"/api/runs/{run_id}"))[2] == view
    status, _, accepted = await api.call("POST", "/api/exports", _body(request_id=request_id))
    assert (status, accepted["run_id"], accepted["state"]) == (200, str(run_id), "progress")


async def test_bad_requests_are_problem_details(api: Api) -> None:
    await api.rig.make_list("l", range(1, 3))
    cases: list[tuple[str, str, Any, int, str]] = [
        ("POST", "/api/exports", b"{not json", 400, "not JSON"),
        ("POST", "/api/exports", {"list": "l"}, 422, "Field required"),
        ("POST", "/api/exports", _body(moed="x"), 422, "Extra inputs are not permitted"),
        ("POST", "/api/exports", _body(list_name="nope"), 422, "unknown list"),
        ("POST", "/api/exports", {**_body(), "data_source": "nope"}, 422, "unknown data source"),
        ("POST", "/api/exports/dry-run", _body(list_name="nope"), 422, "unknown list"),
        ("GET", f"/api/runs/{uuid.uuid4()}", None, 404, "no run or export request"),
        ("GET", "/api/runs/not-a-uuid", None, 404, "is a UUID"),
        ("POST", f"/api/runs/{uuid.uuid4()}/cancel", None, 404, "no run with this id"),
        ("POST", f"/api/runs/{uuid.uuid4()}/retry", None, 404, "no run with this id"),
        ("POST", f"/api/runs/{uuid.uuid4()}/release", None, 404, "no export run with this id"),
    ]
    for method, path, body, status, detail in cases:
        got, kind, problem = await api.call(method, path, body)
        assert (got, kind) == (status, PROBLEM_JSON), (path, problem)
        assert problem["status"] == status
        assert problem["instance"] == path
        assert detail in problem["detail"], problem
    assert await api.sent() == []


async def test_a_dry_run_through_the_api_changes_nothing(api: Api) -> None:
    await api.rig.make_list("l", range(1, 13))
    async with api.rig.campaign.pool.acquire() as conn:
        before = await database_fingerprint(conn)
    status, _, dry = await api.call("POST", "/api/exports/dry-run", _body(mode="mirror"))
    assert status == 200
    assert (dry["verdict"], dry["received"], dry["to_add"], dry["to_remove"], dry["excluded"]) == (
        "would_run",
        12,
        12,
        0,
        0,
    )
    assert dry["samples"]["to_add"] == ["CRM000001", "CRM000002"]
    async with api.rig.campaign.pool.acquire() as conn:
        assert await database_fingerprint(conn) == before
    assert await api.sent() == []


async def test_cancel_release_and_retry(api: Api) -> None:
    ledger = api.rig
    # A held run: 20 shared, a mirror of 2 would remove 18.
    await ledger.make_list("l", range(1, 21))
    await api.exporter.export(_request("l", "crm-ids", "append"))
    await ledger.confirm(await ledger.batches(expect=1))
    await ledger.make_list("l", range(1, 3))
    held = await api.exporter.export(_request("l", "crm-ids", "mirror"))
    assert held is not None
    status, _, done = await api.call("POST", f"/api/runs/{held}/release")
    assert status == 200, done
    assert (done["state"], done["counts"]["removed"]) == ("progress", 18)
    assert await ledger.campaign.pool.fetchval("SELECT released_by FROM run WHERE run_id = $1", held) == PRINCIPAL
    status, _, problem = await api.call("POST", f"/api/runs/{held}/release")
    assert (status, problem["title"]) == (409, "refused")

    status, _, done = await api.call("POST", f"/api/runs/{held}/cancel")
    assert (status, done["state"]) == (200, "cancelled")
    status, _, problem = await api.call("POST", f"/api/runs/{held}/cancel")
    assert status == 409
    assert "ended already" in problem["detail"]

    # A failed run (refused: the audience belongs to list l) asked for again.
    await ledger.make_list("other", range(5, 8))
    failed = await api.exporter.export(_request("other", "crm-ids", "append"))
    status, _, problem = await api.call("POST", f"/api/runs/{held}/retry")
    assert status == 409
    assert "only a failed export run" in problem["detail"]
    status, _, done = await api.call("POST", f"/api/runs/{failed}/retry")
    assert status == 202, done
    assert done["request_id"] == str(uuid.uuid5(RETRY_NAMESPACE, str(failed)))
    assert (await api.call("POST", f"/api/runs/{failed}/retry"))[2] == done  # retrying the retry: one request
    sent = await api.sent()
    assert {(str(r.request_id), r.list_id, r.requested_by) for r in sent} == {(done["request_id"], "other", PRINCIPAL)}


async def test_audiences_and_schedules(api: Api) -> None:
    await api.rig.make_list("l", range(1, 5))
    await api.exporter.export(_request("l", "crm-ids", "append"))
    async with api.rig.campaign.pool.acquire() as conn:
        await schedules.add_schedule(
            conn, schedules.NewSchedule("l", "VIP", "crm-ids", "mirror", Cadence(cron="0 */3 * * *"), "alice")
        )
    status, _, body = await api.call("GET", "/api/audiences")
    assert status == 200
    [audience] = body["audiences"]
    assert (audience["name"], audience["direction"], audience["list_name"], audience["last_state"]) == (
        "VIP",
        "export",
        "l",
        "progress",
    )
    status, _, body = await api.call("GET", "/api/schedules")
    assert status == 200
    [schedule] = body["schedules"]
    assert (schedule["audience"], schedule["cron"], schedule["every_s"], schedule["last_run_at"]) == (
        "VIP",
        "0 */3 * * *",
        None,
        None,
    )
    assert schedule["next_run_at"].endswith(":00:00Z") or schedule["next_run_at"].endswith("+00:00")
