"""Segment-event flushes wait behind reconcile's unfinished runs, never longer than their bound."""

from __future__ import annotations

import uuid

from prometheus_client import CollectorRegistry

from services.ingest.flush_window import FlushWindow, FlushWindowMetrics


class Reconcile:
    """Which runs are ended, and a clock the window's sleeps move (nothing is really waited)."""

    def __init__(self) -> None:
        self.ended: set[uuid.UUID] = set()
        self.now = 0.0
        self.asked = 0
        self.end_after: dict[uuid.UUID, float] = {}  # a run ends once the clock reaches this

    async def lookup(self, run_ids: list[uuid.UUID]) -> set[uuid.UUID]:
        self.asked += 1
        self.ended |= {r for r, at in self.end_after.items() if self.now >= at}
        return {r for r in run_ids if r in self.ended}

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds

    def clock(self) -> float:
        return self.now


def _window(reconcile: Reconcile, *, limit: int = 2, max_wait_s: float = 1.0) -> tuple[FlushWindow, CollectorRegistry]:
    registry = CollectorRegistry()
    window = FlushWindow(
        reconcile.lookup,
        limit=limit,
        max_wait_s=max_wait_s,
        poll_s=0.01,
        metrics=FlushWindowMetrics(registry),
        clock=reconcile.clock,
        sleep=reconcile.sleep,
    )
    return window, registry


def _runs(n: int) -> list[uuid.UUID]:
    return [uuid.uuid4() for _ in range(n)]


async def test_below_the_limit_a_flush_goes_at_once_without_asking_postgres() -> None:
    reconcile = Reconcile()
    window, registry = _window(reconcile)
    assert await window.room() == 0.0
    window.sent(_runs(3))  # one flush, three audiences
    assert await window.room() == 0.0
    assert reconcile.asked == 0
    assert registry.get_sample_value("ab_segment_events_flush_wait_seconds_count") == 0.0


async def test_a_flush_waits_until_reconcile_ends_an_earlier_flushs_runs() -> None:
    reconcile = Reconcile()
    window, registry = _window(reconcile)
    first, second = _runs(2), _runs(1)
    window.sent(first)
    window.sent(second)
    # The first flush is ended only once both its runs are: one at 0.1 s, the other at 0.3 s.
    reconcile.end_after = {first[0]: 0.1, first[1]: 0.3}
    waited = await window.room()
    assert 0.3 <= waited < 0.32
    assert window.in_flight == 1
    assert registry.get_sample_value("ab_segment_events_flush_wait_seconds_count") == 1.0
    assert registry.get_sample_value("ab_segment_events_flush_wait_timeouts_total") == 0.0


async def test_flushes_ended_out_of_order_free_their_slots() -> None:
    reconcile = Reconcile()
    window, _ = _window(reconcile)
    first, second = _runs(1), _runs(1)
    window.sent(first)
    window.sent(second)
    reconcile.ended = set(second)  # another audience's run ended first
    assert await window.room() == 0.0
    assert window.in_flight == 1


async def test_the_wait_is_bounded_and_the_stale_flushes_forgotten() -> None:
    reconcile = Reconcile()  # reconcile down: nothing ever ends
    window, registry = _window(reconcile, limit=2, max_wait_s=0.5)
    window.sent(_runs(1))
    window.sent(_runs(1))
    waited = await window.room()
    assert waited == 0.5
    assert window.in_flight == 1  # room for exactly the next flush
    assert registry.get_sample_value("ab_segment_events_flush_wait_timeouts_total") == 1.0
    # The next flush waits its bound again (one per bound while reconcile is down), never more.
    window.sent(_runs(1))
    before = reconcile.now
    assert await window.room() == 0.5
    assert reconcile.now - before == 0.5


async def test_limit_zero_never_waits_nor_keeps_anything() -> None:
    reconcile = Reconcile()
    window, _ = _window(reconcile, limit=0)
    for _ in range(5):
        window.sent(_runs(2))
        assert await window.room() == 0.0
    assert window.in_flight == 0
    assert reconcile.asked == 0


async def test_a_flush_with_no_run_takes_no_slot() -> None:
    reconcile = Reconcile()
    window, _ = _window(reconcile, limit=1)
    window.sent([])  # every event of the poll was a duplicate: nothing emitted
    assert await window.room() == 0.0
