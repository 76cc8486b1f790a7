"""The streaming benchmark's watcher (the runs of consecutive awaited recipients), timeline and probe."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from services.ingest.flush_window import FlushWindowMetrics
from tests.bench.commit_latency import COMMIT_TIMES_INTERVAL_S, DEFAULT_INTERVAL_S, CommitWatch, awaited_ranges
from tests.bench.stream_probe import Sample, StreamProbe, flush_waits_of, lag_of
from tests.bench.streaming_bench import timeline


@given(st.sets(st.integers(min_value=0, max_value=200), max_size=80))
def test_awaited_ranges_cover_exactly_the_awaited_ids_in_maximal_runs(awaited: set[int]) -> None:
    lows, highs = awaited_ranges(awaited)
    covered = [i for lo, hi in zip(lows, highs, strict=True) for i in range(lo, hi + 1)]
    assert covered == sorted(awaited)
    # Maximal: two ranges never touch (else they would be one).
    assert all(lows[k + 1] > highs[k] + 1 for k in range(len(lows) - 1))


def test_the_timeline_gives_each_window_of_send_times_its_percentiles() -> None:
    seen = [(100.0 + i / 100, 10.0) for i in range(100)] + [(106.0, 5000.0), (106.5, 7000.0)]
    lines = timeline(seen, started=100.0, window_s=5.0)
    assert len(lines) == 2
    assert "n=   100" in lines[0]
    assert "p99=    10.0" in lines[0]
    assert lines[1].split()[0] == "5s"
    assert "max=  7000.0" in lines[1]


def test_the_probe_sums_a_topics_lag_over_its_partitions_and_windows_the_samples() -> None:
    page = "\n".join(
        [
            "# HELP ab_consumer_lag Messages behind",
            'ab_consumer_lag{topic="b1.segment-events",partition="0"} 120.0',
            'ab_consumer_lag{topic="b1.segment-events",partition="1"} 30.0',
            'ab_consumer_lag{topic="b1.audience-membership",partition="4"} 7.0',
            'ab_consumer_last_commit{topic="b1.segment-events"} 1.0',
        ]
    )
    assert lag_of(page, "segment-events") == 150
    assert lag_of(page, "audience-membership") == 7
    probe = StreamProbe(stack=None, started=0.0)  # type: ignore[arg-type]
    probe.samples = [
        Sample(0.5, {"ingest": 10, "reconcile": 1}, {"Lock:transactionid": 1}),
        Sample(1.5, {"ingest": 40, "reconcile": 0}, {"Lock:transactionid": 2, "active": 1}),
        Sample(5.5, {"ingest": 5, "reconcile": 3}, {}),
    ]
    first, second = probe.lines()
    assert "lag ingest      40  reconcile    1" in first
    assert "Lock:transactionid 3" in first
    assert "lag ingest       5  reconcile    3" in second


def test_the_probe_reads_ingests_waits_for_reconcile_from_its_real_metrics_page() -> None:
    registry = CollectorRegistry()
    metrics = FlushWindowMetrics(registry)
    for waited in (0.0, 0.25, 1.0):
        metrics.waited.observe(waited)
    metrics.timeouts.inc()
    page = generate_latest(registry).decode()
    assert flush_waits_of(page) == {"flush_waits": 3.0, "flush_wait_s": 1.25, "flush_wait_timeouts": 1.0}
    assert flush_waits_of("") == {}


class _Rows:
    """A pool answering each poll with the rows given (recipient ids and, when given, their commit times)."""

    def __init__(self, *polls: list[dict[str, Any]]) -> None:
        self.polls = list(polls)
        self.asked: list[str] = []

    async def fetch(self, query: str, *_args: object) -> list[dict[str, Any]]:
        self.asked.append(query)
        return self.polls.pop(0)


async def test_with_commit_times_a_latency_ends_at_its_rows_commit_not_at_the_poll() -> None:
    now = datetime.now(UTC)
    pool = _Rows(
        [{"recipient_id": 1, "committed": now + timedelta(milliseconds=40)}],
        [{"recipient_id": 2, "committed": None}],  # no commit time (a frozen row): the poll's time, as without
    )
    watch = CommitWatch(pool, list_id=7, commit_times=True)
    assert watch.interval == COMMIT_TIMES_INTERVAL_S
    sent = now.timestamp() - (time.time() - time.perf_counter())  # ``now`` on the watcher's clock
    watch.sent([1], sent)
    watch.sent([2], time.perf_counter() - 0.2)
    assert await watch.poll_once() == 1
    assert watch.latencies_ms[0] == pytest.approx(40, abs=2)
    assert await watch.poll_once() == 1
    assert watch.latencies_ms[1] >= 200  # ended at the second poll, at least 200 ms after its send
    assert all("pg_xact_commit_timestamp" in q for q in pool.asked)


async def test_without_commit_times_a_latency_ends_at_the_poll_that_saw_the_row() -> None:
    pool = _Rows([{"recipient_id": 1}])
    watch = CommitWatch(pool, list_id=7)
    assert watch.interval == DEFAULT_INTERVAL_S
    watch.sent([1], time.perf_counter() - 0.2)
    assert await watch.poll_once() == 1
    assert watch.latencies_ms[0] >= 200
    assert "pg_xact_commit_timestamp" not in pool.asked[0]
