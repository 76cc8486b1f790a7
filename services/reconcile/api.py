"""reconcile's HTTP API for workflow engines that do not speak Kafka (README "HTTP API").

``POST /api/exports`` puts an ordinary export request on ``audience-export-requests`` (idempotent by its
request id: the id is recorded in ``export_request`` before it is sent, and the same id with another export
is refused); ``GET /api/runs/{id}`` follows it (a run id, or the request id until its run exists);
``POST /api/exports/dry-run`` computes the run without recording anything
(:mod:`services.reconcile.export_dry_run`); release, cancel and retry act on a run as the CLI does;
``GET /api/audiences`` and ``GET /api/schedules`` list. Bodies are :mod:`services.reconcile.api_models`
(schemas/openapi.yaml is generated from them); errors are problem details
(:mod:`services.reconcile.api_problems`). Authentication is the service's (the status page's credentials):
the authenticated user is who asks, releases or cancels.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import asyncpg
import orjson
from aiohttp import web
from pydantic import BaseModel

from services.reconcile import api_queries as queries
from services.reconcile.api_models import ActionDone, AudienceList, DryRunSamples, DryRunView, ExportBody
from services.reconcile.api_problems import Conflict, NotFound, json_body, problems
from services.reconcile.export_dry_run import dry_run
from services.reconcile.export_guard import ExportGuards
from services.reconcile.export_release import release_export
from services.reconcile.exporting import Exporter
from services.reconcile.run_cancel import cancel_run
from services.reconcile.schedules import list_schedules
from shared.db import acquire
from shared.http_auth import principal_of
from shared.kafka import OutgoingMessage, Producer
from shared.logging import get_logger
from shared.messages import AudienceExportRequest
from shared.runs.reporter import RunReporter

log = get_logger(__name__)

RETRY_NAMESPACE: Final = uuid.UUID("2b4f6d8e-1a3c-4e5f-8a9b-0c1d2e3f4a5b")


@dataclass(frozen=True, slots=True)
class ApiDeps:
    """What the handlers use; the pool and the exporter exist once the service has connected."""

    pool: Callable[[], asyncpg.Pool | None]
    exporter: Callable[[], Exporter | None]
    producer: Producer
    reporter: RunReporter
    requests_topic: str
    guards: ExportGuards
    allow_undeclared: bool = False
    sample_size: int = 10
    work_mem_mb: int = 256


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(model.model_dump(mode="json")),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _uuid(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["id"])
    except ValueError:
        raise NotFound("no run with this id (a run id or request id is a UUID)", id=request.match_info["id"]) from None


async def _export_request(request: web.Request) -> AudienceExportRequest:
    """The body as the export request it asks for, on behalf of the authenticated user."""
    body = ExportBody.model_validate(await json_body(request))
    return AudienceExportRequest(
        request_id=body.request_id or uuid.uuid4(),
        list_id=body.list,
        audience_name=body.audience,
        data_source=body.data_source,
        mode=body.mode,
        requested_by=principal_of(request),
        requested_via="api",
    )


def run_url(any_id: uuid.UUID) -> str:
    return f"/api/runs/{any_id}"


class WorkflowApi:
    def __init__(self, deps: ApiDeps) -> None:
        self._deps = deps

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/exports", problems(self.request_export))
        app.router.add_post("/api/exports/dry-run", problems(self.dry_run))
        app.router.add_get("/api/runs/{id}", problems(self.get_run))
        app.router.add_post("/api/runs/{id}/release", problems(self.release))
        app.router.add_post("/api/runs/{id}/cancel", problems(self.cancel))
        app.router.add_post("/api/runs/{id}/retry", problems(self.retry))
        app.router.add_get("/api/audiences", problems(self.audiences))
        app.router.add_get("/api/schedules", problems(self.schedules))

    def _pool(self) -> asyncpg.Pool:
        pool = self._deps.pool()
        if pool is None:
            raise web.HTTPServiceUnavailable(reason="starting", text="the database is not connected yet")
        return pool

    def _exporter(self) -> Exporter:
        exporter = self._deps.exporter()
        if exporter is None:
            raise web.HTTPServiceUnavailable(reason="starting", text="reconcile is still starting")
        return exporter

    async def _send(self, conn: Any, export: AudienceExportRequest) -> None:
        """Record the request id (refusing one already used for another export), then put it on Kafka.
        Sending a known request again is harmless: the exporter handles a request id once."""
        await queries.record_request(conn, export)
        await self._deps.producer.send([OutgoingMessage.of(self._deps.requests_topic, export)])
        log.info("api_export_requested", request_id=str(export.request_id), requested_by=export.requested_by)

    async def request_export(self, request: web.Request) -> web.Response:
        export = await _export_request(request)
        async with acquire(self._pool()) as conn:
            await self._send(conn, export)
            accepted = await queries.accepted(conn, export.request_id, run_url(export.request_id))
        return _json(accepted, status=202 if accepted.run_id is None else 200)

    async def dry_run(self, request: web.Request) -> web.Response:
        export = await _export_request(request)
        deps = self._deps
        async with acquire(self._pool()) as conn:
            result = await dry_run(
                conn,
                export,
                deps.guards,
                sample=deps.sample_size,
                allow_undeclared=deps.allow_undeclared,
                work_mem_mb=deps.work_mem_mb,
            )
        view = DryRunView(
            audience_id=result.audience_id,
            list_id=result.list_id,
            mode=result.mode,
            verdict=result.verdict,
            reason=result.reason,
            **result.counts(),
            samples=DryRunSamples(**{part: result.samples.get(part, []) for part in DryRunSamples.model_fields}),
        )
        return _json(view)

    async def get_run(self, request: web.Request) -> web.Response:
        async with acquire(self._pool()) as conn:
            return _json(await queries.run_view(conn, _uuid(request)))

    async def release(self, request: web.Request) -> web.Response:
        outcome = await release_export(self._exporter(), self._pool(), _uuid(request), principal_of(request))
        return _json(ActionDone(run_id=outcome.run_id, state=outcome.state, counts=dict(outcome.counts)))

    async def cancel(self, request: web.Request) -> web.Response:
        async with acquire(self._pool()) as conn:
            outcome = await cancel_run(conn, _uuid(request), principal_of(request))
        await self._deps.reporter.report(outcome)
        return _json(ActionDone(run_id=outcome.run_id, state=outcome.state, counts=dict(outcome.counts)))

    async def retry(self, request: web.Request) -> web.Response:
        """A failed export run asked for again: a new request of the same export, diffed now, with an id
        derived from the run (retrying the retry asks for one export)."""
        run_id = _uuid(request)
        async with acquire(self._pool()) as conn:
            original = await queries.failed_export_request(conn, run_id)
            export = original.model_copy(
                update={
                    "request_id": uuid.uuid5(RETRY_NAMESPACE, str(run_id)),
                    "requested_by": principal_of(request),
                    "requested_via": "api",
                }
            )
            await self._send(conn, export)
        url = run_url(export.request_id)
        return _json(ActionDone(run_id=run_id, state="requested", request_id=export.request_id, run_url=url), 202)

    async def audiences(self, _: web.Request) -> web.Response:
        async with acquire(self._pool()) as conn:
            return _json(AudienceList(audiences=await queries.audiences(conn)))

    async def schedules(self, _: web.Request) -> web.Response:
        async with acquire(self._pool()) as conn:
            found = await list_schedules(conn)
        return _json(queries.schedule_list(found))


__all__ = ["ApiDeps", "Conflict", "WorkflowApi"]
