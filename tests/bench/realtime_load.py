"""The real-time benchmark's load generator: the platform's signed POSTs at a steady rate, as lean as it can be.

The generator is not what is measured, but it shares the 2 cores with ingest, Kafka and Postgres: with
ecsim's aiohttp sender (``services.ecsim.realtime.RealtimeSender``) it took about as much CPU per delivery as
ingest itself. So every request is written whole (request line, headers, signature, body) before the clock
starts, and sent as bytes on raw HTTP/1.1 keep-alive connections. The platform's rules stay: each attempt
has 3 s for its answer, anything but ``200`` (another status, a timeout, a broken connection) is a failure,
and a failed delivery is sent once more, only once.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from shared.formats.realtime_signature import SignatureAlgorithm, sign

TIMEOUT_S: Final = 3.0
ATTEMPTS: Final = 2  # the first try and the one retry
TICK_S: Final = 0.01  # deliveries are started in 10 ms slices so the rate is steady, not bursty


class BadResponse(Exception):
    """The answer is not an HTTP/1.1 response this client can read."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int | None  # the last attempt's status (None: no answer)
    attempts: int
    elapsed_ms: float  # from the first attempt's start to the last attempt's answer

    @property
    def ok(self) -> bool:
        return self.status == 200


def signed_request(
    url: str, body: bytes, key: bytes, header: str = "X-Signature", algorithm: SignatureAlgorithm = "sha1"
) -> bytes:
    """The whole POST of ``body`` to ``url``, signed as the platform signs it (an HMAC of the body)."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{header}: {sign(body, key, algorithm)}\r\n\r\n"
    )
    return head.encode("ascii") + body


async def read_status(reader: asyncio.StreamReader) -> int:
    """One response's status; its headers and body are read (and dropped) so the connection can be reused."""
    status_line = await reader.readline()
    fields = status_line.split(b" ", 2)
    if len(fields) < 2 or not fields[0].startswith(b"HTTP/1.") or not fields[1].isdigit():
        raise BadResponse(f"not an HTTP/1.1 status line: {status_line[:80]!r}")
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
        elif name.strip().lower() == b"transfer-encoding":
            raise BadResponse("chunked answers are not read by this client")
    if line == b"":
        raise BadResponse("connection closed inside the headers")
    await reader.readexactly(length)
    return int(fields[1])


class KeepAliveClient:
    """Keep-alive connections to one server, one request at a time each; an idle one is reused, else one more
    is opened (open loop: a slow answer does not hold the next delivery back)."""

    def __init__(self, url: str, timeout_s: float = TIMEOUT_S) -> None:
        parts = urlsplit(url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"the URL needs a host and a port: {url}")
        self._host, self._port = parts.hostname, parts.port
        self._timeout_s = timeout_s
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._open: set[asyncio.StreamWriter] = set()
        self.connections_opened = 0

    async def post(self, request: bytes) -> int | None:
        """The status of one attempt (None: no answer within the timeout, or a broken connection)."""
        try:
            async with asyncio.timeout(self._timeout_s):
                if self._idle:
                    reader, writer = self._idle.pop()
                else:
                    reader, writer = await asyncio.open_connection(self._host, self._port)
                    self._open.add(writer)
                    self.connections_opened += 1
                try:
                    writer.write(request)
                    status = await read_status(reader)
                except BaseException:
                    self._drop(writer)
                    raise
        except (OSError, TimeoutError, BadResponse, asyncio.IncompleteReadError, ValueError):
            return None
        self._idle.append((reader, writer))
        return status

    async def deliver(self, request: bytes) -> Answer:
        started = time.perf_counter()
        status: int | None = None
        attempts = 0
        while attempts < ATTEMPTS and status != 200:
            attempts += 1
            status = await self.post(request)
        return Answer(status, attempts, (time.perf_counter() - started) * 1000)

    def _drop(self, writer: asyncio.StreamWriter) -> None:
        self._open.discard(writer)
        writer.close()

    async def close(self) -> None:
        writers, self._open = list(self._open), set()
        self._idle.clear()
        for writer in writers:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)


@contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic collection in this process until the block ends (then one full collection). The generator's
    pauses would be counted as the server's: at 2,000 deliveries/s its full collections (the tasks and answers it
    holds) took ~100 ms each, which every delivery in flight then seemed to wait, and the deliveries due
    meanwhile went out in one burst. What a collection would find is bounded by the run's deliveries."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.collect()


async def send_at_rate(
    client: KeepAliveClient, requests: Sequence[bytes], rate: int
) -> tuple[list[float], list[Answer], float]:
    """Start request k at ``k / rate`` s (open loop), with the collector paused. Returns each request's
    wall-clock start, the answers and the seconds the sending took (until the last answer)."""
    with collector_paused():
        return await _send_at_rate(client, requests, rate)


async def _send_at_rate(
    client: KeepAliveClient, requests: Sequence[bytes], rate: int
) -> tuple[list[float], list[Answer], float]:
    sent_at: list[float] = []
    tasks: list[asyncio.Task[Answer]] = []
    per_tick = max(1, round(rate * TICK_S))
    started = time.perf_counter()
    k = 0
    while k < len(requests):
        delay = started + k / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.time()
        for request in requests[k : k + per_tick]:
            sent_at.append(now)
            tasks.append(asyncio.create_task(client.deliver(request)))
        k += per_tick
    answers = await asyncio.gather(*tasks)
    return sent_at, list(answers), time.perf_counter() - started
