"""Run status events on ``audience-sync-status``, for dashboards. Every service reports its view of a run."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from shared.kafka import Producer
from shared.logging import get_logger
from shared.messages import AudienceSyncStatus, Direction, RunCounts, RunState
from shared.topics import AUDIENCE_SYNC_STATUS, topic_name

log = get_logger(__name__)


class StatusReporter:
    def __init__(self, producer: Producer, *, service: str, topic_prefix: str) -> None:
        self._producer = producer
        self._service = service
        self._topic = topic_name(topic_prefix, AUDIENCE_SYNC_STATUS)

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
        if counts is None:
            run_counts = RunCounts()
        elif isinstance(counts, RunCounts):
            run_counts = counts
        else:
            run_counts = RunCounts.model_validate({k: v for k, v in counts.items() if k in RunCounts.model_fields})
        event = AudienceSyncStatus(
            run_id=run_id,
            direction=direction,
            audience_id=audience_id,
            state=state,
            counts=run_counts,
            match_rate=dict(match_rate) if match_rate else None,
            reason=reason[:2000] if reason else None,
            service=self._service,
        )
        await self._producer.send_model(self._topic, event)
        log.info(
            "run_status",
            run_id=str(run_id),
            direction=direction,
            audience_id=audience_id,
            state=state,
            counts=run_counts.model_dump(),
            reason=reason,
        )
        return event
