"""ecsim's IMS: OAuth server-to-server client credentials, as ``POST /ims/token/v3`` answers them.

Errors use the OAuth shape IMS answers with, ``{"error": "...", "error_description": "..."}``: an
unknown client or a missing parameter is a 400, a wrong secret a 401 ``invalid_client``, an unsupported
grant a 400 ``unsupported_grant_type``, a scope set without the required scope a 400 ``invalid_scope``.
Tokens are opaque random strings (no refresh tokens, like IMS). Expired tokens are remembered for a
while so the REST side can tell "expired" from "unknown".
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

# Expired tokens are kept this long (seconds) to answer "expired" rather than "invalid".
EXPIRED_MEMORY_S: Final = 3600.0


class ImsError(Exception):
    """A token request IMS refuses."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{status} {error}: {description}")
        self.status = status
        self.error = error
        self.description = description

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class TokenRejected(Exception):
    """A REST call's bearer token is missing, unknown or expired (the answer is a 401)."""

    def __init__(self, reason: Literal["missing", "invalid", "expired"]) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class _Token:
    client_id: str
    uid: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a valid token was issued to."""

    client_id: str
    uid: int


class TokenStore:
    """Issues and checks access tokens for one client credential."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        lifetime_s: int,
        required_scope: str = "",
        uid: int = 10001,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client_id = client_id
        self._secret = client_secret.encode()
        self.lifetime_s = lifetime_s
        self.required_scope = required_scope
        self.uid = uid
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        self._tokens: dict[str, _Token] = {}
        self.token_requests = 0
        self.tokens_issued = 0
        self.failures = 0
        self.rejected_calls = 0

    def issue(self, params: Mapping[str, str]) -> dict[str, Any]:
        """Answer a token request's form parameters with the IMS token response, or raise ImsError."""
        self.token_requests += 1
        try:
            principal = self._authenticate(params)
        except ImsError:
            self.failures += 1
            raise
        now = self._clock()
        self._forget_expired(now)
        token = secrets.token_urlsafe(48)
        self._tokens[token] = _Token(principal.client_id, principal.uid, now + self.lifetime_s)
        self.tokens_issued += 1
        return {"access_token": token, "token_type": "bearer", "expires_in": self.lifetime_s}

    def _authenticate(self, params: Mapping[str, str]) -> Principal:
        grant = params.get("grant_type")
        if not grant:
            raise ImsError(400, "invalid_request", "missing grant_type parameter")
        if grant != "client_credentials":
            raise ImsError(400, "unsupported_grant_type", "grant_type must be client_credentials")
        client_id = params.get("client_id")
        if not client_id:
            raise ImsError(400, "invalid_request", "missing client_id parameter")
        if client_id != self.client_id:
            raise ImsError(400, "invalid_client", "invalid client_id parameter")
        secret = params.get("client_secret", "").encode()
        if not hmac.compare_digest(secret, self._secret):
            raise ImsError(401, "invalid_client", "invalid client_secret parameter")
        scopes = {s.strip() for s in params.get("scope", "").split(",") if s.strip()}
        if self.required_scope and self.required_scope not in scopes:
            raise ImsError(400, "invalid_scope", f"scope must include {self.required_scope}")
        return Principal(client_id, self.uid)

    def check(self, token: str | None) -> Principal:
        """The principal of a valid ``token``; :class:`TokenRejected` otherwise."""
        if not token:
            self.rejected_calls += 1
            raise TokenRejected("missing")
        record = self._tokens.get(token)
        if record is None:
            self.rejected_calls += 1
            raise TokenRejected("invalid")
        if self._clock() >= record.expires_at:
            self.rejected_calls += 1
            raise TokenRejected("expired")
        return Principal(record.client_id, record.uid)

    def expire_all(self) -> int:
        """Make every token expired now (as if a day had passed); returns how many were valid."""
        now = self._clock()
        valid = 0
        for record in self._tokens.values():
            if record.expires_at > now:
                valid += 1
                record.expires_at = now
        return valid

    def active(self) -> int:
        now = self._clock()
        return sum(1 for t in self._tokens.values() if t.expires_at > now)

    def _forget_expired(self, now: float) -> None:
        # Bounded memory under token churn, yet recently expired tokens still answer "expired".
        stale = [k for k, t in self._tokens.items() if t.expires_at + EXPIRED_MEMORY_S < now]
        for key in stale:
            del self._tokens[key]

    def stats(self) -> dict[str, int]:
        return {
            "token_requests": self.token_requests,
            "tokens_issued": self.tokens_issued,
            "failures": self.failures,
            "active_tokens": self.active(),
            "rejected_calls": self.rejected_calls,
        }
