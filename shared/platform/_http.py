"""What IMS and REST calls share: retry decisions and delays, and keeping secrets out of error bodies."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterable
from datetime import UTC
from typing import Any, Final

import orjson

from shared.logging import REDACTED, redact
from shared.retry import Backoff

# Statuses worth another try: throttling, request timeout, and server-side failures.
RETRYABLE_STATUSES: Final = frozenset({408, 429})
MAX_BODY_CHARS: Final = 2000
MAX_PARSED_BYTES: Final = 64 * 1024


def retryable(status: int) -> bool:
    return status in RETRYABLE_STATUSES or status >= 500


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - time.time())


def retry_delay(backoff: Backoff, retry_after: str | None, retry_after_max_s: float) -> float:
    """Exponential backoff with jitter, but never sooner than the server's ``Retry-After`` (capped)."""
    delay = backoff.next_delay()
    asked = parse_retry_after(retry_after)
    if asked is not None:
        delay = max(delay, min(asked, retry_after_max_s))
    return delay


def _scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {k: _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, secrets) for v in value]
    return value


def safe_body(raw: bytes, secrets: Iterable[str | None] = ()) -> Any:
    """An error answer's body, fit for logs and exceptions: parsed JSON (or text cut to 2,000
    characters), with secret-looking fields and the given secret values (token, client secret) masked."""
    known = tuple(s for s in secrets if s)
    raw = raw[:MAX_PARSED_BYTES]
    try:
        parsed: Any = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        # Masked before cutting: a cut could otherwise leave a secret's prefix that no longer matches.
        text = _scrub(redact(raw.decode("utf-8", errors="replace")), known)
        return text[:MAX_BODY_CHARS]
    return _scrub(redact(parsed), known)
