"""A handler for topics whose flow is not built yet: dead-letter rather than commit-and-forget.

Committing messages nobody handled would lose them; the DLQ keeps them (with the reason) to be replayed
once the flow exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.errors import PermanentError
from shared.kafka import Delivery
from shared.kafka.consumer import Handler


def not_yet_supported(flow: str) -> Handler:
    async def handler(deliveries: Sequence[Delivery[Any]]) -> None:
        raise PermanentError("flow not built yet; message kept in the DLQ for replay", flow=flow)

    return handler
