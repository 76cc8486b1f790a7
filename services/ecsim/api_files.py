"""ecsim's admin endpoints for the file side (under ``/sim``, served only with ``ECSIM_ADMIN_ENABLED``).

* ``POST /sim/inbound/scan``: process every file now in the export zone; ``{"files": [receipts]}``
  (503 when the zone is unavailable). ``GET /sim/inbound``: counts, pending moves, latest receipts (also
  those of unknown data sources).
* ``GET``/``PUT``/``DELETE /sim/inbound/faults``: processing delay, hold, whole-file and per-line
  rejections (body: :class:`~services.ecsim.inbound_faults.InboundFaultRequest`).
* ``GET /sim/profiles/{user_id}``: ``{"userId", "dataSources": {"<dpid>": [trait ids]}}``, 404 if unknown.
* ``GET /sim/traits/{sid}/members``: ``{"sid", "count"}``; with ``ids=true`` also ``ids`` (sorted,
  paged by ``page``/``pageSize``).
* ``GET``/``POST /sim/segments/{sid}/members``: read or change (``{"add", "remove", "replace",
  "idType"}``) a segment's members.
* ``POST /sim/population``: fill segments from a synthetic population (body: ``PopulationSpec``);
  ``GET`` shows the current spec.
* ``POST /sim/deliveries``: write an outbound batch (body: ``DeliveryRequest``, strict by default or in a
  documented variant: ``DeliveryVariants``); ``GET`` lists the latest.
* ``GET /sim/dropzones``: both zones' URLs and fault state; ``PUT``/``DELETE /sim/dropzones/faults``
  makes zones unavailable for a while: ``{"zone": "export"|"import"|"both", "seconds": 2}``.
"""

from __future__ import annotations

import asyncio
from typing import Final, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from services.ecsim.deliveries import DeliveryRequest
from services.ecsim.http_util import _json, _json_body, _path_id, _query_bool, _query_int
from services.ecsim.inbound_faults import InboundFaultRequest
from services.ecsim.segments import check_id_type, population_members
from services.ecsim.simulator import Simulator
from services.ecsim.store import InvalidInput, StoreNotFound, id_type_of
from services.ecsim.zones import ZoneName
from shared.dropzone import DropZoneUnavailable
from shared.ids import IdType
from shared.logging import get_logger
from shared.population import Population, PopulationSpec

log = get_logger(__name__)

DEFAULT_MEMBERS_PAGE: Final = 1000


class ZoneFaultRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    zone: Literal["export", "import", "both"] = "both"
    seconds: float = Field(gt=0, le=3600, description="Unavailable for this long from now.")


class MembersChange(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    add: list[str] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)
    replace: bool = False
    id_type: Literal["ecid", "declared"] | None = Field(None, alias="idType")


def _page(request: web.Request, ids: list[str]) -> tuple[list[str], int, int]:
    page = _query_int(request, "page") or 0
    size = _query_int(request, "pageSize") or DEFAULT_MEMBERS_PAGE
    if page < 0 or size < 1:
        raise InvalidInput("page must be >= 0 and pageSize >= 1")
    return ids[page * size : (page + 1) * size], page, size


class FilesAdmin:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def add_routes(self, r: web.UrlDispatcher) -> None:
        r.add_post("/inbound/scan", self.scan)
        r.add_get("/inbound", self.inbound_state)
        r.add_get("/inbound/faults", self.inbound_faults)
        r.add_put("/inbound/faults", self.set_inbound_faults)
        r.add_delete("/inbound/faults", self.clear_inbound_faults)
        r.add_get("/profiles/{user_id}", self.profile)
        r.add_get("/traits/{id}/members", self.trait_members)
        r.add_get("/segments/{id}/members", self.segment_members)
        r.add_post("/segments/{id}/members", self.change_segment_members)
        r.add_get("/population", self.get_population)
        r.add_post("/population", self.set_population)
        r.add_get("/deliveries", self.list_deliveries)
        r.add_post("/deliveries", self.deliver)
        r.add_get("/dropzones", self.dropzones)
        r.add_put("/dropzones/faults", self.set_zone_fault)
        r.add_delete("/dropzones/faults", self.clear_zone_fault)

    # --- inbound ---------------------------------------------------------------------------------------

    async def scan(self, _: web.Request) -> web.Response:
        try:
            files = await self.sim.inbound.scan()
        except DropZoneUnavailable as exc:
            return _json({"code": "dropzone_unavailable", "message": exc.message, "status": 503}, 503)
        return _json({"files": files})

    async def inbound_state(self, request: web.Request) -> web.Response:
        limit = _query_int(request, "limit") or 100
        recent = list(self.sim.inbound.recent)[-limit:]
        return _json({**self.sim.inbound.state(), "receipts": recent})

    async def inbound_faults(self, _: web.Request) -> web.Response:
        return _json(self.sim.inbound.schedule.state())

    async def set_inbound_faults(self, request: web.Request) -> web.Response:
        faults = InboundFaultRequest.model_validate(await _json_body(request))
        self.sim.inbound.schedule.set_faults(faults)
        log.warning("ecsim_inbound_faults_set", **faults.model_dump())
        return _json(self.sim.inbound.schedule.state())

    async def clear_inbound_faults(self, _: web.Request) -> web.Response:
        self.sim.inbound.schedule.clear()
        return _json(self.sim.inbound.schedule.state())

    async def profile(self, request: web.Request) -> web.Response:
        user_id = request.match_info["user_id"]
        found = self.sim.profiles.profile(user_id)
        if not found:
            raise StoreNotFound("no profile holds this user id")
        return _json({"userId": user_id, "dataSources": {str(k): v for k, v in found.items()}})

    async def trait_members(self, request: web.Request) -> web.Response:
        sid = _path_id(request)
        body: dict[str, object] = {"sid": sid, "count": self.sim.profiles.member_count(sid)}
        if _query_bool(request, "ids"):
            ids = sorted(self.sim.profiles.members(sid))
            body["ids"], body["page"], body["pageSize"] = _page(request, ids)
        return _json(body)

    # --- segments ----------------------------------------------------------------------------------------

    def _segment_id_type(self, sid: int, requested: object) -> IdType:
        segment = self.sim.store.segments.get(sid)
        if requested is not None:
            return check_id_type(requested)
        return id_type_of(self.sim.store.datasources.items.get(segment["dataSourceId"]))

    async def segment_members(self, request: web.Request) -> web.Response:
        sid = _path_id(request)
        id_type = self._segment_id_type(sid, request.query.get("idType"))
        body: dict[str, object] = {"sid": sid, "idType": id_type, "count": self.sim.members.count(sid, id_type)}
        if _query_bool(request, "ids"):
            body["ids"], body["page"], body["pageSize"] = _page(request, self.sim.members.ids(sid, id_type))
        return _json(body)

    async def change_segment_members(self, request: web.Request) -> web.Response:
        sid = _path_id(request)
        change = MembersChange.model_validate(await _json_body(request))
        id_type = self._segment_id_type(sid, change.id_type)
        joined, left = self.sim.members.change(
            sid, id_type, add=change.add, remove=change.remove, replace=change.replace
        )
        count = self.sim.members.count(sid, id_type)
        log.info("ecsim_segment_members_changed", sid=sid, id_type=id_type, joined=joined, left=left, count=count)
        return _json({"sid": sid, "idType": id_type, "joined": joined, "left": left, "count": count})

    async def get_population(self, _: web.Request) -> web.Response:
        spec = self.sim.population
        return _json(None if spec is None else spec.model_dump())

    async def set_population(self, request: web.Request) -> web.Response:
        spec = PopulationSpec.model_validate(await _json_body(request))
        targets = [s for s in spec.segments if s.sid is not None]
        for s in targets:
            assert s.sid is not None
            self.sim.store.segments.get(s.sid)  # 404 before any work
        population = Population(spec)
        summary = []
        for s in targets:
            assert s.sid is not None
            # Hashing a million IDs takes seconds: not on the event loop.
            ecids, declared = await asyncio.to_thread(population_members, population, s.name)
            self.sim.members.load(s.sid, ecids, declared)
            summary.append(
                {"sid": s.sid, "name": s.name, "profiles": s.size, "ecids": len(ecids), "declared": len(declared)}
            )
        self.sim.population = spec
        log.info("ecsim_population_loaded", seed=spec.seed, recipients=spec.recipients, segments=len(summary))
        return _json(
            {
                "recipients": spec.recipients,
                "knownRecipients": population.known_count,
                "profiles": population.profile_count,
                "segments": summary,
            },
            201,
        )

    # --- deliveries --------------------------------------------------------------------------------------

    async def deliver(self, request: web.Request) -> web.Response:
        body = DeliveryRequest.model_validate(await _json_body(request))
        return _json(await self.sim.deliveries.deliver(body), 201)

    async def list_deliveries(self, _: web.Request) -> web.Response:
        return _json(list(self.sim.deliveries.history))

    # --- drop-zone faults --------------------------------------------------------------------------------

    async def dropzones(self, _: web.Request) -> web.Response:
        return _json(self.sim.zones_state())

    async def set_zone_fault(self, request: web.Request) -> web.Response:
        fault = ZoneFaultRequest.model_validate(await _json_body(request))
        names: list[ZoneName] = ["export", "import"] if fault.zone == "both" else [fault.zone]
        for name in names:
            self.sim.zone_faults[name].set(fault.seconds)
        log.info("ecsim_dropzone_fault_set", zones=names, seconds=fault.seconds)
        return _json(self.sim.zones_state())

    async def clear_zone_fault(self, _: web.Request) -> web.Response:
        for fault in self.sim.zone_faults.values():
            fault.clear()
        return web.Response(status=204)
