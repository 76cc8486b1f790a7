"""The receiver's low-level HTTP server answers as the Application routing only ``POST /platform/realtime`` did:
the route to the receiver, 405 and 404 elsewhere, 413 above the body limit, a 500 of its own for a bug, and the
security headers on every answer."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiohttp import web

from services.ingest.realtime_http import MAX_BODY_BYTES, PATH, answer, dispatching_server
from shared.http_auth import SECURITY_HEADERS


async def _receiver(request: web.BaseRequest) -> web.Response:
    body = await request.read()
    if body == b"boom":
        raise RuntimeError("a bug")
    return answer(200, orjson.dumps({"read": len(body), "query": request.query_string}))


@pytest_asyncio.fixture
async def base_url() -> AsyncIterator[str]:
    runner = web.ServerRunner(dispatching_server(_receiver, access_log=None))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def _secured(resp: aiohttp.ClientResponse) -> bool:
    return all(resp.headers.get(name) == value for name, value in SECURITY_HEADERS.items())


async def test_the_route_reaches_the_receiver_with_the_security_headers(base_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for path in (PATH, f"{PATH}?retry=1", "/platform/%72ealtime"):  # the decoded path is the route too
            async with http.post(base_url + path, data=b"x" * 10) as resp:
                assert resp.status == 200, path
                assert resp.headers["Content-Type"] == "application/json"
                assert _secured(resp)
                assert (await resp.json())["read"] == 10
        async with http.post(base_url + PATH + "?a=b", data=b"") as resp:
            assert (await resp.json())["query"] == "a=b"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", PATH, 405),
        ("PUT", PATH, 405),
        ("POST", "/platform/realtime/", 404),
        ("POST", "/", 404),
        ("GET", "/x", 404),
    ],
)
async def test_other_methods_and_paths_are_refused(base_url: str, method: str, path: str, status: int) -> None:
    async with aiohttp.ClientSession() as http, http.request(method, base_url + path) as resp:
        assert resp.status == status
        assert _secured(resp)
        assert "error" in await resp.json()
        if status == 405:
            assert resp.headers["Allow"] == "POST"


async def test_a_body_above_the_limit_is_413_and_a_bug_a_500_both_secured(base_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(base_url + PATH, data=io.BytesIO(b"x" * (MAX_BODY_BYTES + 1))) as resp:
            assert resp.status == 413
            assert _secured(resp)
        async with http.post(base_url + PATH, data=io.BytesIO(b"x" * MAX_BODY_BYTES)) as resp:
            assert resp.status == 200
        async with http.post(base_url + PATH, data=b"boom") as resp:
            assert resp.status == 500
            assert _secured(resp)
            assert await resp.json() == {"error": "internal error"}


async def test_expect_100_continue_is_answered_before_the_body_is_sent(base_url: str) -> None:
    """curl sends ``Expect: 100-continue`` with a body above 1 KiB and waits for the 100 before sending it."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        body = b"x" * 2000
        writer.write(
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        async with asyncio.timeout(5):
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(body)
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))[15:])
            assert orjson.loads(await reader.readexactly(length))["read"] == len(body)
    finally:
        writer.close()


async def test_another_expectation_is_417(base_url: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(base_url + PATH, data=b"x", headers={"Expect": "something-else"}) as resp,
    ):
        assert resp.status == 417
        assert _secured(resp)
