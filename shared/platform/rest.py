"""The REST API's request machinery: authentication, retries, error mapping, typed answers and paging.

Every call sends ``Authorization: Bearer <token>`` and ``x-api-key: <client id>``. Answers:

* 2xx: parsed into the typed model;
* 401: the token is renewed once and the call repeated; a second 401 is :class:`Unauthorized`;
* 408, 429 and 5xx, timeouts and connection errors: retried with exponential backoff and jitter (never
  sooner than ``Retry-After``) up to ``platform_max_attempts``, then :class:`PlatformUnavailable`;
* other 4xx: :class:`BadRequest`, :class:`Forbidden`, :class:`NotFound`, :class:`Conflict`… at once.

POSTs are retried too: a create whose answer was lost comes back as a 409 on retry when the object has
an integration code, which the ``ensure_*`` methods resolve by fetching the existing object. Listing walks
all pages; objects created or deleted meanwhile may be missed or seen twice, as with any offset paging.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp
import orjson
import yarl
from pydantic import BaseModel, ValidationError

from shared.logging import get_logger
from shared.platform._exchange import UNREACHABLE, Answer, describe, exchange
from shared.platform._http import retry_delay, retryable, safe_body
from shared.platform.errors import PlatformProtocolError, PlatformUnavailable, rejected_error
from shared.platform.ims import TokenProvider
from shared.platform.metrics import NoMetrics, PlatformMetrics
from shared.platform.models import Page
from shared.platform.settings import PlatformSettings
from shared.retry import Backoff

log = get_logger(__name__)

M = TypeVar("M", bound=BaseModel)
Params = list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class _Call:
    method: str
    path: str
    url: yarl.URL
    # The metrics label: the path's first segment (traits, segments…), never an id.
    resource: str
    params: Params | None
    data: bytes | None

    @classmethod
    def of(cls, api_url: str, method: str, path: str, params: Params | None, json: Any) -> _Call:
        return cls(
            method=method,
            path=path,
            url=yarl.URL(api_url + path, encoded=True),
            resource=path.strip("/").split("/", 1)[0] or "root",
            params=params,
            data=orjson.dumps(json) if json is not None else None,
        )


class RestApi:
    """Calls to the REST API; safe for concurrent use. Use as ``async with``."""

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
        call = _Call.of(self.api_url, method, path, params, json)
        backoff = Backoff(self.settings.platform_backoff_initial_s, self.settings.platform_backoff_max_s)
        tokens = self.tokens
        renewed = False
        attempt = 0
        while True:
            attempt += 1
            token = await tokens.token()
            try:
                answer = await self._exchange(call, token)
            except UNREACHABLE as exc:
                self._metrics.call(method, call.resource, "error")
                await self._retry_unreachable(call, describe(exc), attempt, backoff)
                continue
            self._metrics.call(method, call.resource, str(answer.status))
            if 200 <= answer.status < 300:
                return self._parse(answer.raw, method, path)
            if answer.status == 401 and not renewed:
                # Expired or revoked early: one renewal, not counted as an attempt.
                renewed = True
                attempt -= 1
                tokens.invalidate(token)
                self._metrics.retry(method, call.resource, "unauthorized")
                log.info("platform_token_rejected", method=method, path=path)
                continue
            await self._retry_or_refuse(call, answer, attempt, backoff)

    async def _exchange(self, call: _Call, token: str) -> Answer:
        headers = {
            "Authorization": f"Bearer {token}",
            "x-api-key": self.settings.platform_client_id,
            "Accept": "application/json",
        }
        if call.data is not None:
            headers["Content-Type"] = "application/json"
        return await exchange(
            self._http(),
            call.method,
            call.url,
            params=call.params,
            data=call.data,
            headers=headers,
            timeout=self._timeout,
        )

    async def _retry_unreachable(self, call: _Call, error: str, attempt: int, backoff: Backoff) -> None:
        """Wait before the next attempt, or raise :class:`PlatformUnavailable` if this was the last one."""
        if attempt >= self.settings.platform_max_attempts:
            log.warning("platform_call_failed", method=call.method, path=call.path, error=error, attempts=attempt)
            raise PlatformUnavailable(
                "the platform cannot be reached", method=call.method, path=call.path, attempts=attempt, error=error
            ) from None
        await self._wait_to_retry(call, attempt, backoff, None, "error", error=error)

    async def _retry_or_refuse(self, call: _Call, answer: Answer, attempt: int, backoff: Backoff) -> None:
        """Wait before the next attempt after a retryable status; otherwise raise the error it maps to."""
        status = answer.status
        body = safe_body(answer.raw, self.tokens.sensitive_values())
        if not retryable(status):
            raise rejected_error(status)(
                f"the platform refused {call.method} {call.path} with {status}",
                method=call.method,
                path=call.path,
                status=status,
                body=body,
            )
        if attempt >= self.settings.platform_max_attempts:
            log.warning("platform_call_failed", method=call.method, path=call.path, status=status, attempts=attempt)
            raise PlatformUnavailable(
                f"the platform kept answering {status}",
                method=call.method,
                path=call.path,
                status=status,
                body=body,
                attempts=attempt,
            )
        await self._wait_to_retry(call, attempt, backoff, answer.retry_after, str(status), status=status)

    async def _wait_to_retry(
        self, call: _Call, attempt: int, backoff: Backoff, retry_after: str | None, reason: str, **cause: Any
    ) -> None:
        delay = retry_delay(backoff, retry_after, self.settings.platform_retry_after_max_s)
        self._metrics.retry(call.method, call.resource, reason)
        log.warning(
            "platform_call_retrying",
            method=call.method,
            path=call.path,
            **cause,
            attempt=attempt,
            retry_in_s=round(delay, 3),
        )
        await asyncio.sleep(delay)

    # --- typed answers ---------------------------------------------------------------------------------

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
