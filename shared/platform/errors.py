"""What a platform call can fail with. Each error carries status, method, path and the platform's
(redacted) error body, so logs and status events say exactly which call failed and why.

* :class:`PlatformUnavailable` (a :class:`~shared.errors.TransientError`): 429, 5xx, timeouts or
  connection errors outlasted the retries; try again later.
* :class:`PlatformRejected` and its subclasses (:class:`~shared.errors.PermanentError`): the platform
  refused the request as made (4xx); retrying the same request cannot help.
"""

from __future__ import annotations

from typing import Any

from shared.errors import BridgeError, PermanentError, TransientError


class PlatformError(BridgeError):
    """Base of every platform call failure."""

    def __init__(
        self,
        message: str,
        *,
        method: str,
        path: str,
        status: int | None = None,
        body: Any = None,
        **context: Any,
    ) -> None:
        super().__init__(message, method=method, path=path, status=status, **context)
        self.method = method
        self.path = path
        self.status = status
        # Already redacted by the client: safe to log and to put in status events.
        self.body = body


class PlatformUnavailable(PlatformError, TransientError):
    """Retries exhausted on 429, 5xx, timeouts or connection errors."""


class PlatformRejected(PlatformError, PermanentError):
    """A 4xx answer: the request is wrong for the platform's current state."""


class BadRequest(PlatformRejected):
    """400: invalid input (the body's details say which field)."""


class Unauthorized(PlatformRejected):
    """401 even with a freshly issued token."""


class AuthenticationFailed(Unauthorized):
    """IMS refused the credential (unknown client, wrong secret, scope): fix the settings."""


class Forbidden(PlatformRejected):
    """403: the credential may not do this (wrong x-api-key, missing product profile)."""


class NotFound(PlatformRejected):
    """404: no such object."""


class Conflict(PlatformRejected):
    """409: e.g. the integration code is already used; the existing object can be fetched by it."""


class PlatformProtocolError(PlatformError, PermanentError):
    """A success answer the client cannot read (not JSON, or not the expected object)."""


_BY_STATUS: dict[int, type[PlatformRejected]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
}


def rejected_error(status: int) -> type[PlatformRejected]:
    """The error class for a non-retryable 4xx ``status``."""
    return _BY_STATUS.get(status, PlatformRejected)
