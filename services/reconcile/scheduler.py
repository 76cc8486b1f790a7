"""Firing export schedules: reconcile's loop that turns due slots into ordinary export requests.

Every ``SCHEDULE_POLL_S`` one replica at a time (a transaction-scoped advisory lock: the others skip the tick)
reads the active schedules, and for each one that is due puts its slot's request on
``audience-export-requests`` and records the slot, in that order, inside the same transaction. A crash
between the two sends the same request again on the next tick: its id is derived from the schedule and the
slot (:func:`~services.reconcile.schedule_slots.slot_request_id`), and the exporter handles a request id
once. A slot is never lost: it is recorded only once Kafka acknowledged its request.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Final

import asyncpg

from services.reconcile import schedules
from services.reconcile.schedule_slots import due_slot, slot_request_id
from shared.db import acquire
from shared.kafka import OutgoingMessage, Producer
from shared.logging import get_logger
from shared.retry import is_transient

log = get_logger(__name__)

# pg_advisory_xact_lock key of the scheduler ("sched" in ASCII): one replica fires at a time.
SCHEDULER_LOCK: Final = 0x7363686564


class Scheduler:
    def __init__(self, pool: asyncpg.Pool, producer: Producer, *, requests_topic: str) -> None:
        self._pool = pool
        self._producer = producer
        self._topic = requests_topic

    async def tick(self) -> list[tuple[int, datetime]]:
        """Fire what is due now; returns the (schedule, slot) pairs fired (empty when another replica holds
        the lock)."""
        fired: list[tuple[int, datetime]] = []
        async with acquire(self._pool) as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1::bigint)", SCHEDULER_LOCK):
                return fired
            now: datetime = await conn.fetchval("SELECT now()")
            for schedule in await schedules.due_for_update(conn):
                if isinstance(schedule, schedules.BrokenSchedule):
                    # Checked when added; a row edited by hand must not stop the other schedules.
                    log.error("schedule_invalid", schedule_id=schedule.schedule_id, error=schedule.error)
                    continue
                slot = due_slot(
                    schedule.cadence,
                    created=schedule.created_at,
                    anchor=schedule.anchor,
                    last_slot=schedule.last_slot,
                    now=now,
                )
                if slot is None:
                    continue
                request = schedule.request(slot_request_id(schedule.schedule_id, slot))
                await self._producer.send([OutgoingMessage.of(self._topic, request)])
                await schedules.record_fired(conn, schedule.schedule_id, slot, request.request_id)
                log.info(
                    "schedule_fired",
                    schedule_id=schedule.schedule_id,
                    slot=slot.isoformat(),
                    request_id=str(request.request_id),
                    audience=schedule.audience_name,
                )
                fired.append((schedule.schedule_id, slot))
        return fired

    async def run(self, poll_s: float) -> None:
        """The service's background loop: a tick every ``poll_s``; a database or broker away is retried."""
        while True:
            try:
                await self.tick()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("scheduler_retry_later", error=type(exc).__name__)
            await asyncio.sleep(poll_s)
