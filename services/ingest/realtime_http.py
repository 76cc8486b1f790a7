"""The HTTP side of ``POST /platform/realtime``: aiohttp's low-level server, one function for every request.

An ``Application`` costs, per request, a URL parsed by yarl for its router (``UrlDispatcher.resolve``), a
handler chain and an ``on_response_prepare`` signal: py-spy put it at a tenth of a receiver process's CPU at
1,000 deliveries/s, for a port that serves one route. Here :func:`dispatching_server` answers what that
Application did: ``POST /platform/realtime`` goes to the receiver, another method on it is a ``405`` (with
``Allow: POST``), another path a ``404``; bodies above ``MAX_BODY_BYTES`` are a ``413``; ``Expect:
100-continue`` is answered; every answer, the errors too, carries the service's security headers
(shared.http_auth.SECURITY_HEADERS).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion11
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDict

from shared.http_auth import SECURITY_HEADERS
from shared.logging import get_logger

log = get_logger(__name__)

PATH: Final = "/platform/realtime"
MAX_BODY_BYTES: Final = 1024 * 1024
# Connections the kernel completes and queues while every receiver is busy. The platform opens a connection for
# each delivery that finds none idle, so a pause of a few milliseconds brings a burst of them; past the queue,
# their SYNs are dropped and retried after 1 s, then 3 s: the platform's whole timeout. aiohttp's sites listen
# with 128 unless told, also on a socket already listening with more, so every site here passes this.
LISTEN_BACKLOG: Final = 1024
# Every answer's headers (copied for each: a Response keeps, and completes, the dict it is given).
_HEADERS: Final = CIMultiDict({"Content-Type": "application/json", **SECURITY_HEADERS})

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def answer(status: int, body: bytes) -> web.Response:
    """A JSON answer with the security headers."""
    return web.Response(body=body, status=status, headers=CIMultiDict(_HEADERS))


def error_answer(status: int, message: str, **headers: str) -> web.Response:
    """``{"error": message}`` with the security headers (and ``headers``)."""
    response = answer(status, orjson.dumps({"error": message}))
    response.headers.update(headers)
    return response


def is_the_route(request: web.BaseRequest) -> bool:
    # The path as sent first (a string compare); the decoded one (as the router matched) only when it differs.
    raw = request.raw_path
    return raw == PATH or raw.partition("?")[0] == PATH or request.path == PATH


def dispatch(handler: Handler) -> Handler:
    """``handler`` for ``POST PATH``, and the answers an Application routing only that would give."""

    async def serve(request: web.BaseRequest) -> web.StreamResponse:
        if not is_the_route(request):
            return error_answer(404, f"not found: only POST {PATH} is served here")
        if request.method != "POST":
            return error_answer(405, f"method {request.method} not allowed: POST only", Allow="POST")
        if request.headers.get("Expect"):
            refused = await _expect(request)
            if refused is not None:
                return refused
        try:
            return await handler(request)
        except web.HTTPException as exc:  # a body above MAX_BODY_BYTES (413), from request.read()
            for name, value in SECURITY_HEADERS.items():
                exc.headers.setdefault(name, value)
            raise
        except Exception:
            # aiohttp would answer its own 500, without the security headers.
            log.exception("realtime_unexpected_error")
            return error_answer(500, "internal error")

    return serve


async def _expect(request: web.BaseRequest) -> web.Response | None:
    """``Expect: 100-continue`` (curl sends it with bodies above 1 KiB) answered as an Application's route does,
    so the client sends the body now rather than after its own wait; any other expectation is a ``417``."""
    if request.version != HttpVersion11:
        return None
    expect = request.headers["Expect"]
    if expect.lower() != "100-continue":
        return error_answer(417, f"unknown Expect: {expect}")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the answer's own size is counted from here, as aiohttp does
    await request.writer.drain()
    return None


def dispatching_server(handler: Handler, **kwargs: Any) -> web.Server:
    """The low-level server of ``handler`` (see :func:`dispatch`); ``kwargs`` go to each connection's
    RequestHandler (``access_log``, timeouts)."""

    def request(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: Any,
    ) -> web.BaseRequest:
        return web.BaseRequest(
            message, payload, protocol, writer, task, task.get_loop(), client_max_size=MAX_BODY_BYTES
        )

    return web.Server(dispatch(handler), request_factory=request, **kwargs)
