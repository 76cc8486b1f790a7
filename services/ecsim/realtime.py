"""ecsim's real-time outbound transfers: segment changes POSTed to a partner as they happen, the way the
platform does.

Each POST is a JSON delivery of 1-10 users (``shared.formats.realtime``), signed with an HMAC of the body in
the header the partner named (``shared.formats.realtime_signature``). The partner must answer ``200``
within 3,000 ms; anything else (another status, a timeout, a refused connection) is a failure, and the
platform tries once more, only once. Every attempt is counted and the latest are kept for ``GET
/sim/realtime``.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp

from shared.formats.realtime import UserChanges, delivery_body
from shared.formats.realtime_signature import SignatureAlgorithm, sign
from shared.logging import get_logger

log = get_logger(__name__)

MAX_USERS_PER_MESSAGE: Final = 10
TIMEOUT_S: Final = 3.0
ATTEMPTS: Final = 2  # the first try and the one retry
MAX_HISTORY: Final = 200


@dataclass(frozen=True, slots=True)
class RealtimeTarget:
    """Where and how deliveries go: the partner's URL, the shared key, its header and hash."""

    url: str
    key: bytes | None  # None: unsigned (a fault to test)
    header: str = "X-Signature"
    algorithm: SignatureAlgorithm = "sha1"
    bearer: str | None = None  # the OAuth 2.0 alternative: sent as Authorization: Bearer


@dataclass(frozen=True, slots=True)
class SendResult:
    status: int | None  # the last attempt's HTTP status (None: no answer)
    attempts: int
    users: int
    elapsed_ms: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "attempts": self.attempts,
            "users": self.users,
            "elapsedMs": round(self.elapsed_ms, 2),
            "error": self.error,
        }


def aam_uuid_for(declared_id: str) -> str:
    """A stable 38-digit AAM UUID for a user ecsim knows only by a declared ID."""
    return str(int.from_bytes(hashlib.sha256(declared_id.encode()).digest()[:16], "big") % 10**38).zfill(38)


def user_changes(user_id: str, id_type: str, segments: dict[int | str, bool]) -> UserChanges:
    """A user as a delivery carries them: an ECID is the AAM UUID (and the partner's ID of an ECID data
    source); a declared ID is the DataPartner_UUID, with an AAM UUID derived from it."""
    if id_type == "ecid":
        return UserChanges(aam_uuid=user_id, partner_uuid=user_id, segments=segments)
    return UserChanges(aam_uuid=aam_uuid_for(user_id), partner_uuid=user_id, segments=segments)


def chunks(users: Sequence[UserChanges], size: int = MAX_USERS_PER_MESSAGE) -> list[Sequence[UserChanges]]:
    if not 1 <= size <= MAX_USERS_PER_MESSAGE:
        raise ValueError(f"users per message must be 1-{MAX_USERS_PER_MESSAGE}")
    return [users[i : i + size] for i in range(0, len(users), size)]


class RealtimeSender:
    def __init__(self, *, timeout_s: float = TIMEOUT_S, client_id: str = "ecsim") -> None:
        self._timeout_s = timeout_s
        self._client_id = client_id
        self._session: aiohttp.ClientSession | None = None
        self.counts: Counter[str] = Counter()
        self.recent: deque[dict[str, Any]] = deque(maxlen=MAX_HISTORY)

    def reset(self) -> None:
        self.counts.clear()
        self.recent.clear()

    def state(self) -> dict[str, Any]:
        return {**self.counts, "recent": list(self.recent)[-20:]}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def deliver(
        self,
        target: RealtimeTarget,
        *,
        user_dpid: int,
        destination_id: int,
        users: Sequence[UserChanges],
        per_message: int = MAX_USERS_PER_MESSAGE,
        at: datetime | None = None,
    ) -> list[SendResult]:
        """Send ``users`` in messages of at most ``per_message``, one after the other."""
        when = at or datetime.now(UTC)
        results = []
        for part in chunks(users, per_message):
            body = delivery_body(
                user_dpid=user_dpid, destination_id=destination_id, client_id=self._client_id, users=part, at=when
            )
            results.append(await self.send(target, body, users=len(part)))
        return results

    async def send(
        self, target: RealtimeTarget, body: bytes, *, users: int = 0, signature: str | None = None
    ) -> SendResult:
        """POST one delivery, retried once on any failure. ``signature`` overrides the computed one."""
        headers = {"Content-Type": "application/json"}
        if signature is None and target.key is not None:
            signature = sign(body, target.key, target.algorithm)
        if signature is not None:
            headers[target.header] = signature
        if target.bearer is not None:
            headers["Authorization"] = f"Bearer {target.bearer}"
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        attempts = 0
        while attempts < ATTEMPTS and status != 200:
            attempts += 1
            status, error = await self._post(target.url, body, headers)
        result = SendResult(status, attempts, users, (time.perf_counter() - started) * 1000, error)
        self.counts["messages"] += 1
        self.counts["attempts"] += attempts
        self.counts["delivered" if result.ok else "failed"] += 1
        self.recent.append({"url": target.url, **result.as_json()})
        if not result.ok:
            log.warning("ecsim_realtime_failed", url=target.url, status=status, error=error, attempts=attempts)
        return result

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str | None]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout_s))
        try:
            async with self._session.post(url, data=body, headers=headers) as response:
                await response.read()
                return response.status, None if response.status == 200 else f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return None, type(exc).__name__
