"""Segment-event flushes paced by reconcile: at most a few flushes whose runs reconcile has not ended yet.

Every flush of segment events is a run per audience, and in reconcile a transaction of some twenty statements
whose cost hardly depends on its size. When reconcile falls behind for a moment (the machine stalls), flushes
made at the linger's pace queue on ``audience-membership`` faster than reconcile ends them, at the same cost
each, so the queue never drains: measured at 5,000 events/s, p99 went from 0.3 s to 4 to 25 s for the rest of the
run. Holding the next flush while ``limit`` flushes have runs reconcile has not ended lets the events wait in
ingest instead, where they coalesce: the next flush carries all of them as one run per audience, so runs per
second fall as reconcile slows, and reconcile's backlog stays at ``limit`` flushes.

The wait is bounded (``max_wait_s``): a reconcile that is down, or a run that never ends, costs a flush that
bound, after which the flushes it waited for are forgotten; each wait is measured
(``ab_segment_events_flush_wait_seconds``) and one that reached its bound counted
(``ab_segment_events_flush_wait_timeouts_total``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

from shared.db import Pool
from shared.logging import get_logger
from shared.runs.states import ENDED_STATES

log = get_logger(__name__)

EndedRuns = Callable[[list[uuid.UUID]], Awaitable[Collection[uuid.UUID]]]


def ended_runs_in(pool: Pool) -> EndedRuns:
    """Which of the given runs reconcile has ended (a final state in ``run``), one indexed lookup."""

    async def ended(run_ids: list[uuid.UUID]) -> set[uuid.UUID]:
        rows = await pool.fetch(
            "SELECT run_id FROM run WHERE run_id = ANY($1::uuid[]) AND state = ANY($2::text[])",
            run_ids,
            sorted(ENDED_STATES),
        )
        return {r["run_id"] for r in rows}

    return ended


class FlushWindowMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.waited = Histogram(
            "ab_segment_events_flush_wait_seconds",
            "Time a flush of segment events waited for reconcile to end the runs of earlier flushes "
            "(SEGMENT_EVENTS_FLUSHES_IN_FLIGHT): 0 while reconcile keeps up.",
            buckets=(0.0, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )
        self.timeouts = Counter(
            "ab_segment_events_flush_wait_timeouts_total",
            "Flushes of segment events that went out after SEGMENT_EVENTS_FLUSH_WAIT_MAX_MS without reconcile "
            "ending the runs they waited for (reconcile down or far behind).",
            registry=registry,
        )


class FlushWindow:
    def __init__(
        self,
        ended: EndedRuns,
        *,
        limit: int,
        max_wait_s: float,
        poll_s: float = 0.01,
        metrics: FlushWindowMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``limit``: flushes with runs not ended that a new flush waits behind (0: never waits)."""
        self._ended = ended
        self._limit = limit
        self._max_wait_s = max_wait_s
        self._poll_s = poll_s
        self._metrics = metrics
        self._clock = clock
        self._sleep = sleep
        self._open: deque[set[uuid.UUID]] = deque()  # each flush's runs not seen ended, oldest first

    @property
    def in_flight(self) -> int:
        return len(self._open)

    def sent(self, run_ids: Iterable[uuid.UUID]) -> None:
        """A flush's runs are on Kafka: reconcile's to end."""
        runs = set(run_ids)
        if runs and self._limit > 0:
            self._open.append(runs)

    async def room(self) -> float:
        """Return once fewer than ``limit`` flushes are in flight, or after ``max_wait_s``; the time waited."""
        if len(self._open) < self._limit or self._limit == 0:
            return 0.0
        start = self._clock()
        while True:
            await self._forget_ended()
            waited = self._clock() - start
            if len(self._open) < self._limit:
                self._observe(waited, timed_out=False)
                return waited
            if waited >= self._max_wait_s:
                # Given their chance: a run nobody ends (reconcile down, a run failed without a row) must not
                # hold every later flush too.
                stale = len(self._open) - self._limit + 1
                for _ in range(stale):
                    self._open.popleft()
                log.warning("segment_events_flush_wait_timeout", waited_s=round(waited, 3), forgotten=stale)
                self._observe(waited, timed_out=True)
                return waited
            await self._sleep(min(self._poll_s, self._max_wait_s - waited))

    async def _forget_ended(self) -> None:
        ended = set(await self._ended([run for runs in self._open for run in runs]))
        for runs in self._open:
            runs -= ended
        self._open = deque(runs for runs in self._open if runs)

    def _observe(self, waited: float, *, timed_out: bool) -> None:
        if self._metrics is None:
            return
        self._metrics.waited.observe(waited)
        if timed_out:
            self._metrics.timeouts.inc()
