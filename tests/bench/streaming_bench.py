"""Streaming benchmark: upstream segment events at a steady rate, latency from an event handed to Kafka to its
recipient's membership committed (tests/bench/commit_latency.py); the list checked exact at the end."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from shared.kafka import OutgoingMessage, Producer, ensure_topics
from shared.messages import SegmentEvent
from shared.segment_event_key import segment_event_key
from shared.settings import KafkaSettings
from tests.bench.campaign import PLATFORM_SEED, ecid, load_recipients
from tests.bench.commit_latency import CommitWatch, percentiles, records_commit_times
from tests.bench.output_checks import ListExpectation, check_lists
from tests.bench.stack import bench_stack
from tests.bench.stream_probe import StreamProbe, summary

# Slices of 50 ms in flight at most (1 s): past it the sender waits for the oldest, and ``rate_per_s`` shows
# the rate it could offer rather than a backlog piling up in the producer until its sends time out.
MAX_IN_FLIGHT = 20


class EventSlices:
    """The events, slice after slice of ``rate * tick`` (event i for recipient i + 1's ECID), encoded as they are
    sent: each from one template SegmentEvent's JSON with its event id and ID replaced (building a model per
    event cost this process ~150 µs an event on the loaded machine, more than 20,000/s allow)."""

    def __init__(self, topic: str, rate: int, total: int, tick: float) -> None:
        self.topic = topic
        self.total = total
        self.per_slice = max(1, int(rate * tick))
        template = SegmentEvent(
            event_id="b-0",
            segment_id="5001",
            id_type="ecid",
            data_source="visitors",
            id=ecid(1),
            op="add",
            occurred_at=datetime.now(UTC),
        )
        self._template = template.model_dump(mode="json")
        self._segment = template.segment_id

    def __len__(self) -> int:
        return -(-self.total // self.per_slice)

    def slice(self, number: int) -> list[OutgoingMessage]:
        first = number * self.per_slice
        return [self._record(i) for i in range(first, min(self.total, first + self.per_slice))]

    def _record(self, i: int) -> OutgoingMessage:
        # Keyed as SegmentEvent.key() keys it, by segment and ID: the segment's events spread over the partitions.
        member = ecid(i + 1)
        value = orjson.dumps({**self._template, "event_id": f"b-{i}", "id": member})
        return OutgoingMessage(self.topic, value, segment_event_key(self._segment, member))


async def _send_steadily(producer: Producer, slices: EventSlices, rate: int, watch: CommitWatch) -> float:
    """Hand the slices to Kafka at ``rate``; returns the seconds it took. A send waits for the broker's
    acknowledgement (a round trip and the producer's linger): awaited in turn, it would hold back the next
    slice, so slices go out side by side, as independent upstream producers would send them. Each slice is
    built into record batches (``send_batched``: the same partitions and order as ``send``): aiokafka's send per
    record cost this process 33 µs of CPU an event against 13, a third of a core at 20,000 events/s taken from
    the services it times, where upstream producers run on machines of their own."""
    in_flight: deque[asyncio.Task[None]] = deque()
    sent = 0
    started = time.perf_counter()
    try:
        for number in range(len(slices)):
            batch = slices.slice(number)
            delay = started + sent / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            while len(in_flight) >= MAX_IN_FLIGHT or (in_flight and in_flight[0].done()):
                await in_flight.popleft()  # a failed send fails the run here
            # Timed from before the hand-over to Kafka (recipient i + 1 holds the ECID of event i).
            watch.sent(range(sent + 1, sent + len(batch) + 1), time.perf_counter())
            in_flight.append(asyncio.create_task(producer.send_batched(batch)))
            sent += len(batch)
        elapsed = time.perf_counter() - started
        while in_flight:
            await in_flight.popleft()
        return elapsed
    finally:
        for task in in_flight:
            task.cancel()


TIMELINE_WINDOW_S = 5.0


def timeline(seen: Sequence[tuple[float, float]], started: float, window_s: float = TIMELINE_WINDOW_S) -> list[str]:
    """The latencies by when their events were sent, a line per ``window_s``: whether a slow run was slow from
    its start (a backlog that never drained), in one burst (a pause somewhere), or throughout."""
    windows: dict[int, list[float]] = {}
    for at, latency in seen:
        windows.setdefault(int((at - started) // window_s), []).append(latency)
    lines = []
    for number in sorted(windows):
        latencies = sorted(windows[number])
        p50, p99 = latencies[len(latencies) // 2], latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)]
        lines.append(
            f"  {number * window_s:5.0f}s  n={len(latencies):6d}  p50={p50:8.1f}  p99={p99:8.1f}"
            f"  max={latencies[-1]:8.1f} ms"
        )
    return lines


async def run_streaming(workdir: Path, rate: int, seconds: int) -> dict[str, Any]:
    total = rate * seconds
    async with bench_stack(workdir) as stack:
        print(f"streaming {rate:,}/s for {seconds}s: loading {total:,} recipients ...", flush=True)
        await load_recipients(stack.pool, total)
        await stack.ecsim_admin("POST", "/sim/seed", PLATFORM_SEED)
        await stack.start("reconcile")
        await stack.start("ingest")
        settings = KafkaSettings(topic_prefix=stack.topic_prefix)
        topic = f"{stack.topic_prefix}segment-events"
        await ensure_topics(settings, [topic])
        producer = Producer(settings, "bench")
        await producer.start()
        slices = EventSlices(topic, rate, total, tick=0.05)  # 50 ms slices: a steady rate, not bursts
        list_id = await stack.pool.fetchval("SELECT list_id FROM shared_audience WHERE audience_id = 'visitors-5001'")
        watch = CommitWatch(stack.pool, list_id, commit_times=await records_commit_times(stack.pool))
        print(f"streaming {rate:,}/s for {seconds}s: sending ...", flush=True)
        watcher = asyncio.create_task(watch.watch(total, timeout=seconds + 300))
        started = time.perf_counter()
        probe = StreamProbe(stack, started)
        probing = asyncio.create_task(probe.run())
        try:
            send_seconds = await _send_steadily(producer, slices, rate, watch)
            await producer.stop()
            await watcher
        finally:
            watcher.cancel()  # a failed send must not leave the poller running
            probing.cancel()
        print("\n".join([f"streaming {rate:,}/s: latency to commit by send time", *timeline(watch.seen, started)]))
        print("\n".join(["stages' backlog (highest in each 5 s) and the database's waits:", *probe.lines()]))
        print(
            f"watcher: {watch.polls} polls, {watch.rows_read:,} rows read (at most {watch.most_rows:,} in one), "
            f"{watch.poll_seconds:.1f} s polling"
        )
        async with stack.pool.acquire() as conn:
            await check_lists(conn, [ListExpectation("visitors-5001", 1, total, 0, "unknown_ecid")], "streaming")
        rss = stack.rss()
        waits = await probe.flush_waits()
    return {
        "events": total,
        "rate_per_s": round(total / send_seconds),
        **percentiles(watch.latencies_ms),
        "poll_interval_ms": round(watch.interval * 1000, 1),
        "latency_ends_at": "commit time" if watch.commit_times else "poll",
        **summary(probe),
        **waits,
        "rss_mb": rss,
    }
