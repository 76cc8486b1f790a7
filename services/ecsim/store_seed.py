"""Seeding ecsim's store: the objects a test or a local setup provisions in one payload, with the ids the
platform would have handed out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from services.ecsim.store_errors import InvalidInput, Json

if TYPE_CHECKING:
    from services.ecsim.store import AamStore

SEED_KEYS = frozenset({"datasources", "traits", "segments", "destinations", "receipts"})


def seed_store(store: AamStore, payload: Any, *, uid: int = 0) -> Json:
    """Create objects from ``{"datasources": [...], "traits": [...], "segments": [...],
    "destinations": [...], "receipts": {"<dataSourceId>": [...]}}``, in that order.

    Ids given in the objects (``dataSourceId``, ``sid``, ``destinationId``) are kept, so tests and
    local setups can provision the ids the platform would have handed out; server-to-server
    destinations can only be made this way. Stops at the first invalid object (earlier ones stay).
    """
    if not isinstance(payload, Mapping):
        raise InvalidInput("the seed must be a JSON object")
    unknown = set(payload) - SEED_KEYS
    if unknown:
        raise InvalidInput(f"unknown seed keys: {sorted(unknown)}")
    created: Json = {"datasources": [], "traits": [], "segments": [], "destinations": []}
    for body in _seed_list(payload, "datasources"):
        created["datasources"].append(
            store.create_datasource(body, uid=uid, data_source_id=_opt_id(body, "dataSourceId"))
        )
    for body in _seed_list(payload, "traits"):
        created["traits"].append(store.create_trait(body, uid=uid, sid=_opt_id(body, "sid")))
    for body in _seed_list(payload, "segments"):
        created["segments"].append(store.create_segment(body, uid=uid, sid=_opt_id(body, "sid")))
    for body in _seed_list(payload, "destinations"):
        created["destinations"].append(
            store.create_destination(body, uid=uid, destination_id=_opt_id(body, "destinationId"), via_api=False)
        )
    receipts = payload.get("receipts") or {}
    if not isinstance(receipts, Mapping):
        raise InvalidInput("receipts must map a data source id to a list of receipts")
    for dpid, items in receipts.items():
        for receipt in items if isinstance(items, list) else []:
            store.add_receipt(_as_int(dpid, "receipts"), receipt)
    return created


def _seed_list(payload: Mapping[str, Any], key: str) -> list[Any]:
    items = payload.get(key) or []
    if not isinstance(items, list):
        raise InvalidInput(f"{key} must be a list")
    return items


def _as_int(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{what}: {value!r} is not an id") from None


def _opt_id(body: Any, key: str) -> int | None:
    if isinstance(body, Mapping) and body.get(key) is not None:
        return _as_int(body[key], key)
    return None
