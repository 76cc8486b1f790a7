"""IMS access tokens (OAuth server-to-server, client credentials): fetched once, shared, renewed early.

IMS has no refresh tokens and may throttle integrations that mint too many, so the provider caches the
token and asks for a new one only shortly before ``expires_in`` runs out, or when the platform rejected
the current one (``invalidate``). Concurrent callers share one in-flight request (single flight).
Neither the client secret nor a token is ever logged or put into an exception.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from pydantic import SecretStr

from shared.logging import get_logger
from shared.platform._exchange import UNREACHABLE, Answer, describe, exchange
from shared.platform._http import retry_delay, retryable, safe_body
from shared.platform.errors import AuthenticationFailed, PlatformProtocolError, PlatformUnavailable
from shared.platform.metrics import NoMetrics, PlatformMetrics
from shared.platform.settings import PlatformSettings
from shared.retry import Backoff

log = get_logger(__name__)

# Renewal starts at most this share of a token's lifetime before it ends (short-lived tokens in tests
# would otherwise always look "about to expire").
MAX_MARGIN_SHARE = 0.1


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    renew_at: float
    expires_at: float

    def __repr__(self) -> str:
        return f"_Token(renew_at={self.renew_at}, expires_at={self.expires_at})"


class TokenProvider:
    """Hands out a valid access token; one provider per credential, shared by every client using it."""

    def __init__(
        self,
        *,
        ims_url: str,
        client_id: str,
        client_secret: SecretStr,
        scope: str,
        session: aiohttp.ClientSession | None = None,
        renew_margin_s: float = 300.0,
        max_attempts: int = 5,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 10.0,
        retry_after_max_s: float = 60.0,
        timeout: aiohttp.ClientTimeout | None = None,
        metrics: PlatformMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ims_url = ims_url
        self.client_id = client_id
        self._secret = client_secret
        self.scope = scope
        self._session = session
        self._owns_session = session is None
        self.renew_margin_s = renew_margin_s
        self.max_attempts = max_attempts
        self._backoff = (backoff_initial_s, backoff_max_s)
        self.retry_after_max_s = retry_after_max_s
        self._timeout = timeout or aiohttp.ClientTimeout(total=30, sock_connect=5)
        self._metrics: PlatformMetrics = metrics or NoMetrics()
        self._clock = clock
        self._current: _Token | None = None
        self._lock = asyncio.Lock()
        self.requests = 0

    @classmethod
    def from_settings(
        cls,
        settings: PlatformSettings,
        *,
        session: aiohttp.ClientSession | None = None,
        metrics: PlatformMetrics | None = None,
    ) -> TokenProvider:
        return cls(
            ims_url=settings.platform_ims_url,
            client_id=settings.platform_client_id,
            client_secret=settings.platform_client_secret,
            scope=settings.platform_scope,
            session=session,
            renew_margin_s=settings.platform_token_renew_margin_s,
            max_attempts=settings.platform_max_attempts,
            backoff_initial_s=settings.platform_backoff_initial_s,
            backoff_max_s=settings.platform_backoff_max_s,
            retry_after_max_s=settings.platform_retry_after_max_s,
            timeout=aiohttp.ClientTimeout(
                total=settings.platform_request_timeout_s, sock_connect=settings.platform_connect_timeout_s
            ),
            metrics=metrics,
        )

    def __repr__(self) -> str:
        return f"TokenProvider(ims_url={self.ims_url!r}, client_id={self.client_id!r})"

    async def token(self) -> str:
        """A token valid for a while yet; fetched (once, for all concurrent callers) when needed."""
        current = self._current
        if current is not None and self._clock() < current.renew_at:
            return current.value
        async with self._lock:
            # Whoever held the lock may have renewed it while this caller waited.
            current = self._current
            if current is not None and self._clock() < current.renew_at:
                return current.value
            reason = "initial" if current is None else "expiring"
            self._current = await self._fetch(reason)
            return self._current.value

    def invalidate(self, token: str) -> None:
        """The platform rejected ``token``: the next :meth:`token` fetches a new one.

        Only that token is dropped, so many calls failing with the same token cause one renewal.
        """
        current = self._current
        if current is not None and current.value == token:
            self._current = None

    @property
    def cached(self) -> bool:
        return self._current is not None

    def sensitive_values(self) -> tuple[str, ...]:
        """Values that must never appear in logs or errors (for scrubbing error bodies)."""
        current = self._current
        return (self._secret.get_secret_value(), *((current.value,) if current else ()))

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session

    async def _fetch(self, reason: str) -> _Token:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self._secret.get_secret_value(),
            "scope": self.scope,
        }
        backoff = Backoff(*self._backoff)
        attempt = 0
        while True:
            attempt += 1
            self.requests += 1
            try:
                answer = await exchange(
                    self._http(),
                    "POST",
                    self.ims_url,
                    data=form,
                    headers={"Accept": "application/json"},
                    timeout=self._timeout,
                )
            except UNREACHABLE as exc:
                self._metrics.token("error")
                await self._retry_unreachable(describe(exc), attempt, backoff)
                continue
            if answer.status == 200:
                return self._issued(answer.raw, reason, attempt)
            await self._retry_or_refuse(answer, attempt, backoff)

    def _issued(self, raw: bytes, reason: str, attempt: int) -> _Token:
        token = self._parse(raw)
        self._metrics.token("ok")
        log.info(
            "platform_token_issued",
            reason=reason,
            expires_in=round(token.expires_at - self._clock()),
            attempts=attempt,
        )
        return token

    async def _retry_unreachable(self, error: str, attempt: int, backoff: Backoff) -> None:
        """Wait before the next attempt, or raise :class:`PlatformUnavailable` if this was the last one."""
        if attempt >= self.max_attempts:
            raise PlatformUnavailable(
                "IMS cannot be reached",
                method="POST",
                path=self.ims_url,
                attempts=attempt,
                error=error,
            ) from None
        await self._wait_to_retry(attempt, backoff, None, error=error)

    async def _retry_or_refuse(self, answer: Answer, attempt: int, backoff: Backoff) -> None:
        """Wait before the next attempt after a retryable status; otherwise raise: the credential is refused."""
        status = answer.status
        body = safe_body(answer.raw, self.sensitive_values())
        if not retryable(status):
            self._metrics.token("refused")
            log.error("platform_token_refused", status=status, body=body, client_id=self.client_id)
            raise AuthenticationFailed(
                "IMS refused the credential: check the client id, secret and scope",
                method="POST",
                path=self.ims_url,
                status=status,
                body=body,
            )
        self._metrics.token("error")
        if attempt >= self.max_attempts:
            raise PlatformUnavailable(
                "IMS keeps failing",
                method="POST",
                path=self.ims_url,
                status=status,
                body=body,
                attempts=attempt,
            )
        await self._wait_to_retry(attempt, backoff, answer.retry_after, status=status)

    async def _wait_to_retry(self, attempt: int, backoff: Backoff, retry_after: str | None, **cause: Any) -> None:
        delay = retry_delay(backoff, retry_after, self.retry_after_max_s)
        log.warning("platform_token_retrying", **cause, attempt=attempt, retry_in_s=round(delay, 3))
        await asyncio.sleep(delay)

    def _parse(self, raw: bytes) -> _Token:
        try:
            data: Any = orjson.loads(raw)
            value = data["access_token"]
            expires_in = float(data["expires_in"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise PlatformProtocolError(
                "IMS answered 200 without a readable token", method="POST", path=self.ims_url
            ) from None
        if not isinstance(value, str) or not value:
            raise PlatformProtocolError("IMS answered an empty token", method="POST", path=self.ims_url)
        now = self._clock()
        margin = min(self.renew_margin_s, max(expires_in, 0.0) * MAX_MARGIN_SHARE)
        return _Token(value=value, renew_at=now + expires_in - margin, expires_at=now + expires_in)
