"""The platform's REST API (AAM ``/v1``): data sources, traits, segments, destinations.

Every call sends ``Authorization: Bearer <token>`` and ``x-api-key: <client id>``. Answers:

* 2xx: parsed into the typed model;
* 401: the token is renewed once and the call repeated; a second 401 is :class:`Unauthorized`;
* 408, 429 and 5xx, timeouts and connection errors: retried with exponential backoff and jitter (never
  sooner than ``Retry-After``) up to ``platform_max_attempts``, then :class:`PlatformUnavailable`;
* other 4xx: :class:`BadRequest`, :class:`Forbidden`, :class:`NotFound`, :class:`Conflict`… at once.

POSTs are retried too: a create whose answer was lost comes back as a 409 on retry when the object has
an integration code, which :meth:`PlatformClient.ensure_trait` / :meth:`ensure_segment` resolve by
fetching the existing object. Listing walks all pages; objects created or deleted meanwhile may be
missed or seen twice, as with any offset paging.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import aiohttp
import orjson
import yarl
from pydantic import BaseModel, ValidationError

from shared.logging import get_logger, redact_text
from shared.platform._http import retry_delay, retryable, safe_body
from shared.platform.errors import (
    Conflict,
    NotFound,
    PlatformProtocolError,
    PlatformUnavailable,
    rejected_error,
)
from shared.platform.ims import TokenProvider
from shared.platform.metrics import NoMetrics, PlatformMetrics
from shared.platform.models import (
    DataSource,
    DataSourceSpec,
    Destination,
    DestinationSpec,
    InboundReceipt,
    Page,
    Segment,
    SegmentSpec,
    Trait,
    TraitSpec,
)
from shared.platform.settings import PlatformSettings
from shared.retry import Backoff

log = get_logger(__name__)

M = TypeVar("M", bound=BaseModel)
Params = list[tuple[str, str]]


def _ic(code: str) -> str:
    """The path segment naming an object by integration code."""
    return "ic:" + quote(code, safe="")


class PlatformClient:
    """One client per service; safe for concurrent use. Use as ``async with PlatformClient(settings)``."""

    def __init__(
        self,
        settings: PlatformSettings,
        *,
        session: aiohttp.ClientSession | None = None,
        token_provider: TokenProvider | None = None,
        metrics: PlatformMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.api_url = settings.platform_api_url.rstrip("/")
        self._session = session
        self._owns_session = session is None
        self._metrics: PlatformMetrics = metrics or NoMetrics()
        self._tokens = token_provider
        self._owns_tokens = token_provider is None
        self._timeout = aiohttp.ClientTimeout(
            total=settings.platform_request_timeout_s, sock_connect=settings.platform_connect_timeout_s
        )

    def __repr__(self) -> str:
        return f"PlatformClient(api_url={self.api_url!r}, client_id={self.settings.platform_client_id!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_tokens and self._tokens is not None:
            await self._tokens.close()
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None

    @property
    def tokens(self) -> TokenProvider:
        if self._tokens is None:
            self._tokens = TokenProvider.from_settings(self.settings, session=self._http(), metrics=self._metrics)
        return self._tokens

    def _http(self) -> aiohttp.ClientSession:
        # Created on first use: a session must be made inside the running event loop.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session

    # --- the HTTP exchange -----------------------------------------------------------------------------

    async def request(self, method: str, path: str, *, params: Params | None = None, json: Any = None) -> Any:
        """Call ``path`` (relative to the API URL, already percent-encoded) and return the parsed JSON
        answer (None when empty), retrying and renewing the token as the module docstring describes."""
        settings = self.settings
        url = yarl.URL(self.api_url + path, encoded=True)
        resource = path.strip("/").split("/", 1)[0] or "root"
        data = orjson.dumps(json) if json is not None else None
        backoff = Backoff(settings.platform_backoff_initial_s, settings.platform_backoff_max_s)
        tokens = self.tokens
        renewed = False
        attempt = 0
        while True:
            attempt += 1
            token = await tokens.token()
            headers = {
                "Authorization": f"Bearer {token}",
                "x-api-key": settings.platform_client_id,
                "Accept": "application/json",
            }
            if data is not None:
                headers["Content-Type"] = "application/json"
            try:
                async with self._http().request(
                    method, url, params=params, data=data, headers=headers, timeout=self._timeout
                ) as resp:
                    status = resp.status
                    raw = await resp.read()
                    retry_after = resp.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._metrics.call(method, resource, "error")
                error = redact_text(f"{type(exc).__name__}: {exc}")[:300]
                if attempt >= settings.platform_max_attempts:
                    log.warning("platform_call_failed", method=method, path=path, error=error, attempts=attempt)
                    raise PlatformUnavailable(
                        "the platform cannot be reached",
                        method=method,
                        path=path,
                        attempts=attempt,
                        error=error,
                    ) from None
                delay = retry_delay(backoff, None, settings.platform_retry_after_max_s)
                self._metrics.retry(method, resource, "error")
                log.warning(
                    "platform_call_retrying",
                    method=method,
                    path=path,
                    error=error,
                    attempt=attempt,
                    retry_in_s=round(delay, 3),
                )
                await asyncio.sleep(delay)
                continue

            self._metrics.call(method, resource, str(status))
            if 200 <= status < 300:
                return self._parse(raw, method, path)
            if status == 401 and not renewed:
                # Expired or revoked early: one renewal, not counted as an attempt.
                renewed = True
                attempt -= 1
                tokens.invalidate(token)
                self._metrics.retry(method, resource, "unauthorized")
                log.info("platform_token_rejected", method=method, path=path)
                continue
            body = safe_body(raw, tokens.sensitive_values())
            if retryable(status):
                if attempt >= settings.platform_max_attempts:
                    log.warning("platform_call_failed", method=method, path=path, status=status, attempts=attempt)
                    raise PlatformUnavailable(
                        f"the platform kept answering {status}",
                        method=method,
                        path=path,
                        status=status,
                        body=body,
                        attempts=attempt,
                    )
                delay = retry_delay(backoff, retry_after, settings.platform_retry_after_max_s)
                self._metrics.retry(method, resource, str(status))
                log.warning(
                    "platform_call_retrying",
                    method=method,
                    path=path,
                    status=status,
                    attempt=attempt,
                    retry_in_s=round(delay, 3),
                )
                await asyncio.sleep(delay)
                continue
            error_cls = rejected_error(status)
            raise error_cls(
                f"the platform refused {method} {path} with {status}",
                method=method,
                path=path,
                status=status,
                body=body,
            )

    @staticmethod
    def _parse(raw: bytes, method: str, path: str) -> Any:
        if not raw.strip():
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise PlatformProtocolError(
                "the platform answered with something that is not JSON", method=method, path=path
            ) from None

    @staticmethod
    def _model(model: type[M], data: Any, method: str, path: str) -> M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise PlatformProtocolError(
                f"the platform's answer is not a valid {model.__name__}",
                method=method,
                path=path,
                errors=[f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5]],
            ) from None

    async def _get(self, model: type[M], path: str, params: Params | None = None) -> M:
        return self._model(model, await self.request("GET", path, params=params), "GET", path)

    async def _send(self, method: str, model: type[M], path: str, body: dict[str, Any]) -> M:
        return self._model(model, await self.request(method, path, json=body), method, path)

    async def iter_pages(self, model: type[M], path: str, params: Sequence[tuple[str, str]] = ()) -> AsyncIterator[M]:
        """Every object of a list endpoint, fetching page after page of ``platform_page_size``."""
        page = 0
        while True:
            query = [*params, ("page", str(page)), ("pageSize", str(self.settings.platform_page_size))]
            data = await self.request("GET", path, params=query)
            if isinstance(data, list):
                # An endpoint that does not page answers everything at once.
                for item in data:
                    yield self._model(model, item, "GET", path)
                return
            wrapped = self._model(Page[dict[str, Any]], data, "GET", path)
            for item in wrapped.items:
                yield self._model(model, item, "GET", path)
            if not wrapped.items or (wrapped.page + 1) * wrapped.page_size >= wrapped.total:
                return
            page = wrapped.page + 1

    async def _all(self, model: type[M], path: str, params: Params) -> list[M]:
        return [item async for item in self.iter_pages(model, path, params)]

    # --- data sources ----------------------------------------------------------------------------------

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

    # --- traits ----------------------------------------------------------------------------------------

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
        try:
            return await self.get_trait_by_integration_code(code)
        except NotFound:
            return None

    async def create_trait(self, spec: TraitSpec) -> Trait:
        return await self._send("POST", Trait, "/traits/", spec.request_body("sid"))

    async def update_trait(self, sid: int, spec: TraitSpec) -> Trait:
        return await self._send("PUT", Trait, f"/traits/{int(sid)}", spec.request_body("sid"))

    async def delete_trait(self, sid: int) -> None:
        await self.request("DELETE", f"/traits/{int(sid)}")

    async def ensure_trait(self, spec: TraitSpec) -> tuple[Trait, bool]:
        """The trait with ``spec``'s integration code: the existing one, or a new one. Returns
        ``(trait, created)``. :class:`Conflict` if that code belongs to another data source's trait."""
        code = spec.integration_code
        if not code:
            raise ValueError("ensure_trait needs an integration code to recognise the trait")
        existing = await self.find_trait_by_integration_code(code)
        if existing is None:
            try:
                return await self.create_trait(spec), True
            except Conflict:
                # Created meanwhile (a concurrent publisher, or a retried POST whose answer was lost).
                existing = await self.find_trait_by_integration_code(code)
                if existing is None:
                    raise
        if existing.data_source_id != spec.data_source_id:
            raise Conflict(
                "the integration code belongs to a trait of another data source",
                method="GET",
                path=f"/traits/{_ic(code)}",
                sid=existing.sid,
                data_source_id=existing.data_source_id,
                expected_data_source_id=spec.data_source_id,
            )
        return existing, False

    # --- segments --------------------------------------------------------------------------------------

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
        try:
            return await self.get_segment_by_integration_code(code)
        except NotFound:
            return None

    async def create_segment(self, spec: SegmentSpec) -> Segment:
        return await self._send("POST", Segment, "/segments/", spec.request_body("sid"))

    async def update_segment(self, sid: int, spec: SegmentSpec) -> Segment:
        return await self._send("PUT", Segment, f"/segments/{int(sid)}", spec.request_body("sid"))

    async def delete_segment(self, sid: int) -> None:
        await self.request("DELETE", f"/segments/{int(sid)}")

    async def ensure_segment(self, spec: SegmentSpec) -> tuple[Segment, bool]:
        """Like :meth:`ensure_trait`, for segments: ``(segment, created)``."""
        code = spec.integration_code
        if not code:
            raise ValueError("ensure_segment needs an integration code to recognise the segment")
        existing = await self.find_segment_by_integration_code(code)
        if existing is None:
            try:
                return await self.create_segment(spec), True
            except Conflict:
                existing = await self.find_segment_by_integration_code(code)
                if existing is None:
                    raise
        if existing.data_source_id != spec.data_source_id:
            raise Conflict(
                "the integration code belongs to a segment of another data source",
                method="GET",
                path=f"/segments/{_ic(code)}",
                sid=existing.sid,
                data_source_id=existing.data_source_id,
                expected_data_source_id=spec.data_source_id,
            )
        return existing, False

    # --- destinations ----------------------------------------------------------------------------------

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
