"""ecsim's admin endpoints for real-time outbound transfers (under ``/sim``, served only with
``ECSIM_ADMIN_ENABLED``).

* ``POST /sim/realtime/members``: change a segment's members (``{"destinationId", "segmentId", "add",
  "remove"}``, IDs of the destination's ID type) and send each named user's new status (``1`` added, ``0``
  removed) to the destination's partner, 1-10 users a POST (``usersPerMessage``), signed, 3 s timeout, one
  retry. Answers the membership change and each POST's outcome.
* ``POST /sim/realtime/deliveries``: send one delivery as given (``{"body": {...}}`` or ``{"rawBody": "..."}``),
  signed unless ``signature`` is given (sent as is) or ``unsigned`` is true: the documentation's sample, a
  wrong signature, a malformed body. ``bearerToken`` adds ``Authorization: Bearer`` (the OAuth 2.0 way).
* ``GET /sim/realtime``: counts (messages, attempts, delivered, failed) and the latest sends.

Where deliveries go and how they are signed comes from ``ECSIM_REALTIME_*``; each request may override it
(``url``, ``signingKey``, ``signatureHeader``, ``algorithm``).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from services.ecsim.http_util import _json, _json_body
from services.ecsim.realtime import MAX_USERS_PER_MESSAGE, RealtimeSender, RealtimeTarget, user_changes
from services.ecsim.segments import SegmentMembers
from services.ecsim.settings import EcsimSettings
from services.ecsim.store import AamStore, InvalidInput, id_type_of
from shared.formats.realtime_signature import SignatureAlgorithm


class _TargetFields(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    url: str | None = Field(None, description="The partner's endpoint (default: ECSIM_REALTIME_URL).")
    signing_key: str | None = Field(None, description="Default: ECSIM_REALTIME_SIGNING_KEY.")
    signature_header: str | None = None
    algorithm: SignatureAlgorithm | None = None
    unsigned: bool = Field(False, description="Send no signature header at all.")
    bearer_token: str | None = Field(None, description="Also send Authorization: Bearer <token> (OAuth 2.0).")


class MembersRequest(_TargetFields):
    destination_id: int = Field(ge=0)
    segment_id: int = Field(ge=0)
    add: list[str] = Field(default_factory=list, max_length=100_000)
    remove: list[str] = Field(default_factory=list, max_length=100_000)
    users_per_message: int = Field(MAX_USERS_PER_MESSAGE, ge=1, le=MAX_USERS_PER_MESSAGE)


class DeliveryRequest(_TargetFields):
    body: Any = None
    raw_body: str | None = None
    signature: str | None = Field(None, description="Sent as is instead of the computed signature.")


class RealtimeAdmin:
    def __init__(self, settings: EcsimSettings, store: AamStore, members: SegmentMembers, sender: RealtimeSender):
        self._settings = settings
        self._store = store
        self._members = members
        self._sender = sender

    def add_routes(self, r: web.UrlDispatcher) -> None:
        r.add_get("/realtime", self.state)
        r.add_post("/realtime/members", self.change_members)
        r.add_post("/realtime/deliveries", self.send_delivery)

    async def state(self, _: web.Request) -> web.Response:
        return _json(self._sender.state())

    def _target(self, request: _TargetFields) -> RealtimeTarget:
        s = self._settings
        url = request.url or s.ecsim_realtime_url
        if not url:
            raise InvalidInput("no partner URL: give url or set ECSIM_REALTIME_URL")
        key = request.signing_key
        if key is None and s.ecsim_realtime_signing_key is not None:
            key = s.ecsim_realtime_signing_key.get_secret_value()
        return RealtimeTarget(
            url=url,
            key=None if request.unsigned or key is None else key.encode(),
            header=request.signature_header or s.ecsim_realtime_signature_header,
            algorithm=request.algorithm or s.ecsim_realtime_signature_algorithm,
            bearer=request.bearer_token,
        )

    async def change_members(self, request: web.Request) -> web.Response:
        change = MembersRequest.model_validate(await _json_body(request))
        target = self._target(change)
        destination = self._store.destinations.get(change.destination_id)
        master_ref = destination.get("masterDataSourceId", destination.get("dataSourceId"))
        master = 0 if master_ref is None else int(master_ref)
        id_type = id_type_of(self._store.datasources.items.get(master))
        added, removed = self._members.change(change.segment_id, id_type, add=change.add, remove=change.remove)
        statuses = dict.fromkeys(change.add, True) | dict.fromkeys(change.remove, False)
        users = [user_changes(user, id_type, {change.segment_id: active}) for user, active in statuses.items()]
        results = await self._sender.deliver(
            target,
            user_dpid=master,
            destination_id=change.destination_id,
            users=users,
            per_message=change.users_per_message,
        )
        return _json(
            {
                "added": added,
                "removed": removed,
                "messages": [r.as_json() for r in results],
                "failed": sum(1 for r in results if not r.ok),
            }
        )

    async def send_delivery(self, request: web.Request) -> web.Response:
        delivery = DeliveryRequest.model_validate(await _json_body(request))
        if (delivery.body is None) == (delivery.raw_body is None):
            raise InvalidInput("give either body (JSON) or rawBody (text)")
        target = self._target(delivery)
        payload = delivery.raw_body.encode() if delivery.raw_body is not None else orjson.dumps(delivery.body)
        result = await self._sender.send(target, payload, signature=delivery.signature)
        return _json(result.as_json())
