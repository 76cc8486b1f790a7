"""The REST API's resources (AAM ``/v1``), one mixin each: data sources, traits, segments, destinations.

Traits and segments can also be named by integration code: ``ensure_*`` returns the object with a spec's
code, creating it only when there is none (see ``rest.py`` on retried POSTs).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Protocol, TypeVar
from urllib.parse import quote

from shared.platform.errors import Conflict, NotFound
from shared.platform.models import (
    DataSource,
    DataSourceSpec,
    Destination,
    DestinationSpec,
    InboundReceipt,
    Segment,
    SegmentSpec,
    Trait,
    TraitSpec,
)
from shared.platform.rest import Params, RestApi


class _Coded(Protocol):
    @property
    def integration_code(self) -> str | None: ...

    @property
    def data_source_id(self) -> int: ...


class _Owned(Protocol):
    @property
    def sid(self) -> int: ...

    @property
    def data_source_id(self) -> int: ...


Obj = TypeVar("Obj", bound=_Owned)
Spec = TypeVar("Spec", bound=_Coded)
T = TypeVar("T")


def _ic(code: str) -> str:
    """The path segment naming an object by integration code."""
    return "ic:" + quote(code, safe="")


async def _found(lookup: Awaitable[T]) -> T | None:
    try:
        return await lookup
    except NotFound:
        return None


async def _ensure(
    spec: Spec,
    noun: str,
    find: Callable[[str], Awaitable[Obj | None]],
    create: Callable[[Spec], Awaitable[Obj]],
) -> tuple[Obj, bool]:
    """The object with ``spec``'s integration code: the existing one, or a new one. Returns ``(object,
    created)``. :class:`Conflict` if that code belongs to another data source's object."""
    code = spec.integration_code
    if not code:
        raise ValueError(f"ensure_{noun} needs an integration code to recognise the {noun}")
    existing = await find(code)
    if existing is None:
        try:
            return await create(spec), True
        except Conflict:
            # Created meanwhile (a concurrent publisher, or a retried POST whose answer was lost).
            existing = await find(code)
            if existing is None:
                raise
    if existing.data_source_id != spec.data_source_id:
        raise Conflict(
            f"the integration code belongs to a {noun} of another data source",
            method="GET",
            path=f"/{noun}s/{_ic(code)}",
            sid=existing.sid,
            data_source_id=existing.data_source_id,
            expected_data_source_id=spec.data_source_id,
        )
    return existing, False


class DataSourcesApi(RestApi):
    def iter_data_sources(self, *, integration_code: str | None = None) -> AsyncIterator[DataSource]:
        params = [("integrationCode", integration_code)] if integration_code else []
        return self.iter_pages(DataSource, "/datasources/", params)

    async def list_data_sources(self, *, integration_code: str | None = None) -> list[DataSource]:
        return [d async for d in self.iter_data_sources(integration_code=integration_code)]

    async def get_data_source(self, data_source_id: int) -> DataSource:
        return await self._get(DataSource, f"/datasources/{int(data_source_id)}")

    async def create_data_source(self, spec: DataSourceSpec) -> DataSource:
        return await self._send("POST", DataSource, "/datasources/", spec.request_body("dataSourceId"))

    async def update_data_source(self, data_source_id: int, spec: DataSourceSpec) -> DataSource:
        path = f"/datasources/{int(data_source_id)}"
        return await self._send("PUT", DataSource, path, spec.request_body("dataSourceId"))

    async def delete_data_source(self, data_source_id: int) -> None:
        await self.request("DELETE", f"/datasources/{int(data_source_id)}")

    async def inbound_history(self, data_source_id: int, *, data_file_name: str | None = None) -> list[InboundReceipt]:
        """Processing receipts of the data source's inbound files (oldest first)."""
        params = [("dataFileName", data_file_name)] if data_file_name else []
        return await self._all(InboundReceipt, f"/datasources/{int(data_source_id)}/history/inbound", params)

    async def inbound_history_since(self, data_source_id: int, since_ms: int) -> list[InboundReceipt]:
        """The data source's receipts of jobs started at ``since_ms`` or later, newest first: one call while
        they fit in a page (the rest of the history, older, is never fetched)."""
        path = f"/datasources/{int(data_source_id)}/history/inbound"
        out: list[InboundReceipt] = []
        async for receipt in self.iter_pages(InboundReceipt, path, [("sortBy", "startTime"), ("descending", "true")]):
            if receipt.start_time is not None and receipt.start_time < since_ms:
                break
            out.append(receipt)
        return out


class TraitsApi(RestApi):
    def iter_traits(
        self,
        *,
        data_source_ids: Iterable[int] = (),
        integration_code: str | None = None,
        folder_id: int | None = None,
    ) -> AsyncIterator[Trait]:
        # includeDetails: without it the platform leaves out integrationCode, traitRule, ttl...
        params: Params = [("includeDetails", "true")]
        params += [("dataSourceId", str(int(d))) for d in data_source_ids]
        if integration_code:
            params.append(("integrationCode", integration_code))
        if folder_id is not None:
            params.append(("folderId", str(int(folder_id))))
        return self.iter_pages(Trait, "/traits/", params)

    async def list_traits(
        self,
        *,
        data_source_ids: Iterable[int] = (),
        integration_code: str | None = None,
        folder_id: int | None = None,
    ) -> list[Trait]:
        it = self.iter_traits(data_source_ids=data_source_ids, integration_code=integration_code, folder_id=folder_id)
        return [t async for t in it]

    async def get_trait(self, sid: int) -> Trait:
        return await self._get(Trait, f"/traits/{int(sid)}")

    async def get_trait_by_integration_code(self, code: str) -> Trait:
        return await self._get(Trait, f"/traits/{_ic(code)}")

    async def find_trait_by_integration_code(self, code: str) -> Trait | None:
        return await _found(self.get_trait_by_integration_code(code))

    async def create_trait(self, spec: TraitSpec) -> Trait:
        return await self._send("POST", Trait, "/traits/", spec.request_body("sid"))

    async def update_trait(self, sid: int, spec: TraitSpec) -> Trait:
        return await self._send("PUT", Trait, f"/traits/{int(sid)}", spec.request_body("sid"))

    async def delete_trait(self, sid: int) -> None:
        await self.request("DELETE", f"/traits/{int(sid)}")

    async def ensure_trait(self, spec: TraitSpec) -> tuple[Trait, bool]:
        """The trait with ``spec``'s integration code: the existing one, or a new one. Returns
        ``(trait, created)``. :class:`Conflict` if that code belongs to another data source's trait."""
        return await _ensure(spec, "trait", self.find_trait_by_integration_code, self.create_trait)


class SegmentsApi(RestApi):
    def iter_segments(
        self,
        *,
        data_source_ids: Iterable[int] = (),
        integration_code: str | None = None,
        contains_trait: int | None = None,
        status: str | None = None,
    ) -> AsyncIterator[Segment]:
        params: Params = [("dataSourceId", str(int(d))) for d in data_source_ids]
        if integration_code:
            params.append(("integrationCode", integration_code))
        if contains_trait is not None:
            params.append(("containsTrait", str(int(contains_trait))))
        if status:
            params.append(("status", status))
        return self.iter_pages(Segment, "/segments/", params)

    async def list_segments(
        self,
        *,
        data_source_ids: Iterable[int] = (),
        integration_code: str | None = None,
        contains_trait: int | None = None,
        status: str | None = None,
    ) -> list[Segment]:
        it = self.iter_segments(
            data_source_ids=data_source_ids,
            integration_code=integration_code,
            contains_trait=contains_trait,
            status=status,
        )
        return [s async for s in it]

    async def get_segment(self, sid: int) -> Segment:
        return await self._get(Segment, f"/segments/{int(sid)}")

    async def get_segment_by_integration_code(self, code: str) -> Segment:
        return await self._get(Segment, f"/segments/{_ic(code)}")

    async def find_segment_by_integration_code(self, code: str) -> Segment | None:
        return await _found(self.get_segment_by_integration_code(code))

    async def create_segment(self, spec: SegmentSpec) -> Segment:
        return await self._send("POST", Segment, "/segments/", spec.request_body("sid"))

    async def update_segment(self, sid: int, spec: SegmentSpec) -> Segment:
        return await self._send("PUT", Segment, f"/segments/{int(sid)}", spec.request_body("sid"))

    async def delete_segment(self, sid: int) -> None:
        await self.request("DELETE", f"/segments/{int(sid)}")

    async def ensure_segment(self, spec: SegmentSpec) -> tuple[Segment, bool]:
        """Like :meth:`ensure_trait`, for segments: ``(segment, created)``."""
        return await _ensure(spec, "segment", self.find_segment_by_integration_code, self.create_segment)


class DestinationsApi(RestApi):
    def iter_destinations(self, *, contains_segment: int | None = None) -> AsyncIterator[Destination]:
        params = [("containsSegment", str(int(contains_segment)))] if contains_segment is not None else []
        return self.iter_pages(Destination, "/destinations/", params)

    async def list_destinations(self, *, contains_segment: int | None = None) -> list[Destination]:
        return [d async for d in self.iter_destinations(contains_segment=contains_segment)]

    async def get_destination(self, destination_id: int) -> Destination:
        return await self._get(Destination, f"/destinations/{int(destination_id)}")

    async def create_destination(self, spec: DestinationSpec) -> Destination:
        return await self._send("POST", Destination, "/destinations/", spec.request_body("destinationId"))

    async def update_destination(self, destination_id: int, spec: DestinationSpec) -> Destination:
        path = f"/destinations/{int(destination_id)}"
        return await self._send("PUT", Destination, path, spec.request_body("destinationId"))

    async def delete_destination(self, destination_id: int) -> None:
        await self.request("DELETE", f"/destinations/{int(destination_id)}")
