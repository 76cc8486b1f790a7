"""What the bad-input end-to-end tests share: a module-wide stack, a tail of the topics that report errors,
an IMS proxy that records the access tokens the bridge gets, and a scan of logs and events for secrets.

One stack per test module (not per test) keeps the whole bad-input suite well under two minutes: each
module makes its own database, topic prefix, drop zones and ecsim process, and tears them down after.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from shared.messages import AudienceSyncStatus
from shared.migrations import migrate
from tests.fixtures.stack import ServiceProcess, spawn_service
from tests.helpers import drop_database

DEFAULT_DSN = "postgresql://audience_bridge:audience_bridge@127.0.0.1:5432/audience_bridge"


def bootstrap_servers() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")


def admin_dsn() -> str:
    return os.environ.get("DATABASE_URL", DEFAULT_DSN)


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A new, migrated database for one module; dropped afterwards."""
    name = f"ab_badinput_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = admin_dsn().rpartition("/")
    dsn = f"{base}/{name}"
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    try:
        yield dsn
    finally:
        await drop_database(admin_dsn(), name)


class TopicTail:
    """Reads topics from their start for as long as it runs (no group, nothing committed)."""

    def __init__(self, topics: Sequence[str]) -> None:
        self.topics = list(topics)
        self._records: dict[str, list[ConsumerRecord[bytes, bytes]]] = {t: [] for t in topics}
        self._consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap_servers(),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="topic-tail")

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                self._records[tp.topic].extend(records)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    def records(self, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
        return list(self._records[topic])

    def by_key(self, topic: str) -> dict[bytes | None, ConsumerRecord[bytes, bytes]]:
        return {r.key: r for r in self._records[topic]}

    def statuses(self, topic: str) -> list[AudienceSyncStatus]:
        return [AudienceSyncStatus.model_validate_json(r.value) for r in self._records[topic]]


def headers(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") for k, v in record.headers or ()}


@dataclass
class TokenRecorder:
    """An IMS in front of ecsim's that remembers every access token it hands out (to hunt for them later)."""

    upstream: str
    tokens: list[str] = field(default_factory=list)
    server: TestServer | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/ims/token/v3", self._token)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return str(self.server.make_url("/ims/token/v3"))

    async def _token(self, request: web.Request) -> web.Response:
        body = await request.read()
        content_type = request.headers.get("Content-Type", "application/x-www-form-urlencoded")
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.upstream, data=body, headers={"Content-Type": content_type}) as resp,
        ):
            text = await resp.text()
            if resp.status == 200:
                token = (await resp.json()).get("access_token")
                if isinstance(token, str):
                    self.tokens.append(token)
            return web.Response(status=resp.status, text=text, content_type="application/json")

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()


def secrets_to_hunt(client_secret: str, tokens: Iterable[str], database_url: str) -> dict[str, str]:
    """What must never be written: the client secret, every access token, the database password."""
    found = {"the platform client secret": client_secret}
    found.update({f"access token #{n}": t for n, t in enumerate(tokens, 1)})
    parts = urlsplit(database_url)
    if parts.password:
        found["the database password (in a URL)"] = f":{parts.password}@"
        if len(parts.password) >= 12 and parts.password not in (parts.username, parts.path.lstrip("/")):
            found["the database password"] = parts.password
    return found


def leaks(sources: dict[str, str], secrets: dict[str, str]) -> list[str]:
    """``"<secret> in <source>"`` for each secret found in each text."""
    return [f"{what} in {where}" for where, text in sources.items() for what, s in secrets.items() if s in text]


async def start_services(names: Sequence[str], env: dict[str, str], logs: Path) -> list[ServiceProcess]:
    """Start services one after the other (reconcile first migrates); each must become ready."""
    started = []
    for name in names:
        started.append(await spawn_service(name, env=env, log_path=logs / f"{name}.log"))
    return started


async def stop_services(services: Sequence[ServiceProcess]) -> None:
    await asyncio.gather(*(s.stop() for s in services))


def ecsim_seed(segments: dict[int, int]) -> dict[str, Any]:
    """Data sources, one onboarded trait each, and a segment per (segment id -> data source id)."""
    trait_of = {1001: 9001, 1002: 9002}
    return {
        "datasources": [
            {"dataSourceId": 1001, "name": "Campaign (MID)", "integrationCode": "ac-mid", "idType": "COOKIE"},
            {"dataSourceId": 1002, "name": "Campaign (DeclaredId)", "integrationCode": "ac-declared"},
        ],
        "traits": [
            {"sid": 9001, "name": "visitors", "traitType": "ON_BOARDED_TRAIT", "dataSourceId": 1001, "folderId": 0},
            {"sid": 9002, "name": "emails", "traitType": "ON_BOARDED_TRAIT", "dataSourceId": 1002, "folderId": 0},
        ],
        "segments": [
            {
                "sid": sid,
                "name": f"Corpus segment {sid}",
                "segmentRule": f"{trait_of[ds]}T",
                "dataSourceId": ds,
                "folderId": 0,
            }
            for sid, ds in sorted(segments.items())
        ],
    }
