"""Which failures are worth retrying, and how long to wait between tries."""

from __future__ import annotations

import random
from dataclasses import dataclass

from shared.failures import FailureKind, classify


def is_transient(exc: BaseException) -> bool:
    """True when trying again later may help: a dependency failing, or a statement that ran out of time
    (see :mod:`shared.failures`, which also bounds the latter where a message is at stake)."""
    return classify(exc) in (FailureKind.DEPENDENCY, FailureKind.STATEMENT_TIMEOUT)


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
