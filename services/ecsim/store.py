"""ecsim's state: the platform's objects in memory, with the platform's validation rules, no HTTP.

Objects are plain JSON dicts shaped as the REST API returns them (camelCase keys, epoch-millisecond
times). Every read returns a copy, so callers can never change the state behind the store's back.
Indexes by integration code, data source and trait keep lookups and filtered lists cheap at the
platform's object limits (100,000 traits, 20,000 segments).

Choices where the platform's contract is silent (documented in the contract as [UNCONF]):

* integration codes are unique per object kind across the whole store (``/traits/ic:<code>`` names
  one trait), and a duplicate is a 409;
* a data source, trait or destination still referenced elsewhere cannot be deleted (409 ``in_use``);
* the default list order is ascending id;
* reaching an object limit is a 400 ``limit_exceeded``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from services.ecsim import rules
from services.ecsim.store_errors import (
    InUse,
    InvalidInput,
    Json,
    LimitExceeded,
    ReadOnly,
    StoreConflict,
    StoreError,
    StoreNotFound,
)
from services.ecsim.store_inputs import (
    DataSourceInput,
    DestinationInput,
    SegmentInput,
    TraitInput,
    _copy,
    _new,
    _validate,
)
from services.ecsim.store_listing import (
    DEFAULT_PAGE_SIZE,
    Listing,
    ListParams,
    _Collection,
)
from services.ecsim.store_receipts import ReceiptLog
from services.ecsim.store_seed import seed_store
from shared.ids import IdType

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "AamStore",
    "InUse",
    "InvalidInput",
    "Json",
    "LimitExceeded",
    "Limits",
    "ListParams",
    "Listing",
    "ReadOnly",
    "StoreConflict",
    "StoreError",
    "StoreNotFound",
    "id_type_of",
    "now_ms",
]

# Fields a trait list leaves out unless asked for with includeDetails=true.
TRAIT_DETAIL_FIELDS: Final = ("ttl", "integrationCode", "comments", "traitRule", "traitRuleVersion")
S2S: Final = "S2S"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def id_type_of(datasource: Mapping[str, Any] | None) -> IdType:
    """Which IDs a data source's files carry: a ``COOKIE`` data source holds Experience Cloud IDs (38
    digits); ``CROSS_DEVICE`` and ``DEVICE_ADVERTISING_ID`` ones hold declared IDs. No data source (the
    platform's own DPID 0, AAM UUIDs) means ECIDs."""
    if datasource is None or datasource.get("idType") == "COOKIE":
        return "ecid"
    return "declared"


@dataclass(frozen=True, slots=True)
class Limits:
    """The platform's object-count limits (usage-limits page)."""

    traits: int = 100_000
    segments: int = 20_000
    destinations: int = 1_000
    s2s_destinations: int = 100
    datasources: int = 100_000


class AamStore:
    """Data sources, traits, segments, destinations and inbound processing receipts, in memory."""

    def __init__(
        self, *, partner_id: int = 1352, clock: Callable[[], int] = now_ms, limits: Limits | None = None
    ) -> None:
        self.partner_id = partner_id
        self._clock = clock
        self.limits = limits or Limits()
        self.reset()

    def reset(self) -> None:
        """Forget every object and receipt."""
        limits = self.limits
        self.datasources = _Collection("data source", "dataSourceId", 100001, limits.datasources)
        self.traits = _Collection("trait", "sid", 200001, limits.traits)
        self.segments = _Collection("segment", "sid", 300001, limits.segments)
        self.destinations = _Collection("destination", "destinationId", 400001, limits.destinations)
        self._traits_by_ds: dict[int, set[int]] = {}
        self._segments_by_ds: dict[int, set[int]] = {}
        self._segments_by_trait: dict[int, set[int]] = {}
        self._receipts = ReceiptLog(self._clock)

    def _stamp(self, obj: Json, uid: int, *, created: Json | None = None) -> Json:
        now = self._clock()
        obj["pid"] = self.partner_id
        obj["createTime"] = created["createTime"] if created else now
        obj["updateTime"] = now
        obj["crUID"] = created["crUID"] if created else uid
        obj["upUID"] = uid
        return obj

    # --- data sources ----------------------------------------------------------------------------------

    def create_datasource(self, body: Any, *, uid: int = 0, data_source_id: int | None = None) -> Json:
        data = _validate(DataSourceInput, body, "data source")
        coll = self.datasources
        coll.check_limit()
        coll.check_code(data.integration_code)
        obj = _new("dataSourceId", coll.allocate(data_source_id), data)
        coll.insert(self._stamp(obj, uid))
        return _copy(obj)

    def get_datasource(self, data_source_id: int) -> Json:
        return _copy(self.datasources.get(data_source_id))

    def update_datasource(self, data_source_id: int, body: Any, *, uid: int = 0) -> Json:
        coll = self.datasources
        current = coll.get(data_source_id)
        data = _validate(DataSourceInput, body, "data source")
        coll.check_code(data.integration_code, owner=data_source_id)
        obj = self._stamp(_new("dataSourceId", data_source_id, data), uid, created=current)
        coll.replace(obj)
        return _copy(obj)

    def delete_datasource(self, data_source_id: int) -> None:
        self.datasources.get(data_source_id)
        users = {
            "traits": len(self._traits_by_ds.get(data_source_id, ())),
            "segments": len(self._segments_by_ds.get(data_source_id, ())),
            "destinations": sum(1 for d in self.destinations.items.values() if d.get("dataSourceId") == data_source_id),
        }
        if any(users.values()):
            used_by = ", ".join(f"{n} {kind}" for kind, n in users.items() if n)
            raise InUse(f"data source {data_source_id} is still used by {used_by}", dataSourceId=data_source_id)
        self.datasources.remove(data_source_id)
        self._receipts.forget(data_source_id)

    def list_datasources(
        self,
        params: ListParams = ListParams(),
        *,
        integration_code: str | None = None,
        inbound_only: bool = False,
        outbound_only: bool = False,
    ) -> Listing:
        ids = self._ids_by_code(self.datasources, integration_code)
        where = None
        if inbound_only or outbound_only:

            def where(o: Json) -> bool:
                return (not inbound_only or o["inboundS2S"]) and (not outbound_only or o["outboundS2S"])

        return self.datasources.select(params, ids=ids, where=where)

    # --- traits ----------------------------------------------------------------------------------------

    def _check_trait(self, data: TraitInput) -> None:
        if data.data_source_id not in self.datasources.items:
            raise InvalidInput(
                f"data source {data.data_source_id} does not exist",
                details=[{"field": "dataSourceId", "message": "unknown data source"}],
            )
        if data.trait_type == "RULE_BASED_TRAIT" and not (data.trait_rule or "").strip():
            raise InvalidInput(
                "a rule-based trait needs a traitRule",
                details=[{"field": "traitRule", "message": "required for RULE_BASED_TRAIT"}],
            )

    def create_trait(self, body: Any, *, uid: int = 0, sid: int | None = None) -> Json:
        data = _validate(TraitInput, body, "trait")
        coll = self.traits
        coll.check_limit()
        self._check_trait(data)
        coll.check_code(data.integration_code)
        obj = _new("sid", coll.allocate(sid), data, traitRuleVersion=1)
        coll.insert(self._stamp(obj, uid))
        self._traits_by_ds.setdefault(data.data_source_id, set()).add(obj["sid"])
        return _copy(obj)

    def get_trait(self, sid: int) -> Json:
        return _copy(self.traits.get(sid))

    def get_trait_by_code(self, code: str) -> Json:
        return _copy(self.traits.by_integration_code(code))

    def update_trait(self, sid: int, body: Any, *, uid: int = 0) -> Json:
        coll = self.traits
        current = coll.get(sid)
        data = _validate(TraitInput, body, "trait")
        self._check_trait(data)
        coll.check_code(data.integration_code, owner=sid)
        version = current["traitRuleVersion"] + (data.trait_rule != current["traitRule"])
        obj = _new("sid", sid, data, traitRuleVersion=version)
        coll.replace(self._stamp(obj, uid, created=current))
        self._traits_by_ds[current["dataSourceId"]].discard(sid)
        self._traits_by_ds.setdefault(data.data_source_id, set()).add(sid)
        return _copy(obj)

    def delete_trait(self, sid: int) -> None:
        trait = self.traits.get(sid)
        if segments := self._segments_by_trait.get(sid):
            raise InUse(f"trait {sid} is used by segments", sid=sid, segments=sorted(segments)[:20])
        self.traits.remove(sid)
        self._traits_by_ds[trait["dataSourceId"]].discard(sid)

    def trait_ids_of(self, data_source_id: int, *, trait_type: str | None = None) -> frozenset[int]:
        """Sids of the data source's traits (of ``trait_type`` only, when given); no copies of objects."""
        sids = self._traits_by_ds.get(data_source_id, ())
        if trait_type is None:
            return frozenset(sids)
        return frozenset(s for s in sids if self.traits.items[s]["traitType"] == trait_type)

    def list_traits(
        self,
        params: ListParams = ListParams(),
        *,
        integration_code: str | None = None,
        data_source_ids: Iterable[int] = (),
        folder_id: int | None = None,
        include_details: bool = False,
    ) -> Listing:
        ids = self._ids_by_code(self.traits, integration_code)
        ids = self._narrow(ids, self._traits_by_ds, data_source_ids)
        where = None if folder_id is None else (lambda o: o["folderId"] == folder_id)

        def view(obj: Json) -> Json:
            out = _copy(obj)
            if not include_details:
                for key in TRAIT_DETAIL_FIELDS:
                    out.pop(key, None)
            return out

        return self.traits.select(params, ids=ids, where=where, view=view)

    # --- segments --------------------------------------------------------------------------------------

    def _segment_traits(self, data: SegmentInput) -> set[int]:
        if data.data_source_id not in self.datasources.items:
            raise InvalidInput(
                f"data source {data.data_source_id} does not exist",
                details=[{"field": "dataSourceId", "message": "unknown data source"}],
            )
        try:
            referenced = set(rules.trait_ids(data.segment_rule))
        except rules.RuleError as exc:
            raise InvalidInput("invalid segmentRule", details=[{"field": "segmentRule", "message": str(exc)}]) from None
        unknown = sorted(t for t in referenced if t not in self.traits.items)
        if unknown:
            raise InvalidInput(
                "segmentRule names traits that do not exist",
                details=[{"field": "segmentRule", "message": f"unknown traits: {unknown[:20]}"}],
            )
        return referenced

    def _index_segment(self, sid: int, data_source_id: int, traits: Iterable[int], add: bool) -> None:
        if add:
            self._segments_by_ds.setdefault(data_source_id, set()).add(sid)
            for t in traits:
                self._segments_by_trait.setdefault(t, set()).add(sid)
        else:
            self._segments_by_ds[data_source_id].discard(sid)
            for t in traits:
                users = self._segments_by_trait[t]
                users.discard(sid)
                if not users:
                    del self._segments_by_trait[t]

    def create_segment(self, body: Any, *, uid: int = 0, sid: int | None = None) -> Json:
        data = _validate(SegmentInput, body, "segment")
        coll = self.segments
        coll.check_limit()
        referenced = self._segment_traits(data)
        coll.check_code(data.integration_code)
        obj = _new("sid", coll.allocate(sid), data)
        coll.insert(self._stamp(obj, uid))
        self._index_segment(obj["sid"], data.data_source_id, referenced, add=True)
        return _copy(obj)

    def get_segment(self, sid: int) -> Json:
        return _copy(self.segments.get(sid))

    def get_segment_by_code(self, code: str) -> Json:
        return _copy(self.segments.by_integration_code(code))

    def update_segment(self, sid: int, body: Any, *, uid: int = 0) -> Json:
        coll = self.segments
        current = coll.get(sid)
        data = _validate(SegmentInput, body, "segment")
        referenced = self._segment_traits(data)
        coll.check_code(data.integration_code, owner=sid)
        obj = self._stamp(_new("sid", sid, data), uid, created=current)
        coll.replace(obj)
        self._index_segment(sid, current["dataSourceId"], rules.trait_ids(current["segmentRule"]), add=False)
        self._index_segment(sid, data.data_source_id, referenced, add=True)
        return _copy(obj)

    def delete_segment(self, sid: int) -> None:
        segment = self.segments.get(sid)
        mapped = [
            d["destinationId"]
            for d in self.destinations.items.values()
            if any(m.get("sid") == sid for m in d.get("mappings", ()))
        ]
        if mapped:
            raise InUse(f"segment {sid} is mapped to destinations", sid=sid, destinations=mapped[:20])
        self.segments.remove(sid)
        self._index_segment(sid, segment["dataSourceId"], rules.trait_ids(segment["segmentRule"]), add=False)

    def list_segments(
        self,
        params: ListParams = ListParams(),
        *,
        integration_code: str | None = None,
        data_source_ids: Iterable[int] = (),
        contains_trait: int | None = None,
        status: str | None = None,
        folder_id: int | None = None,
    ) -> Listing:
        ids = self._ids_by_code(self.segments, integration_code)
        ids = self._narrow(ids, self._segments_by_ds, data_source_ids)
        if contains_trait is not None:
            ids = self._narrow(ids, self._segments_by_trait, [contains_trait])
        where = None
        if status is not None or folder_id is not None:

            def where(o: Json) -> bool:
                return (status is None or o["status"] == status.upper()) and (
                    folder_id is None or o["folderId"] == folder_id
                )

        return self.segments.select(params, ids=ids, where=where)

    # --- destinations ----------------------------------------------------------------------------------

    def _check_destination(self, data: DestinationInput) -> None:
        if data.data_source_id is not None and data.data_source_id not in self.datasources.items:
            raise InvalidInput(
                f"data source {data.data_source_id} does not exist",
                details=[{"field": "dataSourceId", "message": "unknown data source"}],
            )
        unknown = sorted({m["sid"] for m in data.mappings} - self.segments.items.keys())
        if unknown:
            raise InvalidInput(
                "mappings name segments that do not exist",
                details=[{"field": "mappings", "message": f"unknown segments: {unknown[:20]}"}],
            )

    def create_destination(
        self, body: Any, *, uid: int = 0, destination_id: int | None = None, via_api: bool = True
    ) -> Json:
        """Create a destination. Through the API (``via_api``) only URL and cookie ones can be made."""
        data = _validate(DestinationInput, body, "destination")
        if via_api and data.destination_type == S2S:
            raise ReadOnly("server-to-server destinations cannot be created through the API")
        coll = self.destinations
        coll.check_limit()
        if data.destination_type == S2S:
            s2s = sum(1 for d in coll.items.values() if d["destinationType"] == S2S)
            if s2s >= self.limits.s2s_destinations:
                raise LimitExceeded(
                    f"the limit of {self.limits.s2s_destinations} server-to-server destinations is reached"
                )
        self._check_destination(data)
        obj = _new("destinationId", coll.allocate(destination_id), data)
        coll.insert(self._stamp(obj, uid))
        return _copy(obj)

    def get_destination(self, destination_id: int) -> Json:
        return _copy(self.destinations.get(destination_id))

    def update_destination(self, destination_id: int, body: Any, *, uid: int = 0) -> Json:
        current = self.destinations.get(destination_id)
        data = _validate(DestinationInput, body, "destination")
        if S2S in (current["destinationType"], data.destination_type):
            raise ReadOnly("server-to-server destinations are read-only through the API", destinationId=destination_id)
        self._check_destination(data)
        obj = self._stamp(_new("destinationId", destination_id, data), uid, created=current)
        self.destinations.replace(obj)
        return _copy(obj)

    def delete_destination(self, destination_id: int) -> None:
        current = self.destinations.get(destination_id)
        if current["destinationType"] == S2S:
            raise ReadOnly("server-to-server destinations are read-only through the API", destinationId=destination_id)
        if current.get("mappings"):
            raise InUse("remove the destination's mappings first", destinationId=destination_id)
        self.destinations.remove(destination_id)

    def list_destinations(self, params: ListParams = ListParams(), *, contains_segment: int | None = None) -> Listing:
        where = None
        if contains_segment is not None:

            def where(o: Json) -> bool:
                return any(m.get("sid") == contains_segment for m in o.get("mappings", ()))

        return self.destinations.select(params, where=where)

    # --- inbound processing receipts (their log: store_receipts.py) -----------------------------------

    def add_receipt(self, data_source_id: int, receipt: Mapping[str, Any]) -> Json:
        """Record the outcome of processing inbound files of a data source (newest last); see
        :meth:`ReceiptLog.add`."""
        self.datasources.get(data_source_id)
        return self._receipts.add(data_source_id, receipt)

    def inbound_history(
        self, data_source_id: int, params: ListParams = ListParams(), *, data_file_name: str | None = None
    ) -> Listing:
        self.datasources.get(data_source_id)
        return self._receipts.history(data_source_id, params, data_file_name=data_file_name)

    # --- seeding and inspection ------------------------------------------------------------------------

    def seed(self, payload: Any, *, uid: int = 0) -> Json:
        """Objects created from a seed payload (store_seed.py)."""
        return seed_store(self, payload, uid=uid)

    def snapshot(self) -> Json:
        """Every object and receipt, for tests and debugging."""
        return {
            "datasources": [_copy(o) for o in self.datasources.items.values()],
            "traits": [_copy(o) for o in self.traits.items.values()],
            "segments": [_copy(o) for o in self.segments.items.values()],
            "destinations": [_copy(o) for o in self.destinations.items.values()],
            "receipts": self._receipts.snapshot(),
        }

    # --- helpers ---------------------------------------------------------------------------------------

    @staticmethod
    def _ids_by_code(coll: _Collection, code: str | None) -> set[int] | None:
        if code is None:
            return None
        obj_id = coll.by_code.get(code)
        return set() if obj_id is None else {obj_id}

    @staticmethod
    def _narrow(ids: set[int] | None, index: Mapping[int, set[int]], keys: Iterable[int]) -> set[int] | None:
        keys = list(keys)
        if not keys:
            return ids
        found: set[int] = set().union(*(index.get(k, set()) for k in keys))
        return found if ids is None else ids & found
