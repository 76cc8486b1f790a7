"""ingest's real-time receiver in processes of its own (REALTIME_WORKERS), with the services running as
processes: the processes share the port and every delivery they answer is in ingest's /metrics at once;
they end with ingest however it ends; one that dies ends ingest (which its orchestrator restarts)."""

from __future__ import annotations

import asyncio
import os
import selectors
import signal
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest

from services.ecsim.realtime import user_changes
from shared.formats.realtime import delivery_body
from tests.bench.realtime_load import KeepAliveClient, signed_request
from tests.bench.rss_watch import child_pids
from tests.e2e.test_realtime_flow import (  # noqa: F401
    OLD_KEY,
    SEG_VISITORS,
    VISITORS_DESTINATION,
    RealtimeStack,
    issuer,
    stack,
    workers,
)
from tests.fixtures.bridge_db import ecid_of
from tests.fixtures.ecsim import ecsim, ecsim_server  # noqa: F401
from tests.fixtures.stack import start_service  # noqa: F401
from tests.helpers import eventually

pytestmark = pytest.mark.e2e


def _receivers(running: RealtimeStack) -> list[int]:
    return child_pids(running.ingest.process.pid)


def _is_receiver(pid: int) -> bool:
    try:
        return b"services.ingest.realtime_worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


async def _metrics(running: RealtimeStack) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{running.ingest.url}/metrics") as response:
        return await response.text()


def _sample(text: str, name: str) -> float:
    return next(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))


@pytest.mark.parametrize("workers", ["2"])
async def test_the_receiver_processes_share_the_port_and_every_answer_is_counted(
    stack: RealtimeStack,  # noqa: F811
) -> None:
    receivers = _receivers(stack)
    assert len(receivers) == 2
    assert all(_is_receiver(pid) for pid in receivers)
    status, body = await stack.ingest.get("/readyz")
    assert status == 200
    assert orjson.loads(body)["checks"]["realtime"] is True

    # 40 deliveries on up to 40 connections at once; answered 200 each, so every user is a member.
    client = KeepAliveClient(stack.url)
    requests = [
        signed_request(
            stack.url,
            delivery_body(
                user_dpid=1001,
                destination_id=VISITORS_DESTINATION,
                client_id="test",
                users=[user_changes(ecid_of(k), "ecid", {SEG_VISITORS: True})],
                at=datetime.now(UTC),
            ),
            OLD_KEY.encode(),
        )
        for k in range(1, 41)
    ]
    try:
        answers = await asyncio.gather(*(client.deliver(r) for r in requests))
        refused = await client.deliver(signed_request(stack.url, b"{}", b"a key nobody shared"))
    finally:
        await client.close()
    assert [a.status for a in answers] == [200] * 40
    assert refused.status == 401
    # Counted by the process that answered, and in ingest's /metrics at once (not after a periodic report).
    text = await _metrics(stack)
    assert _sample(text, 'ab_realtime_deliveries_total{outcome="accepted"}') == 40
    assert _sample(text, 'ab_realtime_deliveries_total{outcome="bad_signature"}') == 2  # with the retry
    assert _sample(text, "ab_realtime_response_seconds_count") == 42
    await stack.wait_members("rt-visitors", set(range(1, 41)))


@pytest.mark.parametrize("workers", ["2"])
async def test_the_receiver_processes_end_with_ingest_even_killed(
    stack: RealtimeStack,  # noqa: F811
) -> None:
    receivers = _receivers(stack)
    assert len(receivers) == 2
    await stack.ingest.kill()  # SIGKILL: ingest cannot tell them anything

    async def alive() -> list[int]:
        return [pid for pid in receivers if _is_receiver(pid)]

    await eventually(alive, until=lambda left: left == [], timeout=15)


@pytest.mark.parametrize("workers", ["2"])
async def test_ingest_stopped_stops_its_receiver_processes(
    stack: RealtimeStack,  # noqa: F811
) -> None:
    receivers = _receivers(stack)
    assert await stack.ingest.stop() == 0
    assert [pid for pid in receivers if _is_receiver(pid)] == []
    ends = [line for line in stack.ingest.log_lines() if line.get("event") == "realtime_worker_exit"]
    assert ends == []  # each exited 0 (a non-zero exit is logged)


async def test_a_receiver_process_that_dies_ends_ingest(
    stack: RealtimeStack,  # noqa: F811
) -> None:
    (receiver,) = _receivers(stack)
    os.kill(receiver, signal.SIGKILL)
    assert await asyncio.wait_for(stack.ingest.process.wait(), 30) == 1
    ended = [line for line in stack.ingest.log_lines() if line.get("event") == "worker_ended_unexpectedly"]
    assert ended
    assert ended[0]["task"] == "realtime-workers"


def _handshakes(port: int, connections: int, within_s: float) -> int:
    """Open ``connections`` at once to ``port``; how many the kernel completed within ``within_s`` (queued for
    an accept: past a full queue its SYNs are dropped, and a client retries only after 1 s)."""
    sockets = [socket.socket() for _ in range(connections)]
    done = 0
    with selectors.DefaultSelector() as selector:
        try:
            for sock in sockets:
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", port))
                selector.register(sock, selectors.EVENT_WRITE)
            deadline = time.monotonic() + within_s
            while done < connections and (left := deadline - time.monotonic()) > 0:
                for key, _ in selector.select(left):
                    selector.unregister(key.fileobj)
                    done += key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0  # type: ignore[union-attr]
        finally:
            for sock in sockets:
                sock.close()
    return done


@pytest.mark.parametrize("workers", ["0", "2"])
async def test_a_burst_of_connections_waits_for_busy_receivers_instead_of_being_dropped(
    stack: RealtimeStack,  # noqa: F811
    workers: str,  # noqa: F811
) -> None:
    # Every process that accepts on the port busy (stopped): 300 new connections at once, as the platform opens
    # them after a pause, are all queued. aiohttp listens with 128 unless told: the rest would wait 1 s or more.
    busy = _receivers(stack) if workers != "0" else [stack.ingest.process.pid]
    port = urlsplit(stack.url).port
    assert port is not None
    for pid in busy:
        os.kill(pid, signal.SIGSTOP)
    try:
        completed = await asyncio.to_thread(_handshakes, port, 300, 0.5)
    finally:
        for pid in busy:
            os.kill(pid, signal.SIGCONT)
    assert completed == 300
