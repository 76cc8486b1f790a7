"""Real-time benchmark: the platform's signed deliveries of 10 users at a steady rate to ingest's
``/platform/realtime``, with the platform's rules (3 s per attempt, one retry), from the lean load generator
(tests/bench/realtime_load.py) so that the generator does not take the cores the bridge is measured on.

Reports the rate reached, the answer's p50/p99/max, the latency from a delivery's POST to its users' list
membership (p50/p99), the CPU each process used a delivery, and the resident memory of ingest and of each of
its real-time receiver processes (REALTIME_WORKERS) sampled every second (start, peak, end, the second half's
slope). The output is checked: every delivery answered 200, every user a member, and every one of those
processes' RSS flat (tests/bench/rss_watch.py: a run whose RSS rises more than 20% over its second half
fails).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.ecsim.realtime import RealtimeSender, RealtimeTarget, user_changes
from shared.formats.realtime import delivery_body
from tests.bench.campaign import PLATFORM_SEED, ecid, load_recipients
from tests.bench.commit_latency import records_commit_times
from tests.bench.output_checks import BenchOutputError
from tests.bench.realtime_load import Answer, KeepAliveClient, send_at_rate, signed_request
from tests.bench.rss_watch import RssWatch, check_flat, child_pids, cpu_seconds, rss_figures
from tests.bench.stack import BenchStack, bench_stack
from tests.fixtures.stack import free_port

KEY = b"bench-realtime-key"
USERS_PER_DELIVERY = 10
# ingest's SEGMENT_EVENTS_MAX_POLL in this scenario (the environment's, when set, wins): see _start.
REALTIME_MAX_POLL = 20_000


async def run_realtime(workdir: Path, rate: int, seconds: int) -> dict[str, Any]:
    deliveries = rate * seconds
    users = deliveries * USERS_PER_DELIVERY
    async with bench_stack(workdir) as stack:
        print(f"realtime {rate:,} deliveries/s for {seconds}s: loading {users:,} recipients ...", flush=True)
        await load_recipients(stack.pool, users)
        await stack.ecsim_admin("POST", "/sim/seed", PLATFORM_SEED)
        url = await _start(stack, workdir)
        await _warm_up(url)
        # Written and signed before the clock starts (each user is in one delivery only, so one time for all
        # changes nothing they mean).
        now = datetime.now(UTC)
        requests = [signed_request(url, _body(k * USERS_PER_DELIVERY + 1, now), KEY) for k in range(deliveries)]
        processes = _processes(stack)
        ingest = {name: pid for name, pid in processes.items() if name.partition(".")[0] == "ingest"}
        watches = {name: RssWatch(pid) for name, pid in ingest.items()}  # ingest and each receiver process
        samplers = [asyncio.create_task(watch.run()) for watch in watches.values()]
        client = KeepAliveClient(url)
        try:
            print(f"realtime {rate:,} deliveries/s for {seconds}s: sending ...", flush=True)
            cpu_before, own_before = _cpu(ingest), time.process_time()
            services_before = _services_cpu(processes)
            sent_at, answers, send_seconds = await send_at_rate(client, requests, rate)
            ingest_cpu, own_cpu = _cpu(ingest) - cpu_before, time.process_time() - own_before
        finally:
            for sampler in samplers:
                sampler.cancel()
            await asyncio.gather(*samplers, return_exceptions=True)
            await client.close()
        answered = _answer_figures(answers)
        print(
            f"realtime {rate:,} deliveries/s: {round(deliveries / send_seconds):,}/s reached, {answered}, ingest "
            f"{ingest_cpu / deliveries * 1000:.3f} ms CPU a delivery while sending, "
            f"sender {own_cpu / deliveries * 1000:.3f}",
            flush=True,
        )
        if answered["failed"]:
            raise BenchOutputError(
                f"{answered['failed']:,} of {deliveries:,} deliveries were not answered 200 after the retry"
            )
        await _wait_members(stack, users)
        ingest_cpu_to_members = _cpu(ingest) - cpu_before
        services_cpu = {k: v - services_before[k] for k, v in _services_cpu(processes).items()}
        latencies = await _member_latencies(stack, sent_at)
        # Printed before the memory checks, so that a run failing one still shows its latency.
        print(f"realtime {rate:,} deliveries/s: delivery -> member p50 {latencies[0]} ms, p99 {latencies[1]} ms")
        rss = stack.rss()
    memory = {name: rss_figures(watch.samples) for name, watch in watches.items()}
    for name, figures in memory.items():
        check_flat(figures, name)
    return {
        "deliveries": deliveries,
        "users_per_delivery": USERS_PER_DELIVERY,
        "segment_events_max_poll": _max_poll(),
        "rate_per_s": round(deliveries / send_seconds),
        **answered,
        "connections": client.connections_opened,
        # CPU per delivery: ingest with its receiver processes while the deliveries came (receiving, and
        # consuming what it could), the same until the last user was a member (all its work for them), and the
        # load generator.
        "ingest_cpu_ms_per_delivery": round(ingest_cpu / deliveries * 1000, 3),
        "ingest_cpu_ms_per_delivery_to_members": round(ingest_cpu_to_members / deliveries * 1000, 3),
        "sender_cpu_ms_per_delivery": round(own_cpu / deliveries * 1000, 3),
        # Each bridge process's CPU from the first delivery to the last member, per delivery.
        "cpu_ms_per_delivery": {k: round(v / deliveries * 1000, 3) for k, v in services_cpu.items()},
        "member_p50_ms": latencies[0],
        "member_p99_ms": latencies[1],
        "ingest_rss": memory.pop("ingest"),
        # Each real-time receiver process's (REALTIME_WORKERS), checked flat as ingest's.
        "receiver_rss": memory,
        "rss_mb": rss,
    }


def _processes(stack: BenchStack) -> dict[str, int]:
    """Each live bridge process: the services, and ingest's real-time receiver processes
    (``ingest.realtime-<n>``)."""
    processes = {name: s.process.pid for name, s in stack.services.items() if s.process.returncode is None}
    if "ingest" in processes:
        for n, pid in enumerate(child_pids(processes["ingest"])):
            processes[f"ingest.realtime-{n}"] = pid
    return processes


def _cpu(processes: dict[str, int]) -> float:
    return sum(cpu_seconds(pid) for pid in processes.values())


def _services_cpu(processes: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in processes.items()}


def _answer_figures(answers: Sequence[Answer]) -> dict[str, Any]:
    first_try = [a.elapsed_ms for a in answers if a.ok and a.attempts == 1] or [float("nan")] * 2
    q = statistics.quantiles(first_try, n=100, method="inclusive")
    return {
        "response_p50_ms": round(q[49], 1),
        "response_p99_ms": round(q[98], 1),
        "response_max_ms": round(max(first_try), 1),
        "failed": sum(1 for a in answers if not a.ok),
        "retried": sum(1 for a in answers if a.attempts > 1),
    }


def _max_poll() -> int:
    return int(os.environ.get("SEGMENT_EVENTS_MAX_POLL", REALTIME_MAX_POLL))


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
        # As the README advises for a real-time feed: its events are keyed by segment, so a busy segment is one
        # partition, whose polls are claimed one after the other; polls of 5,000 fell behind at 2,000
        # deliveries/s over 30 s (member p99 1.8-7.0 s), polls of 20,000 kept up (0.48 and 0.68 s).
        SEGMENT_EVENTS_MAX_POLL=str(_max_poll()),
    )
    return f"http://127.0.0.1:{port}/platform/realtime"


def _body(first_user: int, at: datetime) -> bytes:
    users = [user_changes(ecid(i), "ecid", {5001: True}) for i in range(first_user, first_user + USERS_PER_DELIVERY)]
    return delivery_body(user_dpid=1001, destination_id=7001, client_id="bench", users=users, at=at)


async def _warm_up(url: str) -> None:
    """One delivery of nobody's segment, sent as ecsim sends it: loads the audience directory."""
    body = delivery_body(user_dpid=1001, destination_id=7001, client_id="bench", users=[], at=datetime.now(UTC))
    sender = RealtimeSender()
    try:
        result = await sender.send(RealtimeTarget(url, KEY), body)
    finally:
        await sender.close()
    if not result.ok:
        raise RuntimeError(f"ingest does not take real-time deliveries: {result}")


async def _wait_members(stack: BenchStack, users: int) -> None:
    deadline = time.monotonic() + 300
    while (count := await stack.pool.fetchval("SELECT count(*) FROM list_member")) < users:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {count:,} of {users:,} delivered users reached the list")
        await asyncio.sleep(0.2)


async def _member_latencies(stack: BenchStack, sent_at: Sequence[float]) -> tuple[float, float]:
    """Per user: when they joined the list minus their delivery's POST. Joined: the applying transaction's commit
    where the server records commit times (the private clusters: tests/bench/commit_latency.py), else its start
    (``added_at``, earlier than the commit by the transaction's length)."""
    joined = "pg_xact_commit_timestamp(xmin)" if await records_commit_times(stack.pool) else "added_at"
    rows = await stack.pool.fetch(f"SELECT recipient_id, extract(epoch FROM {joined})::float8 AS at FROM list_member")
    latencies = [(r["at"] - sent_at[(r["recipient_id"] - 1) // USERS_PER_DELIVERY]) * 1000 for r in rows]
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return round(q[49], 1), round(q[98], 1)
