"""A service's life: settings, logging, HTTP, dependencies, consumers, and a clean stop on SIGTERM.

``run(app)`` is what each ``python -m services.<name>`` calls. Start-up waits for Kafka and Postgres with
backoff (so the services may start before their dependencies, as containers do), and readiness stays
false until then. SIGTERM or SIGINT stops consumers (the in-flight batch finishes within the grace
period or is abandoned uncommitted), then closes producer and pool, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

import asyncpg
import orjson
from aiohttp import web

from shared import db, event_loop
from shared.errors import ConfigError
from shared.event_loop import running_loop_name
from shared.http import HttpServer, build_app
from shared.http_auth import add_security_headers, secure
from shared.kafka import ConsumerLoop, Producer, ensure_topics
from shared.kafka.batch_processor import GivenUp
from shared.kafka.consumer import Handler
from shared.logging import configure_logging, get_logger
from shared.messages import Message
from shared.metrics import RuntimeMetrics
from shared.migrations import migrate
from shared.retry import Backoff, is_transient
from shared.runs.give_up import fail_runs_given_up
from shared.runs.reporter import RunReporter
from shared.settings import BaseServiceSettings, DatabaseSettings, KafkaSettings, PageAuthSettings, load_settings
from shared.topics import ALL_TOPICS, dlq_name, topic_name

log = get_logger(__name__)

S = TypeVar("S", bound=BaseServiceSettings)


class ServiceApp(ABC):
    """What a service provides to the runtime."""

    name: str

    def __init__(self, settings: BaseServiceSettings) -> None:
        self.settings = settings
        self.metrics = RuntimeMetrics(self.name)
        self.started = False

    def routes(self, app: web.Application) -> None:  # noqa: B027 - optional hook
        """Add service-specific HTTP routes."""

    @abstractmethod
    async def start(self) -> None:
        """Connect to dependencies and start work. May raise TransientError: the runtime retries."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop work and release resources. Must not raise."""

    async def readiness(self) -> dict[str, bool]:
        return {"started": self.started}

    def watched_tasks(self) -> Sequence[asyncio.Task[None]]:
        """Tasks whose unexpected end stops the service (with a non-zero exit)."""
        return ()


class KafkaPostgresApp(ServiceApp):
    """A service that consumes topics into Postgres and produces to topics."""

    settings: Any

    def __init__(self, settings: BaseServiceSettings) -> None:
        super().__init__(settings)
        assert isinstance(settings, KafkaSettings)
        assert isinstance(settings, DatabaseSettings)
        self.producer: Producer = Producer(settings, self.name, self.metrics)
        self.pool: asyncpg.Pool | None = None
        self.consumers: list[ConsumerLoop] = []
        self.background: list[asyncio.Task[None]] = []
        # Reports the runs the consumers fail when they give up a message (a service sets its own, counted).
        self.run_status: RunReporter = RunReporter(self.producer, service=self.name, topic_prefix=settings.topic_prefix)

    def topic(self, base: str) -> str:
        return topic_name(self.settings.topic_prefix, base)

    @abstractmethod
    def subscriptions(self) -> Mapping[str, tuple[type[Message], Handler]]:
        """Base topic name -> (message model, handler). One consumer loop per entry."""

    def connection_settings(self) -> dict[str, str]:
        """Postgres settings of the service's connections (set when each opens)."""
        return {}

    async def start(self) -> None:
        names = [self.topic(t) for t in ALL_TOPICS]
        await ensure_topics(self.settings, [*names, *(dlq_name(n) for n in names)])
        if self.pool is None:
            self.pool = await db.create_pool(
                self.settings,
                application_name=f"audience-bridge-{self.name}",
                server_settings=self.connection_settings(),
            )
        async with db.acquire(self.pool) as conn:
            await migrate(conn)
        await self.producer.start()
        await self.on_started()
        for base, (model, handler) in self.subscriptions().items():
            loop = ConsumerLoop(
                settings=self.settings,
                service=self.name,
                models={self.topic(base): model},
                handler=handler,
                producer=self.producer,
                metrics=self.metrics,
                group_id=f"{self.group_prefix()}.{base}",
                max_poll_records=self.poll_limit(base),
                linger_s=self.poll_linger_s(base),
                partition_concurrency=self.partition_concurrency(base),
                on_given_up=self._fail_runs_given_up,
            )
            await loop.start()
            self.consumers.append(loop)
        self.started = True

    async def _fail_runs_given_up(self, given_up: Sequence[GivenUp]) -> None:
        assert self.pool is not None
        await fail_runs_given_up(self.pool, self.run_status, given_up)

    def group_prefix(self) -> str:
        # The topic prefix is part of the group: deployments sharing a cluster must not share groups.
        return self.settings.kafka_consumer_group or f"{self.settings.topic_prefix}audience-bridge-{self.name}"

    def poll_linger_s(self, base_topic: str) -> float:
        """How long to wait for more messages after the first of a poll (0: hand over what came)."""
        return 0.0

    def poll_limit(self, base_topic: str) -> int | None:
        """Messages per poll for this subscription (None: KAFKA_MAX_POLL_RECORDS)."""
        return None

    def partition_concurrency(self, base_topic: str) -> int:
        """Partitions of this subscription handled side by side (1: one after the other)."""
        return 1

    async def on_started(self) -> None:
        """Hook: dependencies are up, consumers not yet started."""

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run a background loop (e.g. a drop-zone watcher) for the service's life; its end stops the service."""
        self.background.append(asyncio.create_task(coro, name=name))

    async def stop(self) -> None:
        await asyncio.gather(*(c.stop(self.settings.shutdown_grace_s) for c in self.consumers))
        self.consumers.clear()
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        self.background.clear()
        await self.on_stopping()
        await self.producer.stop()
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), 10)
            except TimeoutError:
                self.pool.terminate()
            self.pool = None

    async def readiness(self) -> dict[str, bool]:
        checks = {"started": self.started}
        checks["postgres"] = self.pool is not None and await db.check(self.pool)
        checks["kafka"] = await self.producer.check()
        stuck_after = self.settings.consumer_stuck_after_s
        # A batch waiting for Postgres, Kafka or a drop zone to come back (retried, never dead-lettered).
        checks["dependencies"] = not any(c.waiting_on() for c in self.consumers)
        checks["consumers"] = bool(self.consumers) and all(
            c.running and c.joined and c.stuck_for() < stuck_after for c in self.consumers
        )
        return checks

    async def on_stopping(self) -> None:
        """Hook: consumers and background loops are stopped; release the service's own resources."""

    def watched_tasks(self) -> Sequence[asyncio.Task[None]]:
        return [*(c._task for c in self.consumers if c._task is not None), *self.background]


async def _serve(app: ServiceApp) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    http_app = build_app(app.name, app.metrics, app.readiness)
    app.routes(http_app)
    try:
        secure_app(http_app, app.settings)
    except ConfigError as exc:
        # The bind rule (a page beyond loopback with no credential) or a bad credentials file: exit 2, as settings.
        log.error("invalid_settings", error=str(exc))
        return 2
    server = HttpServer(http_app, app.settings.http_host, app.settings.http_port)
    await server.start()
    log.info("http_listening", host=app.settings.http_host, port=server.bound_port, event_loop=running_loop_name())

    backoff = Backoff(0.5, 5.0)
    exit_code = 0
    while not stop.is_set():
        try:
            await app.start()
            log.info("service_started", event_loop=running_loop_name())
            break
        except Exception as exc:
            if not is_transient(exc):
                log.exception("service_start_failed")
                exit_code = 1
                stop.set()
                break
            delay = backoff.next_delay()
            log.warning("dependencies_unavailable_retrying", error=str(exc)[:300], retry_in_s=round(delay, 2))
            await app.stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    if not stop.is_set():
        stop_task = asyncio.create_task(stop.wait())
        watched = list(app.watched_tasks())
        done, _ = await asyncio.wait([stop_task, *watched], return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
        for task in done:
            if task is not stop_task:
                error = task.exception() if not task.cancelled() else None
                log.error("worker_ended_unexpectedly", task=task.get_name(), error=repr(error))
                exit_code = 1

    log.info("service_stopping")
    await app.stop()
    await server.stop()
    log.info("service_stopped", exit_code=exit_code)
    return exit_code


def secure_app(http_app: web.Application, settings: BaseServiceSettings) -> None:
    """Credentials and the bind rule for the services with pages (shared.http_auth); headers for all."""
    if isinstance(settings, PageAuthSettings):
        credentials = settings.status_page_credentials
        secure(
            http_app,
            host=settings.http_host,
            credentials_text=credentials.get_secret_value() if credentials is not None else None,
            public=settings.status_page_public,
        )
    else:
        add_security_headers(http_app)


def main(name: str, settings_cls: type[S], build: Callable[[S], ServiceApp]) -> None:
    """Entry point of ``python -m services.<name>``: exit 2 on bad settings, 1 on failure, 0 after SIGTERM."""
    try:
        settings = load_settings(settings_cls)
    except ConfigError as exc:
        sys.stderr.write(
            orjson.dumps({"level": "error", "service": name, "event": "invalid_settings", "error": str(exc)}).decode()
            + "\n"
        )
        sys.exit(2)
    configure_logging(name, settings.log_level)
    try:
        app = build(settings)
    except ConfigError as exc:
        # e.g. an invalid CATALOG_FILE: a setting's content is as much a setting as its value.
        log.error("invalid_settings", error=str(exc))
        sys.exit(2)
    try:
        code = event_loop.run(_serve(app), loop=settings.event_loop)
    except ConfigError as exc:
        # EVENT_LOOP=uvloop without uvloop installed: a setting the platform cannot honour, exit 2 as settings.
        log.error("invalid_settings", error=str(exc))
        sys.exit(2)
    sys.exit(code)
