"""The real-time benchmark's lean load generator keeps the platform's rules: signed as the platform signs, one
retry on anything but 200, 3 s (here less) per attempt, keep-alive connections reused."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from shared.formats.realtime_signature import verify
from tests.bench.realtime_load import BadResponse, KeepAliveClient, read_status, send_at_rate, signed_request

KEY = b"load-key"


class Partner:
    """Answers 200 to well-signed bodies, except ``fail_first`` statuses and ``hang_first`` hung answers."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.fail_first: list[int] = []
        self.hang_first = 0
        self.peers: set[object] = set()
        self.collector_on: list[bool] = []  # whether the collector was enabled at each request (same process)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.bodies.append(body)
        self.collector_on.append(gc.isenabled())
        self.peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        if self.hang_first:
            self.hang_first -= 1
            await asyncio.sleep(5)
        if self.fail_first:
            return web.Response(status=self.fail_first.pop(0))
        signature = request.headers.get("X-Signature", "")
        return web.json_response({"ok": True}, status=200 if verify(body, signature, [KEY]) else 401)


@pytest_asyncio.fixture
async def partner() -> AsyncIterator[tuple[Partner, str]]:
    partner = Partner()
    app = web.Application()
    app.router.add_post("/platform/realtime", partner.handle)
    server = TestServer(app)
    await server.start_server()
    try:
        yield partner, str(server.make_url("/platform/realtime"))
    finally:
        await server.close()


async def test_signed_deliveries_are_taken_on_reused_connections(partner: tuple[Partner, str]) -> None:
    server, url = partner
    client = KeepAliveClient(url)
    try:
        requests = [signed_request(url, b'{"n": %d}' % k, KEY) for k in range(40)]
        sent_at, answers, seconds = await send_at_rate(client, requests, rate=400)
    finally:
        await client.close()
    assert all(a.ok and a.attempts == 1 for a in answers)
    assert sorted(server.bodies) == sorted(b'{"n": %d}' % k for k in range(40))
    assert len(sent_at) == 40
    assert sent_at == sorted(sent_at)
    assert seconds >= 36 / 400  # open loop at the rate (its last 10 ms slice starts at 90 ms), not at once
    assert client.connections_opened < 40  # kept alive


async def test_the_collector_does_not_pause_the_generator_while_it_sends(partner: tuple[Partner, str]) -> None:
    server, url = partner
    client = KeepAliveClient(url)
    requests = [signed_request(url, b'{"n": %d}' % k, KEY) for k in range(40)]
    try:
        _, answers, _ = await send_at_rate(client, requests, rate=400)
    finally:
        await client.close()
    assert all(a.ok for a in answers)
    assert server.collector_on == [False] * 40  # no automatic collection could start while the deliveries went
    assert gc.isenabled()


async def test_a_failure_is_retried_once_only(partner: tuple[Partner, str]) -> None:
    server, url = partner
    client = KeepAliveClient(url)
    try:
        server.fail_first = [503]
        retried = await client.deliver(signed_request(url, b"{}", KEY))
        server.fail_first = [503, 500, 500]
        failed = await client.deliver(signed_request(url, b"{}", KEY))
        assert server.fail_first == [500]  # the third status was never asked for
        server.fail_first = []
        wrong_key = await client.deliver(signed_request(url, b"{}", b"other"))
    finally:
        await client.close()
    assert (retried.status, retried.attempts) == (200, 2)
    assert (failed.status, failed.attempts) == (500, 2)
    assert (wrong_key.status, wrong_key.attempts) == (401, 2)


async def test_an_attempt_without_an_answer_in_time_is_a_failure(partner: tuple[Partner, str]) -> None:
    server, url = partner
    client = KeepAliveClient(url, timeout_s=0.2)
    try:
        server.hang_first = 1
        answer = await client.deliver(signed_request(url, b"{}", KEY))
    finally:
        await client.close()
    assert (answer.status, answer.attempts) == (200, 2)  # the hung connection dropped, the retry on a new one
    assert client.connections_opened == 2


async def _status_of(raw: bytes) -> int:
    reader = asyncio.StreamReader()
    reader.feed_data(raw)
    reader.feed_eof()
    return await read_status(reader)


async def test_responses_are_read_whole_and_non_http_refused() -> None:
    assert await _status_of(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX: y\r\n\r\n{}") == 200
    assert await _status_of(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n") == 503
    with pytest.raises(BadResponse):
        await _status_of(b"SSH-2.0-OpenSSH\r\n")
    with pytest.raises(BadResponse):
        await _status_of(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n")
    with pytest.raises(BadResponse):
        await _status_of(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
