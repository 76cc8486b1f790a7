"""The local stack for benchmarks: a fresh database, a topic prefix, ecsim and the services as processes."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from shared.migrations import migrate
from shared.settings import DEFAULT_VAR_DIR
from tests.fixtures.stack import ServiceProcess, spawn_service
from tests.helpers import delete_topics_with_prefix, drop_database

LOCAL_DSN = "postgresql://audience_bridge:audience_bridge@127.0.0.1:5432/audience_bridge"
# The Postgres settings a run records with its figures (results.json's "postgres").
RECORDED_SETTINGS = ("server_version", "wal_level", "synchronous_commit", "shared_buffers", "max_wal_size", "fsync")


def admin_dsn() -> str:
    """The cluster the benchmarks create their databases in: DATABASE_URL's (read at each stack, as a run under
    BENCH_WAL_LEVEL points it at a private cluster)."""
    return os.environ.get("DATABASE_URL", LOCAL_DSN)


async def postgres_settings() -> dict[str, str]:
    """The settings of the cluster the figures are measured on."""
    conn = await asyncpg.connect(admin_dsn())
    try:
        rows = await conn.fetch(
            "SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1::text[])", list(RECORDED_SETTINGS)
        )
    finally:
        await conn.close()
    return {r["name"]: r["setting"] + (f" ({r['unit']})" if r["unit"] else "") for r in rows}


@contextmanager
def exclusive_run(what: str) -> Iterator[None]:
    """One run of ``what`` (``chaos``, ``bench``) at a time in a checkout: runs share their work directory
    under var/, and a second one would take the first one's files (a past chaos run failed that way)."""
    lock_path = DEFAULT_VAR_DIR / f"{what}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"another `make {what}` is running in this checkout (lock {lock_path})") from None
        yield


def stop_on_sigterm() -> None:
    """SIGTERM (a CI timeout, ``kill``) ends the run as Ctrl-C does: the main task is cancelled, so the stack's
    services are stopped and its database dropped instead of being left behind."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a live process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class BenchStack:
    workdir: Path
    database_url: str
    topic_prefix: str
    pool: asyncpg.Pool
    env: dict[str, str]
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    async def start(self, name: str, **extra: str) -> ServiceProcess:
        service = await spawn_service(name, env={**self.env, **extra}, log_path=self.workdir / f"{name}.log", wait=True)
        self.services[name] = service
        return service

    async def ecsim_admin(self, method: str, path: str, json: Any = None) -> Any:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.services["ecsim"].url + path, json=json) as resp,
        ):
            resp.raise_for_status()
            text = await resp.text()
            return orjson.loads(text) if text else None

    def rss(self) -> dict[str, float]:
        return {
            name: round(peak_rss_mb(s.process.pid), 1)
            for name, s in self.services.items()
            if s.process.returncode is None
        }


@asynccontextmanager
async def bench_stack(workdir: Path, **ecsim_env: str) -> AsyncIterator[BenchStack]:
    name = f"ab_bench_{uuid.uuid4().hex[:8]}"
    admin_url = admin_dsn()
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    database_url = admin_url.rsplit("/", 1)[0] + "/" + name
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4, command_timeout=3600)
    assert pool is not None
    async with pool.acquire() as conn:
        await migrate(conn)
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    env = {
        "DATABASE_URL": database_url,
        "TOPIC_PREFIX": prefix,
        "IMPORT_DROPZONE_URL": f"file://{workdir / 'import'}",
        "EXPORT_DROPZONE_URL": f"file://{workdir / 'export'}",
        "ECSIM_EXPORT_DROPZONE_URL": f"file://{workdir / 'export'}",
        "ECSIM_IMPORT_DROPZONE_URL": f"file://{workdir / 'import'}",
        "IMPORT_POLL_INTERVAL_S": "0.1",
        "ECSIM_ADMIN_ENABLED": "true",
        "LOG_LEVEL": "WARNING",
    }
    stack = BenchStack(workdir=workdir, database_url=database_url, topic_prefix=prefix, pool=pool, env=env)
    try:
        ecsim = await stack.start("ecsim", **ecsim_env)
        stack.env["PLATFORM_IMS_URL"] = ecsim.url + "/ims/token/v3"
        stack.env["PLATFORM_API_URL"] = ecsim.url + "/v1"
        yield stack
    finally:
        await asyncio.gather(*(s.stop() for s in stack.services.values()))
        await delete_topics_with_prefix(os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"), prefix)
        await pool.close()
        await drop_database(admin_url, name)
