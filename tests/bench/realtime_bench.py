"""Real-time benchmark: the platform's signed deliveries of 10 users at a steady rate, sent as ecsim sends them
(``services.ecsim.realtime.RealtimeSender``: 3 s timeout, one retry) to ingest's ``/platform/realtime``.

Reports the rate reached, the answer's p50/p99, the latency from a delivery's POST to its users' list
membership (p50/p99), failures, and ingest's resident memory at the start and end of the sending and its
peak (flat: no growth with the number of deliveries). The output is checked: every user must be a member.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.ecsim.realtime import RealtimeSender, RealtimeTarget, SendResult, user_changes
from shared.formats.realtime import delivery_body
from tests.bench.campaign import PLATFORM_SEED, ecid, load_recipients
from tests.bench.stack import BenchStack, bench_stack, peak_rss_mb
from tests.fixtures.stack import free_port

KEY = b"bench-realtime-key"
USERS_PER_DELIVERY = 10
TICK_S = 0.02  # deliveries are started in 20 ms slices so the rate is steady, not bursty


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def run_realtime(workdir: Path, rate: int, seconds: int) -> dict[str, Any]:
    deliveries = rate * seconds
    users = deliveries * USERS_PER_DELIVERY
    async with bench_stack(workdir) as stack:
        print(f"realtime {rate:,} deliveries/s for {seconds}s: loading {users:,} recipients ...", flush=True)
        await load_recipients(stack.pool, users)
        await stack.ecsim_admin("POST", "/sim/seed", PLATFORM_SEED)
        url = await _start(stack, workdir)
        ingest_pid = stack.services["ingest"].process.pid
        sender = RealtimeSender()
        try:
            await _warm_up(sender, url)
            rss_before = _rss_mb(ingest_pid)
            print(f"realtime {rate:,} deliveries/s for {seconds}s: sending ...", flush=True)
            sent_at, results, send_seconds = await _send(sender, url, rate, deliveries)
            rss_after = _rss_mb(ingest_pid)
        finally:
            await sender.close()
        await _wait_members(stack, users)
        latencies = await _member_latencies(stack, sent_at)
        rss = stack.rss()
        rss_peak = round(peak_rss_mb(ingest_pid), 1)
    answers = [r.elapsed_ms for r in results if r.ok and r.attempts == 1]
    q = statistics.quantiles(answers, n=100, method="inclusive")
    return {
        "deliveries": deliveries,
        "users_per_delivery": USERS_PER_DELIVERY,
        "rate_per_s": round(deliveries / send_seconds),
        "response_p50_ms": round(q[49], 1),
        "response_p99_ms": round(q[98], 1),
        "failed": sum(1 for r in results if not r.ok),
        "retried": sum(1 for r in results if r.attempts > 1),
        "member_p50_ms": latencies[0],
        "member_p99_ms": latencies[1],
        "ingest_rss_start_mb": round(rss_before, 1),
        "ingest_rss_end_mb": round(rss_after, 1),
        "ingest_rss_peak_mb": rss_peak,
        "rss_mb": rss,
    }


async def _start(stack: BenchStack, workdir: Path) -> str:
    keys = workdir / "realtime-keys"
    keys.write_bytes(KEY + b"\n")
    port = free_port()
    await stack.start("reconcile")
    await stack.start(
        "ingest",
        REALTIME_ENABLED="true",
        REALTIME_PORT=str(port),
        REALTIME_SIGNING_KEYS_FILE=str(keys),
    )
    return f"http://127.0.0.1:{port}/platform/realtime"


def _body(first_user: int, at: datetime) -> bytes:
    users = [user_changes(ecid(i), "ecid", {5001: True}) for i in range(first_user, first_user + USERS_PER_DELIVERY)]
    return delivery_body(user_dpid=1001, destination_id=7001, client_id="bench", users=users, at=at)


async def _warm_up(sender: RealtimeSender, url: str) -> None:
    """One delivery of nobody's segment: opens the connections and loads the audience directory."""
    body = delivery_body(user_dpid=1001, destination_id=7001, client_id="bench", users=[], at=datetime.now(UTC))
    result = await sender.send(RealtimeTarget(url, KEY), body)
    if not result.ok:
        raise RuntimeError(f"ingest does not take real-time deliveries: {result}")


async def _send(
    sender: RealtimeSender, url: str, rate: int, deliveries: int
) -> tuple[list[float], list[SendResult], float]:
    """Start each delivery at its due time (open loop: a slow answer does not slow the sending down).

    The bodies are written before the clock starts: writing them while sending took a fifth of the load
    generator's CPU, which shares the 2 cores with ingest (each user is in one delivery only, so one time
    for all changes nothing they mean)."""
    target = RealtimeTarget(url, KEY)
    now = datetime.now(UTC)
    bodies = [_body(k * USERS_PER_DELIVERY + 1, now) for k in range(deliveries)]
    sent_at: list[float] = []  # wall time of delivery k's POST; its users are k*10+1 .. k*10+10
    tasks: list[asyncio.Task[SendResult]] = []
    started = time.perf_counter()
    per_tick = max(1, int(rate * TICK_S))
    k = 0
    while k < deliveries:
        delay = started + k / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        for _ in range(min(per_tick, deliveries - k)):
            sent_at.append(time.time())
            tasks.append(asyncio.create_task(sender.send(target, bodies[k], users=USERS_PER_DELIVERY)))
            k += 1
    results = await asyncio.gather(*tasks)
    return sent_at, list(results), time.perf_counter() - started


async def _wait_members(stack: BenchStack, users: int) -> None:
    deadline = time.monotonic() + 300
    while (count := await stack.pool.fetchval("SELECT count(*) FROM list_member")) < users:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {count:,} of {users:,} delivered users reached the list")
        await asyncio.sleep(0.2)


async def _member_latencies(stack: BenchStack, sent_at: Sequence[float]) -> tuple[float, float]:
    """Per user: when they joined the list (the applying transaction's time) minus their delivery's POST."""
    rows = await stack.pool.fetch("SELECT recipient_id, extract(epoch FROM added_at)::float8 AS at FROM list_member")
    latencies = [(r["at"] - sent_at[(r["recipient_id"] - 1) // USERS_PER_DELIVERY]) * 1000 for r in rows]
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return round(q[49], 1), round(q[98], 1)
