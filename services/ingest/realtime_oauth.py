"""The platform's alternative to signatures: an OAuth 2.0 bearer token, checked with the issuer that made it.

With OAuth, the platform obtains a token from the partner's OAuth 2.0 server (client credentials the partner
gave it) and sends each delivery with ``Authorization: Bearer <token>``. ingest asks that issuer whether the
token is active, by token introspection (RFC 7662) at ``REALTIME_OAUTH_INTROSPECTION_URL``, authenticated as
``REALTIME_OAUTH_CLIENT_ID`` / ``REALTIME_OAUTH_CLIENT_SECRET``. An active answer is remembered until the
token's ``exp`` (at most ``ACTIVE_TTL_S``), an inactive one for ``INACTIVE_TTL_S`` (a flood of bad tokens
does not become a flood of introspections); only a digest of each token is kept. An issuer that cannot be
asked is a :class:`TransientError`: the delivery is answered 503, and the platform's retry has a chance.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections import OrderedDict
from typing import Final

import aiohttp
import orjson

from shared.errors import TransientError
from shared.logging import get_logger

log = get_logger(__name__)

ACTIVE_TTL_S: Final = 300.0
INACTIVE_TTL_S: Final = 30.0
MAX_REMEMBERED: Final = 10_000
TIMEOUT_S: Final = 1.5


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def active_until(answer: object, now: float) -> float | None:
    """Until when an introspection answer lets the token in (None: it does not). Pure."""
    if not isinstance(answer, dict) or answer.get("active") is not True:
        return None
    exp = answer.get("exp")
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        if exp <= now:
            return None
        return min(float(exp), now + ACTIVE_TTL_S)
    return now + ACTIVE_TTL_S


class TokenChecker:
    def __init__(self, url: str, client_id: str, client_secret: str) -> None:
        self._url = url
        credentials = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode("ascii")
        self._headers = {"Authorization": f"Basic {credentials}"}  # RFC 7662: the client authenticates
        self._session: aiohttp.ClientSession | None = None
        self._remembered: OrderedDict[bytes, tuple[bool, float]] = OrderedDict()  # digest -> (active, until)

    async def is_active(self, token: str) -> bool:
        digest = hashlib.sha256(token.encode()).digest()
        now = time.time()
        known = self._remembered.get(digest)
        if known is not None and known[1] > now:
            return known[0]
        until = active_until(await self._introspect(token), now)
        active = until is not None
        self._remember(digest, active, until if until is not None else now + INACTIVE_TTL_S)
        return active

    def _remember(self, digest: bytes, active: bool, until: float) -> None:
        self._remembered[digest] = (active, until)
        self._remembered.move_to_end(digest)
        while len(self._remembered) > MAX_REMEMBERED:
            self._remembered.popitem(last=False)

    async def _introspect(self, token: str) -> object:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        try:
            async with self._session.post(
                self._url, data={"token": token, "token_type_hint": "access_token"}, headers=self._headers
            ) as response:
                body = await response.read()
                if response.status != 200:
                    raise TransientError("the OAuth issuer did not answer the introspection", status=response.status)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransientError("the OAuth issuer cannot be reached", error=type(exc).__name__) from exc
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            log.warning("realtime_introspection_not_json", size=len(body))
            return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
