"""Streaming benchmark: upstream segment events at a steady rate, latency from an event handed to Kafka to its
recipient's membership committed (tests/bench/commit_latency.py); the list checked exact at the end."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.kafka import OutgoingMessage, Producer, ensure_topics
from shared.messages import SegmentEvent
from shared.settings import KafkaSettings
from tests.bench.campaign import PLATFORM_SEED, ecid, load_recipients
from tests.bench.commit_latency import CommitWatch, percentiles
from tests.bench.output_checks import ListExpectation, check_lists
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
        list_id = await stack.pool.fetchval("SELECT list_id FROM shared_audience WHERE audience_id = 'visitors-5001'")
        watch = CommitWatch(stack.pool, list_id)
        watcher = asyncio.create_task(watch.watch(total, timeout=seconds + 300))
        try:
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
                # Timed from before the hand-over to Kafka (recipient i + 1 holds the ECID of event i).
                watch.sent(range(sent + 1, sent + len(batch) + 1), time.perf_counter())
                await producer.send([OutgoingMessage.of(topic, e) for e in batch])
                sent += len(batch)
            send_seconds = time.perf_counter() - started
            await producer.stop()
            await watcher
        finally:
            watcher.cancel()  # a failed send must not leave the poller running
        async with stack.pool.acquire() as conn:
            await check_lists(conn, [ListExpectation("visitors-5001", 1, total, 0, "unknown_ecid")], "streaming")
        rss = stack.rss()
    return {
        "events": total,
        "rate_per_s": round(total / send_seconds),
        **percentiles(watch.latencies_ms),
        "poll_interval_ms": round(watch.interval * 1000, 1),
        "rss_mb": rss,
    }
