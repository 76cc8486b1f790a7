"""Which failures are worth retrying, and how long to wait between tries."""

from __future__ import annotations

import random
from dataclasses import dataclass

import asyncpg
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError, RequestTimedOutError

from shared.errors import PermanentError, TransientError

_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    TransientError,
    ConnectionError,
    TimeoutError,
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,  # e.g. the connection was closed under us
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.AdminShutdownError,
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
)


def is_transient(exc: BaseException) -> bool:
    """True when the failure comes from a dependency being briefly unavailable, not from the input."""
    if isinstance(exc, PermanentError):
        return False
    return isinstance(exc, _TRANSIENT_TYPES)


@dataclass
class Backoff:
    """Exponential backoff with full jitter, capped: delays are random in [0, min(cap, base * 2**n)]."""

    initial_s: float = 0.2
    max_s: float = 10.0
    attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.initial_s * (2**self.attempt))
        self.attempt += 1
        # At least a tenth of the ceiling, so retries never spin with a near-zero delay.
        return random.uniform(ceiling / 10, ceiling)

    def reset(self) -> None:
        self.attempt = 0
