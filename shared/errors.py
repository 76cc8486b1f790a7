"""Typed errors. Whether an error is transient decides what a consumer does with its message.

* ``TransientError``: the world is briefly unavailable (Postgres down, broker unreachable, platform 5xx).
  The message is retried with backoff and never skipped.
* ``PermanentError``: the message itself is wrong (undecodable, fails validation, names something unknown).
  Retrying cannot help: it goes to the topic's dead-letter queue and the consumer goes on.
"""

from __future__ import annotations

from typing import Any


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose. ``context`` is logged as structured fields."""

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = context

    def __str__(self) -> str:
        if not self.context:
            return self.message
        details = ", ".join(f"{k}={v!r}" for k, v in sorted(self.context.items()))
        return f"{self.message} ({details})"


class ConfigError(BridgeError):
    """Settings are missing or invalid: the service refuses to start."""


class TransientError(BridgeError):
    """Retry later: the cause is outside the message (a dependency is unavailable)."""


class PermanentError(BridgeError):
    """Retrying cannot help: the message or request is wrong."""


class PoisonMessage(PermanentError):
    """A Kafka message that cannot be decoded or validated."""
