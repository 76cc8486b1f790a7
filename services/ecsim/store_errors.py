"""ecsim's store errors: each maps to the platform's HTTP answer (status, code, message, details)."""

from __future__ import annotations

from typing import Any, ClassVar

from shared.errors import BridgeError

Json = dict[str, Any]


class StoreError(BridgeError):
    """A request the platform refuses; ``status`` and ``code`` become the HTTP answer."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, message: str, *, details: list[Json] | None = None, **context: Any) -> None:
        super().__init__(message, **context)
        self.details: list[Json] = details or []

    def body(self) -> Json:
        body: Json = {"code": self.code, "message": self.message, "status": self.status}
        if self.details:
            body["details"] = self.details
        return body


class InvalidInput(StoreError):
    status = 400
    code = "bad_request"


class LimitExceeded(StoreError):
    status = 400
    code = "limit_exceeded"


class ReadOnly(StoreError):
    status = 400
    code = "read_only"


class StoreNotFound(StoreError):
    status = 404
    code = "not_found"


class StoreConflict(StoreError):
    status = 409
    code = "conflict"


class InUse(StoreConflict):
    code = "in_use"
