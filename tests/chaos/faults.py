"""The scenario's faults that are not crashes, each held for a while as work arrives, then ended.

``pg-cut`` and ``pg-delay`` act on the services' Postgres connections through toxiproxy; ``pg-error:<SQLSTATE>``
makes Postgres refuse the imports' and exports' writes with that error (tests/chaos/faults_db.py); ``zone-hang``
delivers a batch whose reading hangs until the driver releases it (tests/chaos/faults_dropzone.py). What the
bridge must do through all of them: retry, never dead-letter, lose nothing, end every run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from shared.formats.outbound import OutboundRow
from tests.bench.campaign import ecid
from tests.chaos.faults_db import (
    INJECTED_SQLSTATES,
    cut_for,
    delay_for,
    inject_errors,
    install_error_trigger,
    refusals,
    remove_error_trigger,
    through_proxy,
    upstream_of,
)
from tests.chaos.faults_dropzone import MAX_HANG_S, HangingBatch, deliver_hanging
from tests.chaos.private_kafka import PrivateBroker, PrivateKafkaUnavailable, private_broker
from tests.chaos.toxiproxy import Proxy, Toxiproxy, ToxiproxyUnavailable, toxiproxy_server
from tests.fixtures.stack import free_port

DELAY_MS = 300


@dataclass
class Faults:
    pool: asyncpg.Pool  # the driver's own (direct) pool
    zone: Path
    hold_s: float
    hang_s: float
    hanging_ids: range  # visitors (already members, never leaving) the hanging batch adds again
    api: Toxiproxy | None = None
    pg_proxy: Proxy | None = None
    kafka_proxy: Proxy | None = None
    hanging: list[HangingBatch] = field(default_factory=list)
    hangs_met: int = 0  # hanging batches a reader was blocked on when released
    injected: list[str] = field(default_factory=list)

    def targets(self) -> list[str]:
        proxied = ["pg-cut", "pg-delay"] if self.api is not None and self.pg_proxy is not None else []
        if self.api is not None and self.kafka_proxy is not None:
            proxied += ["kafka-cut", "kafka-delay"]
        return [*proxied, *(f"pg-error:{code}" for code in INJECTED_SQLSTATES), "zone-hang"]

    async def hold(self, target: str, during: Callable[[], Awaitable[None]]) -> str:
        """Start the fault, run ``during`` (more work arriving), keep the fault for ``hold_s`` in all, end it;
        returns what was done, for the timeline."""
        began = time.monotonic()

        async def work_meanwhile() -> None:
            await during()
            await asyncio.sleep(max(0.0, self.hold_s - (time.monotonic() - began)))

        api = self.api
        proxies = {"pg": (self.pg_proxy, "Postgres"), "kafka": (self.kafka_proxy, "Kafka")}
        kind, _, action = target.partition("-")
        proxy, name = proxies.get(kind, (None, kind))
        if action == "cut" and api is not None and proxy is not None:
            await asyncio.gather(cut_for(api, proxy, self.hold_s), during())
            return f"{name} connections cut through toxiproxy for {self.hold_s:.0f}s"
        if action == "delay" and api is not None and proxy is not None:
            await asyncio.gather(delay_for(api, proxy, self.hold_s, DELAY_MS), during())
            return f"{name} answers delayed {DELAY_MS} ms through toxiproxy for {self.hold_s:.0f}s"
        if target.startswith("pg-error:"):
            code = target.removeprefix("pg-error:")
            await inject_errors(self.pool, code, self.hold_s)
            self.injected.append(code)
            await work_meanwhile()
            return f"Postgres raises SQLSTATE {code} on every import/export write for {self.hold_s:.0f}s"
        if target == "zone-hang":
            return await self._hang(during)
        raise ValueError(f"unknown fault {target!r}")

    async def _hang(self, during: Callable[[], Awaitable[None]]) -> str:
        rows: list[OutboundRow] = [(ecid(i), (5001,), ()) for i in self.hanging_ids]
        # In this thread: the lease's notice is a signal, whose handler only the main thread may set.
        batch = deliver_hanging(self.zone, rows, int(time.time() * 1000) + 500)
        self.hanging.append(batch)
        try:
            await during()
            await asyncio.sleep(min(self.hang_s, MAX_HANG_S))
        finally:
            if batch.release():
                self.hangs_met += 1
        return f"a delivered batch's part could not be opened (a write lease held) for {self.hang_s:.0f}s"


async def faults_met(faults: Faults) -> list[tuple[str, bool, str]]:
    """Whether the faults reached the bridge at all (a fault nobody met proves nothing)."""
    refused = await refusals(faults.pool) if faults.injected else 0
    checks = [
        (
            "injected Postgres errors met the services",
            not faults.injected or refused > 0,
            f"{refused} statements refused with SQLSTATEs {', '.join(faults.injected) or 'none injected'}",
        )
    ]
    if faults.hanging:
        checks.append(
            (
                "the hanging drop zone was met",
                faults.hangs_met == len(faults.hanging),
                f"a reader was blocked on {faults.hangs_met} of {len(faults.hanging)} hanging batches when released",
            )
        )
    return checks


@dataclass(frozen=True)
class FaultSetup:
    faults: Faults
    database_url: str  # what the services use (the proxy's address when toxiproxy runs)
    kafka_bootstrap: str | None  # the scenario's own broker through its proxy; None: the shared broker
    broker: PrivateBroker | None


@asynccontextmanager
async def prepared_faults(
    pool: asyncpg.Pool,
    database_url: str,
    workdir: Path,
    *,
    hold_s: float,
    hang_s: float,
    hanging_ids: range,
    kafka: bool,
    not_exercised: list[str],
) -> AsyncIterator[FaultSetup]:
    """The faults, and how the services must reach Postgres and Kafka. toxiproxy missing (no Go to build it)
    or the scenario's broker not starting leaves out only the connection faults, saying so in
    ``not_exercised``."""
    await install_error_trigger(pool)
    try:
        async with AsyncExitStack() as stack:
            api: Toxiproxy | None = None
            pg: Proxy | None = None
            try:
                api = await stack.enter_async_context(toxiproxy_server(workdir / "toxiproxy.log"))
                pg = await api.create("postgres", upstream_of(database_url))
            except ToxiproxyUnavailable as exc:
                not_exercised.append(f"Postgres and Kafka connections cut and delayed through toxiproxy: {exc}")
            proxied = await _proxied_broker(stack, api, workdir, not_exercised) if kafka and api is not None else None
            kafka_proxy, broker = proxied or (None, None)
            if not kafka:
                not_exercised.append("Kafka connections cut and delayed: turned off (CHAOS_KAFKA_FAULTS=0)")
            faults = Faults(pool, workdir / "import", hold_s, hang_s, hanging_ids, api=api, pg_proxy=pg)
            faults.kafka_proxy = kafka_proxy
            yield FaultSetup(
                faults=faults,
                database_url=through_proxy(database_url, pg) if pg is not None else database_url,
                kafka_bootstrap=kafka_proxy.address if kafka_proxy is not None else None,
                broker=broker,
            )
            if api is not None:
                await api.reset()
    finally:
        await remove_error_trigger(pool)


async def _proxied_broker(
    stack: AsyncExitStack, api: Toxiproxy, workdir: Path, not_exercised: list[str]
) -> tuple[Proxy, PrivateBroker] | None:
    """The scenario's own broker behind a proxy (tests/chaos/private_kafka.py), or None when it cannot run."""
    port = free_port()
    proxy = await api.create("kafka", f"127.0.0.1:{port}")
    try:
        broker = await stack.enter_async_context(private_broker(workdir / "kafka", port, proxy.listen_port))
    except PrivateKafkaUnavailable as exc:
        not_exercised.append(f"Kafka connections cut and delayed: {exc}")
        return None
    return proxy, broker
