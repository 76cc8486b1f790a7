"""A Kafka broker of the fault scenario's own, reached only through toxiproxy.

A client asks the bootstrap address for the cluster's metadata, then connects to the address each broker
advertises: a proxy in front of a broker cuts nothing unless the broker advertises the proxy. The shared local
broker advertises itself (and is everyone's), so the scenario starts a single-node KRaft broker of its own
(deploy/local/kafka.sh's jars and template) that listens on a free port and advertises the proxy's: every
connection of the services and of the driver then goes through the proxy, and cutting it cuts them all.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from shared.settings import REPO_ROOT
from tests.fixtures.stack import free_port
from tests.helpers import kafka_cluster_id

LOCAL = REPO_ROOT / "deploy" / "local"
START_TIMEOUT_S = 90.0
READY = "Kafka Server started"


class PrivateKafkaUnavailable(Exception):
    """The broker's jars are missing and cannot be fetched, or the broker did not start."""


def _libs() -> Path:
    version = re.search(r"<kafka.version>(.+?)</kafka.version>", (LOCAL / "kafka" / "pom.xml").read_text())
    assert version is not None
    cache = Path(
        os.environ.get("AB_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "audience-bridge"
    )
    libs = cache / f"kafka-{version.group(1)}" / "libs"
    if not (libs / ".complete").exists():
        fetched = subprocess.run([str(LOCAL / "kafka.sh"), "fetch"], capture_output=True, text=True, check=False)
        if fetched.returncode != 0:
            raise PrivateKafkaUnavailable(f"kafka.sh fetch failed: {fetched.stderr.strip()[-300:]}")
    return libs


def _configure(workdir: Path, port: int, controller: int, advertised: int) -> Path:
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    text = (LOCAL / "kafka" / "server.properties.template").read_text()
    text = text.replace("@PORT@", str(port)).replace("@CONTROLLER_PORT@", str(controller))
    text = text.replace("@LOG_DIR@", str(data))
    text = re.sub(r"(?m)^advertised\.listeners=.*$", f"advertised.listeners=PLAINTEXT://127.0.0.1:{advertised}", text)
    conf = workdir / "server.properties"
    conf.write_text(text)
    return conf


def _java(libs: Path, workdir: Path, *args: str) -> list[str]:
    return [
        "java",
        "-Xms128m",
        "-Xmx512m",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOCAL / 'kafka' / 'log4j2.yaml'}",
        f"-Dkafka.logs.dir={workdir}",
        "-cp",
        f"{libs}/*",
        *args,
    ]


class PrivateBroker:
    """The broker listening on ``port`` and advertising ``advertised_port`` (the proxy's); ``restart`` stops
    and starts it again on the same storage (the scenario's broker restart)."""

    def __init__(self, workdir: Path, port: int, advertised_port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.advertised_port = advertised_port
        self._process: asyncio.subprocess.Process | None = None
        self._libs: Path | None = None
        self._conf: Path | None = None

    async def format(self) -> None:
        self._libs = libs = await asyncio.to_thread(_libs)
        await asyncio.to_thread(self.workdir.mkdir, parents=True, exist_ok=True)
        self._conf = _configure(self.workdir, self.port, free_port(), self.advertised_port)
        cluster_id = kafka_cluster_id()
        command = _java(
            libs, self.workdir, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self._conf)
        )
        done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise PrivateKafkaUnavailable(f"formatting the broker's storage failed: {done.stderr.strip()[-300:]}")

    async def start(self) -> None:
        assert self._libs is not None
        assert self._conf is not None
        log_path = self.workdir / "kafka.log"
        started_before = log_path.read_text(errors="replace").count(READY) if log_path.exists() else 0
        with log_path.open("ab") as log:
            self._process = process = await asyncio.create_subprocess_exec(
                *_java(self._libs, self.workdir, "kafka.Kafka", str(self._conf)),
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while log_path.read_text(errors="replace").count(READY) <= started_before:
            if process.returncode is not None or time.monotonic() > deadline:
                raise PrivateKafkaUnavailable(f"the scenario's broker did not start; see {log_path}")
            await asyncio.sleep(0.5)

    async def stop(self, grace_s: float = 30.0) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), grace_s)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def restart(self) -> None:
        # A controlled shutdown with clients connected can take half a minute: past 10 s it is a crash.
        await self.stop(grace_s=10.0)
        await self.start()


@asynccontextmanager
async def private_broker(workdir: Path, port: int, advertised_port: int) -> AsyncIterator[PrivateBroker]:
    """The scenario's broker, running while the block runs."""
    broker = PrivateBroker(workdir, port, advertised_port)
    await broker.format()
    try:
        await broker.start()
        yield broker
    finally:
        await broker.stop()
