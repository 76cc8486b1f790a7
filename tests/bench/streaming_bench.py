"""Streaming benchmark: upstream segment events at a steady rate, latency from event to list membership."""

from __future__ import annotations

import asyncio
import bisect
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.kafka import OutgoingMessage, Producer, ensure_topics
from shared.messages import SegmentEvent
from shared.settings import KafkaSettings
from tests.bench.campaign import PLATFORM_SEED, ecid, load_recipients
from tests.bench.stack import bench_stack


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
        print(f"streaming {rate:,}/s for {seconds}s: sending ...", flush=True)
        tick = 0.05  # send in 50 ms slices so the rate is steady, not bursty
        per_tick = max(1, int(rate * tick))
        sent = 0
        sent_at: list[tuple[int, float]] = []  # (index of the tick's first event, wall time it was sent)
        started = time.perf_counter()
        while sent < total:
            due = started + (sent / rate)
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            now = datetime.now(UTC)
            batch = [
                SegmentEvent(
                    event_id=f"b-{i}",
                    segment_id="5001",
                    id_type="ecid",
                    data_source="visitors",
                    id=ecid(i + 1),
                    op="add",
                    occurred_at=now,
                )
                for i in range(sent, min(total, sent + per_tick))
            ]
            sent_at.append((sent, time.time()))
            await producer.send([OutgoingMessage.of(topic, e) for e in batch])
            sent += len(batch)
        send_seconds = time.perf_counter() - started
        await producer.stop()
        deadline = time.monotonic() + 300
        while await stack.pool.fetchval("SELECT count(*) FROM list_member") < total:
            if time.monotonic() > deadline:
                raise TimeoutError("streamed events did not all reach the list")
            await asyncio.sleep(0.2)
        latencies = await _latencies(stack.pool, sent_at)
        rss = stack.rss()
    p50, p95, p99 = latencies
    return {
        "events": total,
        "rate_per_s": round(total / send_seconds),
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "rss_mb": rss,
    }


async def _latencies(pool: Any, sent_at: list[tuple[int, float]]) -> tuple[float, float, float]:
    """Latency of each event: when its recipient joined the list (the applying transaction's time) minus when
    the event was handed to Kafka."""
    rows = await pool.fetch("SELECT recipient_id, extract(epoch FROM added_at)::float8 AS at FROM list_member")
    firsts = [first for first, _ in sent_at]
    latencies = []
    for row in rows:
        tick = bisect.bisect_right(firsts, row["recipient_id"] - 1) - 1
        latencies.append((row["at"] - sent_at[tick][1]) * 1000)
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return round(q[49], 1), round(q[94], 1), round(q[98], 1)
