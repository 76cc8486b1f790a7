"""Upstream segment events become ``delta`` membership batches, coalesced per audience.

One poll of ``segment-events`` (bounded by ``SEGMENT_EVENTS_MAX_POLL``) is one flush: events are
validated, grouped by audience with the last operation per ID winning, and produced as membership
batches; the poll's offsets are committed only after Kafka acknowledged them. Invalid events are
returned as rejections (dead-lettered with the reason) while the rest goes on. A flush's run id is
derived from where its first event sits in the topic, so a redelivered poll reuses it where it can.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from services.ingest.audiences import AudienceDirectory, ImportAudience
from shared.errors import PermanentError
from shared.ids import id_problem
from shared.kafka import Delivery, OutgoingMessage, Producer, Rejected
from shared.messages import MAX_IDS_PER_BATCH, AudienceMembership, SegmentEvent
from shared.status import StatusReporter

RUN_NAMESPACE = uuid.UUID("6f1c8a64-3d3b-4b7e-9a55-0d2f0c6b7a10")

# Returns the reason an audience may not be imported (governance), or None.
GovernanceCheck = Callable[[ImportAudience], Awaitable[str | None]]


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
        status: StatusReporter,
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

        out: list[OutgoingMessage] = []
        blocked: dict[str, str] = {}
        for slot in pending.values():
            reason = await self._governance(slot.audience)
            if reason is not None:
                blocked[slot.audience.audience_id] = reason
                await self._status.report(
                    self._run_id(slot),
                    direction="import",
                    state="blocked",
                    audience_id=slot.audience.audience_id,
                    counts={"received": slot.received},
                    reason=reason,
                )
                continue
            out.extend(self._batches(slot))
        await self._producer.send(out)
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
        return uuid.uuid5(RUN_NAMESPACE, f"{first.topic}:{first.partition}:{first.offset}:{slot.audience.audience_id}")

    def _batches(self, slot: _Pending) -> list[OutgoingMessage]:
        run_id = self._run_id(slot)
        items = list(slot.ops.items())
        chunks = [items[i : i + self._batch_size] for i in range(0, len(items), self._batch_size)] or [[]]
        messages = []
        for seq, chunk in enumerate(chunks):
            last = seq == len(chunks) - 1
            batch = AudienceMembership(
                run_id=run_id,
                seq=seq,
                last=last,
                audience_id=slot.audience.audience_id,
                data_source=slot.audience.data_source,
                id_type=slot.audience.id_type,
                mode="delta",
                adds=[i for i, add in chunk if add],
                removes=[i for i, add in chunk if not add],
                totals={"received": slot.received, "batches": len(chunks)} if last else None,
            )
            messages.append(OutgoingMessage.of(self._topic, batch))
        return messages
