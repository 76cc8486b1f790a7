"""Every service's HTTP side: ``/healthz`` (alive), ``/readyz`` (dependencies, consumers), ``/metrics``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from shared.event_loop import running_loop_name
from shared.metrics import CONTENT_TYPE, RuntimeMetrics

ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]


def build_app(service: str, metrics: RuntimeMetrics, readiness: ReadinessCheck) -> web.Application:
    app = web.Application()

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive", "service": service, "event_loop": running_loop_name()})

    async def readyz(_: web.Request) -> web.Response:
        checks = await readiness()
        ready = bool(checks) and all(checks.values())
        metrics.up.set(1 if ready else 0)
        return web.json_response(
            {"status": "ready" if ready else "not ready", "service": service, "checks": checks},
            status=200 if ready else 503,
        )

    async def metrics_view(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    return app


class HttpServer:
    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self._host = host
        self._port = port
        self.bound_port: int | None = None

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        await self._runner.cleanup()
