"""What ingest measures besides the runtime's, the platform client's and the drop-zone file counter.

Runs that end in ingest — refused by governance (``blocked``) or from a rejected drop-zone batch
(``failed``) — never reach reconcile, so they are counted here, under the same ``ab_runs_total`` name
as reconcile's: summed over the services, each run is counted once, where it ended.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter

from shared.kafka import Producer
from shared.messages import AudienceSyncStatus, Direction, RunCounts, RunState
from shared.status import StatusReporter

# The states in which ingest is the last service to see a run (it hands every other run to reconcile).
ENDS_HERE = ("blocked", "failed")


class CountingStatusReporter(StatusReporter):
    """A StatusReporter that also counts the runs ending in ingest, by direction and state."""

    def __init__(self, producer: Producer, *, service: str, topic_prefix: str, registry: Any) -> None:
        super().__init__(producer, service=service, topic_prefix=topic_prefix)
        self.runs = Counter(
            "ab_runs_total",
            "Runs that ended in ingest (blocked by governance, failed: rejected batch), by direction and state.",
            ["direction", "state"],
            registry=registry,
        )
        for state in ENDS_HERE:
            self.runs.labels("import", state)

    async def report(
        self,
        run_id: uuid.UUID,
        *,
        direction: Direction,
        state: RunState,
        audience_id: str | None = None,
        counts: Mapping[str, int] | RunCounts | None = None,
        match_rate: Mapping[str, float] | None = None,
        reason: str | None = None,
    ) -> AudienceSyncStatus:
        event = await super().report(
            run_id,
            direction=direction,
            state=state,
            audience_id=audience_id,
            counts=counts,
            match_rate=match_rate,
            reason=reason,
        )
        # Counted once the event is out: a send that raised is retried with the whole batch.
        if state in ENDS_HERE:
            self.runs.labels(direction, state).inc()
        return event
