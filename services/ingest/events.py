"""Upstream segment events become ``delta`` membership batches, coalesced per audience.

One poll of ``segment-events`` (bounded by ``SEGMENT_EVENTS_MAX_POLL``) is one flush: events are
validated, grouped by audience with the last operation per ID winning, and produced as membership
batches; the poll's offsets are committed only after Kafka acknowledged them. Invalid events are
returned as rejections (dead-lettered with the reason) while the rest goes on. A flush's run id is
derived from where its first event sits in the topic, so a redelivered poll reuses it where it can.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.ingest.audiences import AudienceDirectory, ImportAudience
from services.ingest.governance import GovernanceCheck
from services.ingest.membership import membership_batches
from services.ingest.run_ids import event_run_id
from shared.errors import PermanentError
from shared.id_batches import RunBatches
from shared.ids import id_problem
from shared.kafka import Delivery, Producer, Rejected
from shared.kafka.window import WindowSender
from shared.messages import MAX_IDS_PER_BATCH, SegmentEvent
from shared.runs.outcome import RunOutcome
from shared.runs.reporter import RunReporter


class InvalidEvent(PermanentError):
    """A segment event that cannot be applied (unknown segment, wrong ID type, malformed ID, ...)."""


@dataclass
class _Pending:
    audience: ImportAudience
    first: Delivery[SegmentEvent]
    ops: dict[str, bool] = field(default_factory=dict)  # id -> True add / False remove (last wins)
    received: int = 0


class SegmentEventHandler:
    def __init__(
        self,
        *,
        directory: AudienceDirectory,
        producer: Producer,
        membership_topic: str,
        status: RunReporter,
        governance: GovernanceCheck,
        batch_size: int = 5000,
    ) -> None:
        self._directory = directory
        self._producer = producer
        self._topic = membership_topic
        self._status = status
        self._governance = governance
        self._batch_size = min(batch_size, MAX_IDS_PER_BATCH)

    async def __call__(self, deliveries: Sequence[Delivery[SegmentEvent]]) -> list[Rejected]:
        rejected: list[Rejected] = []
        pending: dict[str, _Pending] = {}
        fed: dict[int, list[str]] = {}  # offset -> the audiences an event feeds
        seen_events: set[str] = set()
        for delivery in deliveries:
            event = delivery.message
            if event.event_id in seen_events:
                continue  # a producer retry inside one poll
            seen_events.add(event.event_id)
            try:
                audiences = await self._audiences_for(event)
            except InvalidEvent as exc:
                rejected.append(Rejected(delivery, exc))
                continue
            fed[delivery.offset] = [a.audience_id for a in audiences]
            for audience in audiences:
                slot = pending.get(audience.audience_id)
                if slot is None:
                    slot = pending[audience.audience_id] = _Pending(audience=audience, first=delivery)
                slot.ops[event.id] = event.op == "add"
                slot.received += 1

        blocked: dict[str, str] = {}
        sender = WindowSender(self._producer)
        try:
            for slot in pending.values():
                reason = await self._governance(slot.audience)
                if reason is not None:
                    blocked[slot.audience.audience_id] = reason
                    await self._status.report(
                        RunOutcome(
                            self._run_id(slot),
                            "import",
                            "blocked",
                            slot.audience.audience_id,
                            {"received": slot.received},
                            reason=reason,
                        )
                    )
                    continue
                await self._emit(slot, sender)
            await sender.flush()
        finally:
            await sender.close()
        # Nothing is written for a blocked audience; an event that fed only blocked audiences is kept in the
        # DLQ with the reason.
        for delivery in deliveries:
            fed_ids = fed.get(delivery.offset)
            if fed_ids and all(a in blocked for a in fed_ids):
                reason = blocked[fed_ids[0]]
                rejected.append(Rejected(delivery, InvalidEvent("import blocked by governance", reason=reason)))
        return rejected

    async def _audiences_for(self, event: SegmentEvent) -> list[ImportAudience]:
        candidates = await self._directory.lookup(event.segment_id)
        if not candidates:
            raise InvalidEvent("no import audience for this segment", segment_id=event.segment_id)
        audiences = [a for a in candidates if a.data_source == event.data_source]
        if not audiences:
            raise InvalidEvent(
                "no import audience of this segment uses the event's data source",
                event_data_source=event.data_source,
                audience_data_sources=sorted({a.data_source for a in candidates}),
            )
        if any(a.id_type != event.id_type for a in audiences):
            raise InvalidEvent("event's id type differs from the data source's", id_type=event.id_type)
        problem = id_problem(event.id_type, event.id)
        if problem is not None:
            raise InvalidEvent("malformed id", id_type=event.id_type, problem=problem)
        return audiences

    def _run_id(self, slot: _Pending) -> uuid.UUID:
        first = slot.first
        return event_run_id(first.topic, first.partition, first.offset, slot.audience.audience_id)

    async def _emit(self, slot: _Pending, sender: WindowSender) -> None:
        build = membership_batches(self._topic, slot.audience, self._run_id(slot), "delta")
        batches = RunBatches(self._batch_size, build, sender)
        for one_id, add in slot.ops.items():
            await (batches.add(one_id) if add else batches.remove(one_id))
        await batches.close({"received": slot.received})
