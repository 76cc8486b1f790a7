"""Shopify's toxiproxy for the fault scenario: its server as a child process (built by deploy/local/toxiproxy.sh)
and the few calls of its HTTP API the scenario uses (https://github.com/Shopify/toxiproxy#http-api).

A proxy listens on a free local port and forwards to a real server (Postgres); the services are configured with
the proxy's address. ``cut`` disables the proxy (every open connection is closed, new ones are refused) and
``restore`` enables it again; ``delay`` adds latency to everything the server sends back.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from shared.settings import REPO_ROOT
from tests.fixtures.stack import free_port

SCRIPT = REPO_ROOT / "deploy" / "local" / "toxiproxy.sh"


class ToxiproxyUnavailable(Exception):
    """toxiproxy could not be built or started: the scenario says so and runs without its faults."""


@dataclass(frozen=True)
class Proxy:
    name: str
    listen_port: int
    upstream: str

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.listen_port}"


class Toxiproxy:
    """The HTTP API of one running toxiproxy server."""

    def __init__(self, api_url: str, session: aiohttp.ClientSession) -> None:
        self.api_url = api_url
        self._session = session

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        timeout = aiohttp.ClientTimeout(total=10)
        async with self._session.request(method, self.api_url + path, json=body, timeout=timeout) as resp:
            text = await resp.text()
            if resp.status >= 300:
                raise RuntimeError(f"toxiproxy {method} {path}: HTTP {resp.status} {text[:300]}")
            return await resp.json(content_type=None) if text else None

    async def version(self) -> str:
        async with self._session.get(self.api_url + "/version", timeout=aiohttp.ClientTimeout(total=2)) as resp:
            return await resp.text()

    async def create(self, name: str, upstream: str) -> Proxy:
        port = free_port()
        await self._call(
            "POST", "/proxies", {"name": name, "listen": f"127.0.0.1:{port}", "upstream": upstream, "enabled": True}
        )
        return Proxy(name=name, listen_port=port, upstream=upstream)

    async def cut(self, proxy: Proxy) -> None:
        await self._call("POST", f"/proxies/{proxy.name}", {"enabled": False})

    async def restore(self, proxy: Proxy) -> None:
        await self._call("POST", f"/proxies/{proxy.name}", {"enabled": True})

    async def delay(self, proxy: Proxy, latency_ms: int, jitter_ms: int = 0) -> None:
        await self._call(
            "POST",
            f"/proxies/{proxy.name}/toxics",
            {
                "name": "delay",
                "type": "latency",
                "stream": "downstream",
                "toxicity": 1.0,
                "attributes": {"latency": latency_ms, "jitter": jitter_ms},
            },
        )

    async def undelay(self, proxy: Proxy) -> None:
        await self._call("DELETE", f"/proxies/{proxy.name}/toxics/delay")

    async def reset(self) -> None:
        """Every proxy enabled, every toxic removed."""
        await self._call("POST", "/reset")


def install() -> str:
    """The server's path, built into the cache on first use."""
    result = subprocess.run([str(SCRIPT), "install"], capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise ToxiproxyUnavailable(f"{SCRIPT} install failed: {result.stderr.strip()[-500:]}")
    return result.stdout.strip()


@asynccontextmanager
async def toxiproxy_server(log_path: Path, *, start_timeout_s: float = 20.0) -> AsyncIterator[Toxiproxy]:
    """A toxiproxy server on a free port for as long as the block runs."""
    binary = await asyncio.to_thread(install)
    port = free_port()
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            binary, "-host", "127.0.0.1", "-port", str(port), stdout=log, stderr=log
        )
    try:
        async with aiohttp.ClientSession() as session:
            api = Toxiproxy(f"http://127.0.0.1:{port}", session)
            deadline = time.monotonic() + start_timeout_s
            while True:
                try:
                    await api.version()
                    break
                except (aiohttp.ClientError, TimeoutError) as exc:
                    if process.returncode is not None or time.monotonic() > deadline:
                        raise ToxiproxyUnavailable(f"toxiproxy did not answer on port {port}") from exc
                    await asyncio.sleep(0.1)
            yield api
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()
