"""What S3 and network failures mean for a drop zone: an object not found, a request S3 rejects (wrong
for good), or the zone unavailable (a later attempt or a fixed configuration can succeed)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Final, NoReturn

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from shared.dropzone.base import DropZoneRejected, DropZoneUnavailable, ObjectNotFound, redact_url

_NOT_FOUND_CODES: Final = frozenset({"404", "NoSuchKey", "NotFound"})
# 4xx codes that still mean "try again later" rather than "this request is wrong".
_TRANSIENT_CODES: Final = frozenset(
    {"RequestTimeout", "RequestTimeTooSkewed", "ExpiredToken", "TokenRefreshRequired", "SlowDown"}
)
_PERMANENT_STATUSES: Final = frozenset({400, 405, 411, 413, 414, 416})
_NETWORK_ERRORS: Final = (BotoCoreError, aiohttp.ClientError, OSError, TimeoutError)


@contextlib.contextmanager
def s3_errors(op: str, name: str | None, *, url: str, endpoint_url: str | None) -> Iterator[None]:
    """Translate S3 and network failures into the drop-zone error types.

    Only exception types and S3 error codes go into the context: botocore messages do not carry
    credentials today, but nothing here should depend on that.
    """
    try:
        yield
    except ClientError as exc:
        raise_client_error(exc, op, name, url=url)
    except _NETWORK_ERRORS as exc:
        raise DropZoneUnavailable(
            "S3 drop zone unavailable",
            url=url,
            name=name,
            operation=op,
            endpoint=redact_url(endpoint_url) if endpoint_url else None,
            error=type(exc).__name__,
        ) from exc


def raise_client_error(exc: ClientError, op: str, name: str | None, *, url: str) -> NoReturn:
    """The drop-zone error an S3 error response means."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    context: dict[str, Any] = {"url": url, "name": name, "operation": op, "code": code}
    if code in _NOT_FOUND_CODES:
        raise ObjectNotFound("drop-zone object not found", **context) from exc
    if status in _PERMANENT_STATUSES and code not in _TRANSIENT_CODES:
        raise DropZoneRejected("S3 rejected the request", status=status, **context) from exc
    # Everything else (403 access denied, missing bucket, throttling, 5xx) is about the zone, not
    # the object: a later attempt, or a fixed configuration, can succeed.
    raise DropZoneUnavailable("S3 drop zone unavailable", status=status, **context) from exc
