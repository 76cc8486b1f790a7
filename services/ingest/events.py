"""Upstream segment events become ``delta`` membership batches, coalesced per audience.

One poll of ``segment-events`` (bounded by ``SEGMENT_EVENTS_MAX_POLL``) is one flush: events are
validated, grouped by audience with the last operation per ID winning, and produced as membership
batches; the poll's offsets are committed only after Kafka acknowledged them. Invalid events are
returned as rejections (dead-lettered with the reason) while the rest goes on. A flush's run id is
derived from where its first event sits in the topic, so a redelivered poll reuses it where it can.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.ingest.audiences import AudienceDirectory, ImportAudience
from services.ingest.event_ledger import EventLedger
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


def _aware(when: datetime) -> datetime:
    # An upstream may send times without an offset: UTC, so that they compare with the others.
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


class InvalidEvent(PermanentError):
    """A segment event that cannot be applied (unknown segment, wrong ID type, malformed ID, ...)."""


_Known = dict[tuple[str, str, str], list[ImportAudience] | InvalidEvent]


def _audiences_for(event: SegmentEvent, known: _Known) -> list[ImportAudience]:
    """The audiences ``event`` feeds, from the poll's lookups; raises :class:`InvalidEvent` saying why none."""
    found = known[(event.segment_id, event.data_source, event.id_type)]
    if isinstance(found, InvalidEvent):
        raise InvalidEvent(found.message, **found.context)  # a fresh one per event (its own traceback)
    problem = id_problem(event.id_type, event.id)
    if problem is not None:
        raise InvalidEvent("malformed id", id_type=event.id_type, problem=problem)
    return found


@dataclass
class _Pending:
    audience: ImportAudience
    first: Delivery[SegmentEvent]
    ops: dict[str, bool] = field(default_factory=dict)  # id -> True add / False remove (latest wins)
    at: dict[str, datetime] = field(default_factory=dict)  # id -> occurred_at of the op kept
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
        ledger: EventLedger | None = None,
    ) -> None:
        """``ledger``: de-duplicates across polls (None: within each poll only)."""
        self._ledger = ledger
        self._directory = directory
        self._producer = producer
        self._topic = membership_topic
        self._status = status
        self._governance = governance
        self._batch_size = min(batch_size, MAX_IDS_PER_BATCH)

    async def __call__(self, deliveries: Sequence[Delivery[SegmentEvent]]) -> list[Rejected]:
        deliveries = await self._admitted(deliveries)
        rejected: list[Rejected] = []
        pending, fed = await self._coalesce(deliveries, rejected)
        sender = WindowSender(self._producer)
        try:
            blocked = await self._emit_all(pending, sender)
            # Nothing is written for a blocked audience; an event that fed only blocked audiences is kept in the
            # DLQ with the reason.
            for delivery in deliveries:
                fed_ids = fed.get(delivery.offset)
                if fed_ids and all(a in blocked for a in fed_ids):
                    reason = blocked[fed_ids[0]]
                    rejected.append(Rejected(delivery, InvalidEvent("import blocked by governance", reason=reason)))
            await self._acknowledged_and_recorded(deliveries, fed, rejected, sender)
        finally:
            await sender.close()
        return rejected

    async def _coalesce(
        self, deliveries: Sequence[Delivery[SegmentEvent]], rejected: list[Rejected]
    ) -> tuple[dict[str, _Pending], dict[int, list[str]]]:
        """Each audience's pending changes (the latest per ID), and the audiences each event (by offset) feeds;
        the invalid events go to ``rejected``."""
        pending: dict[str, _Pending] = {}
        fed: dict[int, list[str]] = {}
        seen_events: set[str] = set()
        # (segment, data source, id type) -> its audiences, or why none: looked up once per poll, not per event
        # (a real-time feed brings thousands of events a second for a handful of segments), before the loop, so
        # that the loop over the events is plain Python, without a coroutine per event.
        kinds = {(d.message.segment_id, d.message.data_source, d.message.id_type) for d in deliveries}
        known: _Known = {kind: await self._audiences_of(*kind) for kind in kinds}
        for delivery in deliveries:
            event = delivery.message
            if event.event_id in seen_events:
                continue  # a producer retry inside one poll
            seen_events.add(event.event_id)
            try:
                audiences = _audiences_for(event, known)
            except InvalidEvent as exc:
                rejected.append(Rejected(delivery, exc))
                continue
            fed[delivery.offset] = [a.audience_id for a in audiences]
            for audience in audiences:
                slot = pending.get(audience.audience_id)
                if slot is None:
                    slot = pending[audience.audience_id] = _Pending(audience=audience, first=delivery)
                # The latest by occurred_at wins (the later one in the poll on a tie): a change that arrives
                # late, such as the platform's retry of an older real-time delivery, cannot undo a newer one.
                at = _aware(event.occurred_at)
                if at >= slot.at.get(event.id, at):
                    slot.ops[event.id] = event.op == "add"
                    slot.at[event.id] = at
                slot.received += 1
        return pending, fed

    async def _emit_all(self, pending: dict[str, _Pending], sender: WindowSender) -> dict[str, str]:
        """Each audience's batches handed to ``sender`` (not yet acknowledged); returns the audiences governance
        blocked, with the reason (their run is reported blocked, nothing sent)."""
        blocked: dict[str, str] = {}
        for slot in pending.values():
            reason = await self._governance(slot.audience)
            if reason is None:
                await self._emit(slot, sender)
                continue
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
        return blocked

    async def _admitted(self, deliveries: Sequence[Delivery[SegmentEvent]]) -> Sequence[Delivery[SegmentEvent]]:
        """The events not applied in an earlier poll and not older than their ID's last applied change."""
        if self._ledger is None:
            return deliveries
        admitted = await self._ledger.admit([d.message for d in deliveries])
        return [d for d in deliveries if d.message.event_id in admitted]

    async def _acknowledged_and_recorded(
        self,
        deliveries: Sequence[Delivery[SegmentEvent]],
        fed: dict[int, list[str]],
        rejected: list[Rejected],
        sender: WindowSender,
    ) -> None:
        """Wait for Kafka to acknowledge the poll's batches, and remember the events that became membership (not
        the rejected ones: a replay applies them): the ledger's statement runs while Kafka acknowledges."""
        if self._ledger is None:
            await sender.flush()
            return
        refused = {r.delivery.offset for r in rejected}
        async with self._ledger.recording(
            [d.message for d in deliveries if d.offset in fed and d.offset not in refused]
        ):
            await sender.flush()

    async def _audiences_of(
        self, segment_id: str, data_source: str, id_type: str
    ) -> list[ImportAudience] | InvalidEvent:
        candidates = await self._directory.lookup(segment_id)
        if not candidates:
            return InvalidEvent("no import audience for this segment", segment_id=segment_id)
        audiences = [a for a in candidates if a.data_source == data_source]
        if not audiences:
            return InvalidEvent(
                "no import audience of this segment uses the event's data source",
                event_data_source=data_source,
                audience_data_sources=sorted({a.data_source for a in candidates}),
            )
        if any(a.id_type != id_type for a in audiences):
            return InvalidEvent("event's id type differs from the data source's", id_type=id_type)
        return audiences

    def _run_id(self, slot: _Pending) -> uuid.UUID:
        first = slot.first
        return event_run_id(first.topic, first.partition, first.offset, slot.audience.audience_id)

    async def _emit(self, slot: _Pending, sender: WindowSender) -> None:
        build = membership_batches(self._topic, slot.audience, self._run_id(slot), "delta")
        batches = RunBatches(self._batch_size, build, sender)
        # Each run of adds (or removes) in one call: the same batches as one ID at a time (RunBatches.extend),
        # without a call per ID, which a real-time feed's 20,000 IDs a second made count.
        for add, ids in itertools.groupby(slot.ops, key=slot.ops.__getitem__):
            await batches.extend(list(ids), removes=not add)
        await batches.close({"received": slot.received})
