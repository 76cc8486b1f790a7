"""One HTTP exchange with IMS or the REST API, read whole so that the connection goes back to the pool
before the answer is judged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import aiohttp
import yarl

from shared.logging import redact_text

# No answer came: worth another try, like a retryable status.
UNREACHABLE: Final = (aiohttp.ClientError, TimeoutError)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    raw: bytes
    retry_after: str | None


async def exchange(
    session: aiohttp.ClientSession,
    method: str,
    url: str | yarl.URL,
    *,
    headers: dict[str, str],
    timeout: aiohttp.ClientTimeout,
    data: bytes | dict[str, str] | None = None,
    params: list[tuple[str, str]] | None = None,
) -> Answer:
    async with session.request(method, url, params=params, data=data, headers=headers, timeout=timeout) as resp:
        return Answer(status=resp.status, raw=await resp.read(), retry_after=resp.headers.get("Retry-After"))


def describe(exc: BaseException) -> str:
    """Why no answer came, fit for logs and errors (a URL in the message may carry a secret)."""
    return redact_text(f"{type(exc).__name__}: {exc}")[:300]
