"""Upstream segment events become ``delta`` membership batches, coalesced per audience.

One poll of ``segment-events`` (bounded by ``SEGMENT_EVENTS_MAX_POLL``) is one flush: events are
validated, claimed in the ledger (new, not older than their ID's last change: see
:mod:`services.ingest.event_ledger`), grouped by audience with the last operation per ID winning, and
produced as membership batches; the claim commits, and the poll's offsets are, only after Kafka
acknowledged them. Invalid events are returned as rejections (dead-lettered with the reason) while the
rest goes on. A flush's run id is derived from where its first event sits in the topic (partition and
offset), so a redelivered poll reuses it where it can. The topic is keyed by segment and ID, so one
segment's events come from every partition: polls of partitions that arrive while one is handled are
handled next as one flush (:meth:`SegmentEventHandler.__call__`), so that runs stay few.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.ingest.audiences import AudienceDirectory, ImportAudience
from services.ingest.event_ledger import EventLedger
from services.ingest.flush_window import FlushWindow
from services.ingest.governance import GovernanceCheck
from services.ingest.membership import membership_batches
from services.ingest.run_ids import event_run_id
from shared.errors import PermanentError, TransientError
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


@dataclass(eq=False)
class _Entry:
    """A partition's poll waiting to be handled, and what its caller gets: its rejections."""

    deliveries: Sequence[Delivery[SegmentEvent]]
    done: asyncio.Future[list[Rejected]]


# A valid event of the poll and the audiences it feeds.
_Routed = tuple[Delivery[SegmentEvent], list[ImportAudience]]


def coalesce(routed: Sequence[_Routed]) -> dict[str, _Pending]:
    """Each audience's pending changes: the latest per ID by occurred_at, the later one in the poll on a tie (a
    change that arrives late, such as the platform's retry of an older real-time delivery, cannot undo a newer
    one)."""
    pending: dict[str, _Pending] = {}
    for delivery, audiences in routed:
        event = delivery.message
        at = _aware(event.occurred_at)
        for audience in audiences:
            slot = pending.get(audience.audience_id)
            if slot is None:
                slot = pending[audience.audience_id] = _Pending(audience=audience, first=delivery)
            if at >= slot.at.get(event.id, at):
                slot.ops[event.id] = event.op == "add"
                slot.at[event.id] = at
            slot.received += 1
    return pending


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
        window: FlushWindow | None = None,
    ) -> None:
        """``ledger``: de-duplicates across polls (None: within each poll only). ``window``: paces flushes by
        reconcile's progress (:mod:`services.ingest.flush_window`; None: never waits)."""
        self._ledger = ledger
        self._window = window
        self._directory = directory
        self._producer = producer
        self._topic = membership_topic
        self._status = status
        self._governance = governance
        self._batch_size = min(batch_size, MAX_IDS_PER_BATCH)
        self._one_at_a_time = asyncio.Lock()  # first come, first served: a poll waits one group at most
        self._waiting: list[_Entry] = []

    async def __call__(self, deliveries: Sequence[Delivery[SegmentEvent]]) -> list[Rejected]:
        """The poll's membership batches, acknowledged by Kafka; returns the events rejected (with the reason).

        Polls of several partitions arriving together (one consumer poll), or while one is handled, are handled
        as one: one ledger claim, one run per audience. A segment's events spread over the partitions would
        otherwise make a run per partition and poll, each a transaction in reconcile, applied one after the other
        per audience: more than reconcile keeps up with at 5,000 events/s on 6 partitions. Each partition's own
        polls stay in order (its worker awaits this call before the next)."""
        entry = _Entry(deliveries, asyncio.get_running_loop().create_future())
        self._waiting.append(entry)
        try:
            async with self._one_at_a_time:
                if not entry.done.done():  # not handled with an earlier group: lead the next one
                    # While reconcile has not ended the runs of the last flushes, the polls arriving meanwhile
                    # join this group: one run more per audience instead of one per poll.
                    if self._window is not None:
                        await self._window.room()
                    # One turn of the loop first: the other partitions of the same consumer poll, whose workers
                    # are ready to run, join this group rather than make the next one.
                    await asyncio.sleep(0)
                    group, self._waiting = self._waiting, []
                    await self._handle_group(group, entry)
        except asyncio.CancelledError:
            if entry in self._waiting:
                self._waiting.remove(entry)  # never handled: the poll comes back to this partition's next owner
            raise
        return entry.done.result()

    async def _handle_group(self, group: list[_Entry], leader: _Entry) -> None:
        """Handle the polls of ``group`` as one and tell each its own rejections, or the error (each partition's
        poll is then retried on its own); ``leader``, whose call handles it, gets the error raised."""
        try:
            rejected = await self._handle([d for e in group for d in e.deliveries])
        except BaseException as exc:
            # Cancelled (this partition revoked, the service stopping): the others' polls were not handled.
            failure = exc if isinstance(exc, Exception) else TransientError("the poll it was handled with stopped")
            for e in group:
                if e is not leader:
                    e.done.set_exception(failure)
            raise
        owner = {id(d): e for e in group for d in e.deliveries}
        mine: dict[int, list[Rejected]] = {id(e): [] for e in group}
        for r in rejected:
            mine[id(owner[id(r.delivery)])].append(r)
        for e in group:
            e.done.set_result(mine[id(e)])

    async def _handle(self, deliveries: Sequence[Delivery[SegmentEvent]]) -> list[Rejected]:
        rejected: list[Rejected] = []
        routed = await self._routed(deliveries, rejected)
        applicable = await self._governed(routed, rejected)
        # Claimed before anything is emitted, committed once Kafka acknowledged: see services/ingest/event_ledger.py.
        async with self._claiming([d.message for d, _ in applicable]) as admitted:
            pending = coalesce([(d, audiences) for d, audiences in applicable if d.message.event_id in admitted])
            sender = WindowSender(self._producer)
            try:
                for slot in pending.values():
                    await self._emit(slot, sender)
                await sender.flush()
            finally:
                await sender.close()
        if self._window is not None:
            self._window.sent(self._run_id(slot.first, slot.audience) for slot in pending.values())
        return rejected

    async def _routed(self, deliveries: Sequence[Delivery[SegmentEvent]], rejected: list[Rejected]) -> list[_Routed]:
        """The poll's valid events (a repeated event id once) with their audiences; the invalid ones go to
        ``rejected``."""
        routed: list[_Routed] = []
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
                routed.append((delivery, _audiences_for(event, known)))
            except InvalidEvent as exc:
                rejected.append(Rejected(delivery, exc))
        return routed

    async def _governed(self, routed: Sequence[_Routed], rejected: list[Rejected]) -> list[_Routed]:
        """The events with the audiences governance lets them feed. Nothing is written for a blocked audience: its
        run is reported blocked, and an event that fed only blocked audiences is kept in the DLQ with the reason."""
        first: dict[str, tuple[Delivery[SegmentEvent], ImportAudience]] = {}
        for delivery, audiences in routed:
            for audience in audiences:
                if audience.audience_id not in first:
                    first[audience.audience_id] = (delivery, audience)
        blocked: dict[str, str] = {}
        for audience_id, (delivery, audience) in first.items():
            reason = await self._governance(audience)
            if reason is None:
                continue
            blocked[audience_id] = reason
            counts = {"received": sum(a.audience_id == audience_id for _, fed in routed for a in fed)}
            run_id = self._run_id(delivery, audience)
            await self._status.report(RunOutcome(run_id, "import", "blocked", audience_id, counts, reason=reason))
        if not blocked:
            return list(routed)
        applicable: list[_Routed] = []
        for delivery, audiences in routed:
            open_ = [a for a in audiences if a.audience_id not in blocked]
            if open_:
                applicable.append((delivery, open_))
            else:
                reason = blocked[audiences[0].audience_id]
                rejected.append(Rejected(delivery, InvalidEvent("import blocked by governance", reason=reason)))
        return applicable

    def _claiming(self, events: Sequence[SegmentEvent]) -> AbstractAsyncContextManager[set[str]]:
        """The events of the poll to apply, claimed in the ledger until the block ends (without a ledger: all)."""
        if self._ledger is None:
            return nullcontext({e.event_id for e in events})
        return self._ledger.claiming(events)

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

    def _run_id(self, first: Delivery[SegmentEvent], audience: ImportAudience) -> uuid.UUID:
        return event_run_id(first.topic, first.partition, first.offset, audience.audience_id)

    async def _emit(self, slot: _Pending, sender: WindowSender) -> None:
        build = membership_batches(self._topic, slot.audience, self._run_id(slot.first, slot.audience), "delta")
        batches = RunBatches(self._batch_size, build, sender)
        # Each run of adds (or removes) in one call: the same batches as one ID at a time (RunBatches.extend),
        # without a call per ID, which a real-time feed's 20,000 IDs a second made count.
        for add, ids in itertools.groupby(slot.ops, key=slot.ops.__getitem__):
            await batches.extend(list(ids), removes=not add)
        await batches.close({"received": slot.received})
