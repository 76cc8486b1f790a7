"""Recipient changes benchmark: upserts through ``recipient-changes`` into reconcile, and the latency from a
click on ``visitor-links`` to list membership.

* throughput: ``count`` upserts (new recipients, then the same recipients again with a new e-mail: half
  inserts, half updates) are produced to the topic first, then reconcile starts; changes/s is ``count`` over
  the time from reconcile ready to the last change applied (consume, decode, COPY, version check, upsert);
* latency: ``clicks`` recipients without a visitor link, each with an ECID an import could not place; clicks
  at ``rate``/s, each timed from its send to its recipient joining the list (the applying transaction's time).
"""

from __future__ import annotations

import asyncio
import bisect
import statistics
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from services.reconcile.catalog import CatalogImportAudience, upsert_data_source, upsert_import_audience
from shared.kafka import OutgoingMessage, Producer, ensure_topics
from shared.messages import VisitorLink
from shared.settings import KafkaSettings
from tests.bench.campaign import VISITORS, ecid
from tests.bench.output_checks import ListExpectation, check_lists
from tests.bench.recipient_output import CRM_ID, check_recipients, email_of
from tests.bench.stack import BenchStack, bench_stack

CHUNK = 20_000
# The first of the click-latency phase's recipients: far above the upserted ones.
CLICKERS = 10_000_000_000


def _upsert(i: int, generation: int) -> bytes:
    # The native message as its model writes it (built directly: the producer, not the bridge, is measured
    # least here).
    return orjson.dumps(
        {"schema_version": 1, "recipient_id": i, "op": "upsert", "email": email_of(i, generation),
         "crm_id": CRM_ID.format(i=i), "opted_out": False, "position": generation}
    )  # fmt: skip


async def _produce_upserts(stack: BenchStack, count: int) -> float:
    settings = KafkaSettings(topic_prefix=stack.topic_prefix)
    topic = f"{stack.topic_prefix}recipient-changes"
    await ensure_topics(settings, [topic])
    producer = Producer(settings, "bench")
    await producer.start()
    half = count // 2
    started = time.perf_counter()
    try:
        for generation, n in ((1, half), (2, count - half)):
            for start in range(1, n + 1, CHUNK):
                await producer.send(
                    [
                        OutgoingMessage(topic=topic, value=_upsert(i, generation), key=str(i).encode())
                        for i in range(start, min(start + CHUNK, n + 1))
                    ]
                )
    finally:
        await producer.stop()
    return time.perf_counter() - started


# The last recipients of the second generation probed while waiting: every partition (by key) holds some of
# them, and a partition applies in order, so once they are all applied so is everything before them.
TAIL = 1000
_TAIL_APPLIED = "SELECT count(*) FROM recipient_version WHERE recipient_id = ANY($1::bigint[]) AND position = 2"


async def _wait_applied(stack: BenchStack, count: int, timeout: float) -> float:
    """Wait until all ``count`` changes are applied; returns when (perf_counter) the last of them was seen.

    Polled through a key probe of the tail, not a count of the whole table: counting 500,000 versions four
    times a second took a sixth of a core from the service being measured. Confirmed by a full count once."""
    deadline = time.monotonic() + timeout
    second = count - count // 2
    tail = list(range(max(1, second - TAIL + 1), second + 1))
    while True:
        if await stack.pool.fetchval(_TAIL_APPLIED, tail) == len(tail):
            seen = time.perf_counter()
            total = await stack.pool.fetchval("SELECT count(*) FROM recipient_version")
            newest = await stack.pool.fetchval("SELECT count(*) FROM recipient_version WHERE position = 2")
            if total == second and newest == second:
                return seen
        if time.monotonic() > deadline:
            raise TimeoutError("recipient changes did not all apply")
        await asyncio.sleep(0.25)


async def run_recipient_changes(workdir: Path, count: int, clicks_per_s: int, click_seconds: int) -> dict[str, Any]:
    async with bench_stack(workdir) as stack:
        print(f"recipient_changes: producing {count:,} upserts ...", flush=True)
        produce_s = await _produce_upserts(stack, count)
        reconcile = await stack.start("reconcile")
        started = time.perf_counter()
        print("recipient_changes: reconcile applying ...", flush=True)
        apply_s = await _wait_applied(stack, count, timeout=1800) - started
        # Exactly the expected rows, or BENCHMARK FAILED and no figure (tests/bench/recipient_output.py).
        await check_recipients(stack.pool, count - count // 2, below=CLICKERS)
        figures: dict[str, Any] = {
            "changes": count,
            "produce_per_s": round(count / produce_s),
            "changes_per_s": round(count / apply_s),
            "apply_s": round(apply_s, 1),
        }
        figures |= await _click_latency(stack, clicks_per_s, click_seconds)
        # Every click's recipient joined the list and no unmatched ID is left.
        clicks = figures["clicks"]
        await check_lists(stack.pool, [ListExpectation("clicks", CLICKERS, clicks, 0, "unknown_ecid")], "clicks")
        figures["rss_mb"] = stack.rss()
        assert reconcile.process.returncode is None
    return figures


async def _seed_unmatched_clickers(stack: BenchStack, first: int, n: int) -> None:
    """Recipients ``first``… without a visitor link, each with an unmatched ECID of an import audience."""
    async with stack.pool.acquire() as conn:
        await upsert_data_source(conn, VISITORS)
        await upsert_import_audience(
            conn,
            CatalogImportAudience(
                audience_id="clicks", name="clicks", platform_segment_id=5001, data_source="visitors", list="Clicks"
            ),
        )
        run_id = uuid.uuid4()
        await conn.copy_records_to_table(
            "recipient", records=[(i, f"c{i}@example.com") for i in range(first, first + n)],
            columns=("recipient_id", "email"),
        )  # fmt: skip
        await conn.copy_records_to_table(
            "unmatched_id",
            records=[("clicks", "ecid", ecid(i), "unknown_ecid", run_id) for i in range(first, first + n)],
            columns=("audience_id", "id_type", "id", "reason", "run_id"),
        )
        await conn.execute("ANALYZE recipient; ANALYZE unmatched_id")


async def _click_latency(stack: BenchStack, rate: int, seconds: int) -> dict[str, Any]:
    total = rate * seconds
    first = CLICKERS
    await _seed_unmatched_clickers(stack, first, total)
    producer = Producer(KafkaSettings(topic_prefix=stack.topic_prefix), "bench")
    await producer.start()
    topic = f"{stack.topic_prefix}visitor-links"
    print(f"recipient_changes: {rate:,} clicks/s for {seconds}s ...", flush=True)
    tick = 0.05
    per_tick = max(1, int(rate * tick))
    sent = 0
    sent_at: list[tuple[int, float]] = []
    started = time.perf_counter()
    try:
        while sent < total:
            delay = started + sent / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            now = datetime.now(UTC)
            batch = [
                VisitorLink(ecid=ecid(first + i), recipient_id=first + i, seen_at=now)
                for i in range(sent, min(total, sent + per_tick))
            ]
            sent_at.append((first + sent, time.time()))
            await producer.send([OutgoingMessage.of(topic, link) for link in batch])
            sent += len(batch)
    finally:
        await producer.stop()
    send_s = time.perf_counter() - started
    deadline = time.monotonic() + 300
    members = "SELECT count(*) FROM list_member"
    while await stack.pool.fetchval(members) < total:
        if time.monotonic() > deadline:
            raise TimeoutError("clicks did not all reach the list")
        await asyncio.sleep(0.2)
    rows = await stack.pool.fetch("SELECT recipient_id, extract(epoch FROM added_at)::float8 AS at FROM list_member")
    firsts = [f for f, _ in sent_at]
    latencies = [(r["at"] - sent_at[bisect.bisect_right(firsts, r["recipient_id"]) - 1][1]) * 1000 for r in rows]
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "clicks": total,
        "click_rate_per_s": round(total / send_s),
        "click_p50_ms": round(q[49], 1),
        "click_p99_ms": round(q[98], 1),
    }
