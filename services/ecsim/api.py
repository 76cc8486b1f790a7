"""ecsim's HTTP surface: IMS, the AAM-style REST API under ``/v1``, and the ``/sim`` admin endpoints.

The paths mirror the platform's (``https://ims-na1.adobelogin.com/ims/token/v3`` and
``https://aam.adobe.io/v1/...``), so a client differs between ecsim and the platform only by its base
URLs. Handlers only translate HTTP to :class:`~services.ecsim.store.AamStore` calls; the REST
middleware does what every call shares: injected latency and faults, the bearer token and
``x-api-key`` checks, JSON error bodies, and counting.

REST error bodies (the platform's format is undocumented) are ``{"code", "message", "status"}``, plus
``details`` (``[{"field", "message"}]``) for invalid input.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web
from pydantic import ValidationError

from services.ecsim.admin_auth import sim_token_middleware
from services.ecsim.api_files import FilesAdmin
from services.ecsim.faults import Fault, FaultConfig
from services.ecsim.http_util import (
    _int,
    _json,
    _json_body,
    _list_params,
    _path_id,
    _path_ref,
    _query_bool,
    _query_int,
    error_response,
)
from services.ecsim.ims import ImsError, Principal, TokenRejected
from services.ecsim.realtime_api import RealtimeAdmin
from services.ecsim.simulator import Simulator
from services.ecsim.store import InvalidInput, StoreError
from shared.logging import get_logger

log = get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

IMS_TOKEN_PATH: Final = "/ims/token/v3"
REST_PREFIX: Final = "/v1"
ADMIN_PREFIX: Final = "/sim"
MAX_BODY_BYTES: Final = 8 * 1024 * 1024

PRINCIPAL: Final = web.RequestKey("principal", Principal)


def _fault_response(fault: Fault, *, ims: bool) -> web.Response:
    headers = {"Retry-After": str(fault.retry_after_s)} if fault.retry_after_s is not None else None
    if ims:
        return _json(
            {
                "error": "server_error" if fault.status >= 500 else "throttled",
                "error_description": "injected",
            },
            fault.status,
            headers,
        )
    return error_response(fault.status, "injected fault", headers)


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _www_authenticate(rejected: TokenRejected, token: str | None) -> str:
    if rejected.reason == "missing":
        return 'Bearer realm="oauth"'
    if rejected.reason == "expired":
        # As the platform documents it, the expired token is echoed: clients must never log this header.
        return f'Bearer realm="oauth", error="invalid_token", error_description="Access token expired: {token}"'
    return 'Bearer realm="oauth", error="invalid_token", error_description="Invalid access token"'


# --- the application -----------------------------------------------------------------------------------


class EcsimHttp:
    """Route handlers bound to one :class:`Simulator`."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.store = sim.store

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(IMS_TOKEN_PATH, self.ims_token)
        app.add_subapp(REST_PREFIX, self._rest_app())
        if self.sim.settings.ecsim_admin_enabled:
            app.add_subapp(ADMIN_PREFIX, self._admin_app())

    # --- IMS -------------------------------------------------------------------------------------------

    async def ims_token(self, request: web.Request) -> web.Response:
        faults = self.sim.faults
        if latency := faults.latency(ims=True):
            await asyncio.sleep(latency)
        if fault := faults.draw(ims=True):
            log.info("ecsim_fault_injected", path=request.path, status=fault.status)
            return _fault_response(fault, ims=True)
        # Like IMS, parameters may come in the query string or (recommended) the form body.
        params = dict(request.query.items())
        if request.content_type == "application/x-www-form-urlencoded":
            form = await request.post()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
        try:
            token = self.sim.tokens.issue(params)
        except ImsError as exc:
            log.warning("ecsim_token_refused", error=exc.error, status=exc.status)
            return _json(exc.body(), exc.status)
        log.info("ecsim_token_issued", client_id=params.get("client_id"), expires_in=token["expires_in"])
        return _json(token, headers={"Cache-Control": "no-store"})

    # --- REST ------------------------------------------------------------------------------------------

    def _rest_app(self) -> web.Application:
        app = web.Application(middlewares=[self._rest_middleware], client_max_size=MAX_BODY_BYTES)
        r = app.router
        for path in ("/datasources", "/datasources/"):
            r.add_get(path, self.list_datasources)
            r.add_post(path, self.create_datasource)
        r.add_get("/datasources/{id}", self.get_datasource)
        r.add_put("/datasources/{id}", self.update_datasource)
        r.add_delete("/datasources/{id}", self.delete_datasource)
        r.add_get("/datasources/{id}/history/inbound", self.inbound_history)
        for path in ("/traits", "/traits/"):
            r.add_get(path, self.list_traits)
            r.add_post(path, self.create_trait)
        r.add_get("/traits/{ref}", self.get_trait)
        r.add_put("/traits/{ref}", self.update_trait)
        r.add_delete("/traits/{ref}", self.delete_trait)
        for path in ("/segments", "/segments/"):
            r.add_get(path, self.list_segments)
            r.add_post(path, self.create_segment)
        r.add_get("/segments/{ref}", self.get_segment)
        r.add_put("/segments/{ref}", self.update_segment)
        r.add_delete("/segments/{ref}", self.delete_segment)
        for path in ("/destinations", "/destinations/"):
            r.add_get(path, self.list_destinations)
            r.add_post(path, self.create_destination)
        r.add_get("/destinations/{id}", self.get_destination)
        r.add_put("/destinations/{id}", self.update_destination)
        r.add_delete("/destinations/{id}", self.delete_destination)
        return app

    @web.middleware
    async def _rest_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await self._rest_call(request, handler)
        self.sim.rest_calls[response.status] += 1
        return response

    async def _rest_call(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        faults = self.sim.faults
        if latency := faults.latency(ims=False):
            await asyncio.sleep(latency)
        if fault := faults.draw(ims=False):
            log.info("ecsim_fault_injected", path=request.path, status=fault.status)
            return _fault_response(fault, ims=False)
        token = _bearer(request)
        try:
            principal = self.sim.tokens.check(token)
        except TokenRejected as exc:
            return error_response(
                401,
                {"missing": "missing access token", "expired": "access token expired"}.get(
                    exc.reason, "invalid access token"
                ),
                {"WWW-Authenticate": _www_authenticate(exc, token)},
            )
        if request.headers.get("x-api-key") != principal.client_id:
            return error_response(403, "x-api-key is missing or does not match the token's client")
        request[PRINCIPAL] = principal
        return await _answer(request, handler)

    def _uid(self, request: web.Request) -> int:
        return request[PRINCIPAL].uid

    # data sources

    async def list_datasources(self, request: web.Request) -> web.Response:
        listing = self.store.list_datasources(
            _list_params(request),
            integration_code=request.query.get("integrationCode") or None,
            inbound_only=_query_bool(request, "inboundOnly"),
            outbound_only=_query_bool(request, "outboundOnly"),
        )
        return _json(listing.body())

    async def create_datasource(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        return _json(self.store.create_datasource(body, uid=self._uid(request)), 201)

    async def get_datasource(self, request: web.Request) -> web.Response:
        return _json(self.store.get_datasource(_path_id(request)))

    async def update_datasource(self, request: web.Request) -> web.Response:
        ds_id = _path_id(request)
        body = await _json_body(request)
        return _json(self.store.update_datasource(ds_id, body, uid=self._uid(request)))

    async def delete_datasource(self, request: web.Request) -> web.Response:
        self.store.delete_datasource(_path_id(request))
        return web.Response(status=204)

    async def inbound_history(self, request: web.Request) -> web.Response:
        listing = self.store.inbound_history(
            _path_id(request),
            _list_params(request),
            data_file_name=request.query.get("dataFileName") or None,
        )
        return _json(listing.body())

    # traits

    async def list_traits(self, request: web.Request) -> web.Response:
        listing = self.store.list_traits(
            _list_params(request),
            integration_code=request.query.get("integrationCode") or None,
            data_source_ids=[_int(v, "dataSourceId") for v in request.query.getall("dataSourceId", [])],
            folder_id=_query_int(request, "folderId"),
            include_details=_query_bool(request, "includeDetails"),
        )
        return _json(listing.body())

    async def create_trait(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        return _json(self.store.create_trait(body, uid=self._uid(request)), 201)

    async def get_trait(self, request: web.Request) -> web.Response:
        ref = _path_ref(request)
        trait = self.store.get_trait(ref) if isinstance(ref, int) else self.store.get_trait_by_code(ref)
        return _json(trait)

    async def update_trait(self, request: web.Request) -> web.Response:
        ref = _path_ref(request)
        if not isinstance(ref, int):
            return error_response(405, "update a trait by its sid", {"Allow": "GET, DELETE"})
        body = await _json_body(request)
        return _json(self.store.update_trait(ref, body, uid=self._uid(request)))

    async def delete_trait(self, request: web.Request) -> web.Response:
        ref = _path_ref(request)
        sid = ref if isinstance(ref, int) else self.store.get_trait_by_code(ref)["sid"]
        self.store.delete_trait(sid)
        return web.Response(status=204)

    # segments

    async def list_segments(self, request: web.Request) -> web.Response:
        listing = self.store.list_segments(
            _list_params(request),
            integration_code=request.query.get("integrationCode") or None,
            data_source_ids=[_int(v, "dataSourceId") for v in request.query.getall("dataSourceId", [])],
            contains_trait=_query_int(request, "containsTrait"),
            status=request.query.get("status") or None,
            folder_id=_query_int(request, "folderId"),
        )
        return _json(listing.body())

    async def create_segment(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        return _json(self.store.create_segment(body, uid=self._uid(request)), 201)

    async def get_segment(self, request: web.Request) -> web.Response:
        ref = _path_ref(request)
        segment = self.store.get_segment(ref) if isinstance(ref, int) else self.store.get_segment_by_code(ref)
        return _json(segment)

    async def update_segment(self, request: web.Request) -> web.Response:
        ref = _path_ref(request)
        if not isinstance(ref, int):
            return error_response(405, "update a segment by its sid", {"Allow": "GET, DELETE"})
        body = await _json_body(request)
        return _json(self.store.update_segment(ref, body, uid=self._uid(request)))

    async def delete_segment(self, request: web.Request) -> web.Response:
        ref = _path_ref(request)
        sid = ref if isinstance(ref, int) else self.store.get_segment_by_code(ref)["sid"]
        self.store.delete_segment(sid)
        return web.Response(status=204)

    # destinations

    async def list_destinations(self, request: web.Request) -> web.Response:
        listing = self.store.list_destinations(
            _list_params(request), contains_segment=_query_int(request, "containsSegment")
        )
        return _json(listing.body())

    async def create_destination(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        return _json(self.store.create_destination(body, uid=self._uid(request)), 201)

    async def get_destination(self, request: web.Request) -> web.Response:
        return _json(self.store.get_destination(_path_id(request)))

    async def update_destination(self, request: web.Request) -> web.Response:
        dest_id = _path_id(request)
        body = await _json_body(request)
        return _json(self.store.update_destination(dest_id, body, uid=self._uid(request)))

    async def delete_destination(self, request: web.Request) -> web.Response:
        self.store.delete_destination(_path_id(request))
        return web.Response(status=204)

    # --- admin -----------------------------------------------------------------------------------------

    def _admin_app(self) -> web.Application:
        middlewares = [*sim_token_middleware(self.sim.settings), _admin_middleware]
        app = web.Application(middlewares=middlewares, client_max_size=64 * 1024 * 1024)
        r = app.router
        r.add_get("/state", self.admin_state)
        r.add_post("/reset", self.admin_reset)
        r.add_post("/seed", self.admin_seed)
        r.add_get("/faults", self.admin_get_faults)
        r.add_put("/faults", self.admin_set_faults)
        r.add_delete("/faults", self.admin_clear_faults)
        r.add_post("/tokens/expire", self.admin_expire_tokens)
        r.add_post("/datasources/{id}/receipts", self.admin_add_receipt)
        FilesAdmin(self.sim).add_routes(r)
        RealtimeAdmin(self.sim.settings, self.store, self.sim.members, self.sim.realtime).add_routes(r)
        return app

    async def admin_state(self, _: web.Request) -> web.Response:
        return _json(self.sim.state())

    async def admin_reset(self, _: web.Request) -> web.Response:
        self.sim.reset()
        log.info("ecsim_reset")
        return web.Response(status=204)

    async def admin_seed(self, request: web.Request) -> web.Response:
        created = self.store.seed(await _json_body(request), uid=self.sim.tokens.uid)
        log.info("ecsim_seeded", **{k: len(v) for k, v in created.items()})
        return _json(created, 201)

    async def admin_get_faults(self, _: web.Request) -> web.Response:
        return _json(self.sim.faults.state())

    async def admin_set_faults(self, request: web.Request) -> web.Response:
        config = FaultConfig.model_validate(await _json_body(request))
        self.sim.faults.configure(config)
        log.info("ecsim_faults_set", **config.model_dump())
        return _json(self.sim.faults.state())

    async def admin_clear_faults(self, _: web.Request) -> web.Response:
        self.sim.faults.configure(FaultConfig())
        return web.Response(status=204)

    async def admin_expire_tokens(self, _: web.Request) -> web.Response:
        expired = self.sim.tokens.expire_all()
        log.info("ecsim_tokens_expired", count=expired)
        return _json({"expired": expired})

    async def admin_add_receipt(self, request: web.Request) -> web.Response:
        ds_id = _path_id(request)
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise InvalidInput("a receipt is a JSON object")
        return _json(self.store.add_receipt(ds_id, body), 201)


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Run ``handler``; every refusal becomes the JSON error body, unexpected failures a logged 500."""
    try:
        return await handler(request)
    except StoreError as exc:
        return _json(exc.body(), exc.status)
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(p) for p in e["loc"]) or "<body>", "message": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        return _json({"code": "bad_request", "message": "invalid input", "status": 400, "details": details}, 400)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, exc.reason, headers)
    except Exception:
        log.exception("ecsim_handler_failed", method=request.method, path=request.path)
        return error_response(500, "internal error")


@web.middleware
async def _admin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    return await _answer(request, handler)


def build_http_app(sim: Simulator) -> web.Application:
    """ecsim's routes on a bare application (in-process tests; the service adds them to its own)."""
    app = web.Application()
    EcsimHttp(sim).add_routes(app)
    return app
