"""The fault scenario behind ``make chaos`` (and, shortened, ``make chaos-short``, which CI runs).

On the real local stack: import several audiences (full and delta, both ID types) and export two lists
while a driver kills ingest, reconcile and publish with SIGKILL at random points (restarting them),
restarts the Kafka broker once and Postgres once (when they are ours to restart: otherwise the report says
so), cuts and delays the services' Postgres and Kafka connections through toxiproxy, makes Postgres refuse
writes with chosen SQLSTATEs for a while, and delivers a batch whose reading hangs (tests/chaos/faults.py);
and ecsim answers 429/500 on a share of calls, expires tokens, processes inbound files late and rejects a
whole file and then a share of lines of the e-mail audience's files (the runs end ``failed``/``partial``,
and the following mirrors send what was not applied again; a last mirror once the rejections stop). At the
end every outcome must be exactly right (tests/chaos/checks_outcomes.py, checks_ledgers.py): lists, the
platform's trait members, ``exported_member``, each batch applied once and each file processed once (also
as counted by the driver itself), every run final, every dead-letter topic holding only the bad messages
sent on purpose. Secrets must not appear in any log line or status event. The driver prints what it did
when and the time to recover.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from services.reconcile.catalog import (
    CatalogExportAudience,
    CatalogImportAudience,
    ensure_list,
    upsert_export_audience,
    upsert_import_audience,
)
from shared.errors import TransientError
from shared.formats.outbound import OutboundRow
from shared.kafka import Producer, ensure_topics
from shared.messages import AudienceExportRequest, ExportMode
from shared.settings import REPO_ROOT, KafkaSettings
from tests.bench.campaign import PLATFORM_SEED, ecid, hashed_email, load_recipients
from tests.bench.stack import BenchStack, bench_stack
from tests.chaos.checks_ledgers import send_bad_messages, verify_ledgers
from tests.chaos.checks_outcomes import verify_outcomes, verify_secrets
from tests.chaos.faults import Faults, faults_met, prepared_faults
from tests.chaos.faults_db import as_driver
from tests.chaos.private_kafka import PrivateBroker
from tests.chaos.report import ChaosReport, Event
from tests.chaos.stuck import describe_unfinished, log_warnings
from tests.helpers import deliver_outbound

LOCAL = REPO_ROOT / "deploy" / "local"
# The lists exported (declared in the catalog, as a deployment must): their audience, data source and mode.
EXPORTS: dict[str, tuple[str, str, ExportMode]] = {
    "export-emails": ("Chaos emails", "hashed-emails", "mirror"),
    "export-visitors": ("Chaos visitors", "visitors", "append"),
}


@dataclass(frozen=True)
class ChaosConfig:
    recipients: int = 60_000
    ids_per_import: int = 40_000
    kills_per_service: int = 3
    restart_broker: bool = True
    restart_postgres: bool = True
    fault_rate: float = 0.2
    batch_size: int = 500
    timeout_s: float = 900
    seed: int = 7
    # Faults that are not crashes (tests/chaos/faults.py): each held this long while work arrives.
    kafka_faults: bool = True  # the scenario's own broker behind toxiproxy (tests/chaos/private_kafka.py)
    fault_hold_s: float = 8.0
    zone_hang_s: float = 15.0


class Chaos:
    def __init__(self, stack: BenchStack, config: ChaosConfig) -> None:
        self.stack = stack
        self.config = config
        self.report = ChaosReport()
        self.rng = random.Random(config.seed)
        self.started = time.monotonic()
        self.waves = 0
        self.delivered: list[str] = []  # file batches delivered, by the driver's own count
        self.faults: Faults | None = None
        self.broker: PrivateBroker | None = None
        self.dropped: set[int] = set()
        self.requests: list[AudienceExportRequest] = []
        self.last_request: uuid.UUID | None = None
        self.service_env = {
            "MEMBERSHIP_BATCH_SIZE": str(config.batch_size),
            "EXPORT_BATCH_SIZE": str(config.batch_size),
            "RETRY_BACKOFF_MAX_S": "2",
            "PLATFORM_BACKOFF_MAX_S": "1",
            "PLATFORM_MAX_ATTEMPTS": "8",
            "SHUTDOWN_GRACE_S": "2",
            "EXPORT_RECEIPT_POLL_S": "0.5",
            "EXPORT_RECEIPT_POLL_MAX_S": "2",
        }

    def log(self, what: str, recovery: float | None = None) -> None:
        event = Event(time.monotonic() - self.started, what, recovery)
        self.report.events.append(event)
        extra = f" (back in {recovery:.1f}s)" if recovery is not None else ""
        print(f"[{event.at:7.1f}s] {what}{extra}", flush=True)

    async def setup(self) -> dict[str, set[int]]:
        """Campaign, audiences and the platform; returns the expected members per import audience."""
        c = self.config
        await load_recipients(self.stack.pool, c.recipients)
        await self.stack.ecsim_admin("POST", "/sim/seed", PLATFORM_SEED)
        async with self.stack.pool.acquire() as conn:
            for audience_id, segment, source in (
                ("full-visitors", 5001, "visitors"),
                ("full-emails", 5002, "hashed-emails"),
            ):
                await upsert_import_audience(
                    conn,
                    CatalogImportAudience(
                        audience_id=audience_id,
                        name=audience_id,
                        platform_segment_id=segment,
                        data_source=source,
                        list=f"List {audience_id}",
                    ),
                )
            # Two lists to export: even recipients by hashed e-mail (mirror), multiples of 3 by ECID (append).
            for name, step in (("export-emails", 2), ("export-visitors", 3)):
                list_id = await ensure_list(conn, name)
                audience, source, mode = EXPORTS[name]
                declared = CatalogExportAudience(
                    list=name, data_source=source, audience_name=audience, modes=(mode,), requesters=("kafka:chaos",)
                )
                await upsert_export_audience(conn, declared)
                await conn.copy_records_to_table(
                    "list_member",
                    records=[(list_id, r) for r in range(step, c.recipients + 1, step)],
                    columns=("list_id", "recipient_id"),
                )
        n = c.ids_per_import
        return {
            # Full snapshots: ECIDs of recipients 1..n (and 10% unknown IDs); hashed e-mails of the next n.
            "full-visitors": set(range(1, min(n, c.recipients) + 1)),
            "full-emails": set(range(c.recipients - n + 1, c.recipients + 1)),
        }

    def deliver_imports(self) -> None:
        c = self.config
        zone = self.stack.workdir / "import"
        zone.mkdir(parents=True, exist_ok=True)
        n = c.ids_per_import
        unknown = n // 10
        visitors: list[OutboundRow] = [(ecid(i), (5001,), ()) for i in range(1, n + 1)]
        visitors += [(ecid(10**12 + i), (5001,), ()) for i in range(unknown)]
        emails: list[OutboundRow] = [
            (hashed_email(i), (5002,), ()) for i in range(c.recipients - n + 1, c.recipients + 1)
        ]
        ts = int(time.time() * 1000)
        for batch in (
            deliver_outbound(zone, "full", visitors, ts),
            deliver_outbound(zone, "full", emails, ts + 1, master_dpid=1002, destination_id=7002),  # e-mails' DPID
        ):
            self.delivered.append(batch.batch_root)

    async def wave(self) -> None:
        """More work arriving while things fail: 100 visitors leave (a delta file), and the e-mail list
        loses some members and is exported again (mirror), which must remove them on the platform."""
        self.waves += 1
        k = self.waves
        zone = self.stack.workdir / "import"
        leaving = range(100 * (k - 1) + 1, 100 * k + 1)
        batch = deliver_outbound(zone, "iter", [(ecid(i), (), (5001,)) for i in leaving], int(time.time() * 1000) + k)
        self.delivered.append(batch.batch_root)
        dropped = [r for r in range(1000 * k, 1000 * k + 200) if r % 2 == 0]
        await self._with_retry(
            lambda conn: as_driver(
                conn,
                "DELETE FROM list_member WHERE list_id = (SELECT list_id FROM list WHERE name = 'export-emails') "
                "AND recipient_id = ANY($1::bigint[])",
                dropped,
            )
        )
        self.dropped.update(dropped)
        await self._send_request(self.requests[0].model_copy(update={"request_id": uuid.uuid4()}))
        self.log(f"wave {k}: 100 visitors leave (delta file), {len(dropped)} e-mail list members leave (mirror)")

    async def _with_retry(self, work: Any) -> Any:
        deadline = time.monotonic() + 120
        while True:
            try:
                async with self.stack.pool.acquire() as conn:
                    return await work(conn)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    async def _send_request(self, request: AudienceExportRequest) -> None:
        settings = KafkaSettings(topic_prefix=self.stack.topic_prefix)
        topic = f"{self.stack.topic_prefix}audience-export-requests"
        # Like a campaign workflow, the driver keeps trying while the broker is being restarted.
        deadline = time.monotonic() + 300
        while True:
            producer = Producer(settings, "chaos")
            try:
                await ensure_topics(settings, [topic])
                await producer.send_model(topic, request)
                return
            except TransientError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1)
            finally:
                await producer.stop()

    async def request_exports(self) -> list[AudienceExportRequest]:
        requests = [
            AudienceExportRequest(
                list_id=name, audience_name=audience, data_source=source, mode=mode, requested_by="chaos"
            )
            for name, (audience, source, mode) in EXPORTS.items()
        ]
        for request in requests:
            await self._send_request(request)
        self.requests = requests
        return requests

    async def kill_and_restart(self, name: str) -> None:
        service = self.stack.services[name]
        await service.kill()
        killed = time.monotonic()
        await self.stack.start(name, **self.service_env)
        self.log(f"SIGKILL {name}", time.monotonic() - killed)

    async def restart_infra(self, script: str) -> None:
        began = time.monotonic()
        await asyncio.to_thread(subprocess.run, [str(LOCAL / script), "stop"], check=True, capture_output=True)
        await asyncio.to_thread(subprocess.run, [str(LOCAL / script), "start"], check=True, capture_output=True)
        self.log(f"restart {script.removesuffix('.sh')}", time.monotonic() - began)

    async def drive(self) -> None:
        """Kill and restart things at random points while the work is in flight."""
        c = self.config
        actions: list[tuple[str, str]] = [
            ("kill", s) for s in ("ingest", "reconcile", "publish") for _ in range(c.kills_per_service)
        ]
        for wanted, what in ((c.restart_broker, "kafka"), (c.restart_postgres, "postgres")):
            if wanted and what == "kafka" and self.broker is not None:
                actions.append(("broker", "kafka"))  # the scenario's own broker: always ours to restart
                continue
            why = _why_not_restartable(what) if wanted else f"turned off (CHAOS_RESTART_{what.upper()}=0)"
            if why is None:
                actions.append(("infra", f"{what}.sh"))
            else:
                self.report.not_exercised.append(f"{what} restart: {why}")
                self.log(f"could NOT restart {what}: {why}")
        if self.faults is not None:
            actions += [("fault", target) for target in self.faults.targets()]
        self.rng.shuffle(actions)
        for kind, target in actions:
            await asyncio.sleep(self.rng.uniform(0.5, 3.0))
            if kind == "fault" and self.faults is not None:
                # The wave arrives while the fault holds.
                self.log(f"fault {target} begins")
                began = time.monotonic()
                self.log(await self.faults.hold(target, self.wave), time.monotonic() - began)
            elif kind == "kill":
                await self.kill_and_restart(target)
                await self.wave()
            elif kind == "broker" and self.broker is not None:
                began = time.monotonic()
                await self.broker.restart()
                self.log("restart the scenario's Kafka broker", time.monotonic() - began)
                await self.wave()
            else:
                await self.restart_infra(target)
                await self.wave()
            await self.platform_rejects()
            if self.rng.random() < 0.5:
                await self.stack.ecsim_admin("POST", "/sim/tokens/expire")
                self.log("ecsim expires every token")

    async def platform_rejects(self) -> None:
        """The platform's own faults on the e-mail audience's files (DPID 1002): after the first wave the
        next file is rejected whole, after the third a share of each file's lines, from the fifth none."""
        faults: dict[str, Any] | None = None
        if self.waves == 1:
            faults = {"delay_s": 1.0, "reject_files": 1, "reject_file_reason": "chaos: file rejected", "dpid": 1002}
        elif self.waves == 3:
            faults = {"delay_s": 1.0, "reject_line_share": 0.05, "dpid": 1002}
        elif self.waves == 5:
            faults = {"delay_s": 0.5}
        if faults is not None:
            await self.stack.ecsim_admin("PUT", "/sim/inbound/faults", faults)
            self.log(f"ecsim inbound processing: {faults}")

    async def heal(self) -> None:
        """The platform stops rejecting; a last mirror sends what it did not apply."""
        await self.stack.ecsim_admin("DELETE", "/sim/inbound/faults")
        request = self.requests[0].model_copy(update={"request_id": uuid.uuid4()})
        self.last_request = request.request_id
        await self._send_request(request)
        self.log("ecsim applies everything again; a last mirror of the e-mail list")

    async def _last_request_ended(self) -> bool:
        if self.last_request is None:
            return True
        state = await self.stack.pool.fetchval(
            "SELECT state FROM run WHERE request_id = $1 ORDER BY started_at DESC LIMIT 1", self.last_request
        )
        return state in ("succeeded", "partial", "failed")

    async def wait_final(self) -> None:
        deadline = time.monotonic() + self.config.timeout_s
        while time.monotonic() < deadline:
            try:
                rows = await self.stack.pool.fetch("SELECT state FROM run")
                files = await self.stack.pool.fetchval("SELECT count(*) FROM processed_file WHERE state = 'processed'")
            except (OSError, Exception):  # Postgres may be restarting: ask again
                await asyncio.sleep(0.5)
                continue
            final = [r for r in rows if r["state"] in ("succeeded", "partial", "failed", "blocked")]
            # Imports: 2 full runs per audience pair fed twice (two lists per segment) and one per delta file
            # per audience; exports: the two first requests, one per wave and the last one.
            delivered = len(self.delivered)
            everything = len(final) == len(rows) and files >= delivered and len(rows) >= delivered + 2
            if everything and await self._last_request_ended():
                return
            await asyncio.sleep(0.5)
        try:
            print(await describe_unfinished(self.stack.pool, self.delivered, self.last_request), flush=True)
            print(log_warnings(self.stack.workdir), flush=True)
        except Exception as exc:  # the diagnosis must not hide the timeout
            print(f"could not describe what is unfinished: {exc!r}", flush=True)
        raise TimeoutError("runs did not all reach a final state")


def _why_not_restartable(what: str) -> str | None:
    """None when this checkout started ``what`` (only that is ours to bounce), else why not, from its status."""
    script = LOCAL / f"{what}.sh"
    out = subprocess.run([str(script), "status"], capture_output=True, text=True, check=False)
    said = (out.stdout.strip() or out.stderr.strip() or f"exit {out.returncode}").splitlines()[-1][:200]
    if out.returncode == 0 and "pid" in out.stdout and "not started" not in out.stdout and "external" not in out.stdout:
        return None
    return f"not started from this checkout ({script.name} status: {said})"


async def run_chaos(workdir: Path, config: ChaosConfig) -> ChaosReport:
    async with bench_stack(workdir) as stack:
        # Platform faults all along: the client's retries must absorb them.
        chaos = Chaos(stack, config)
        expected = await chaos.setup()
        await stack.ecsim_admin(
            "PUT",
            "/sim/faults",
            {"rate": config.fault_rate, "statuses": [429, 500, 503], "retry_after_s": 0, "seed": config.seed},
        )
        n = config.ids_per_import
        shared_kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        async with prepared_faults(
            stack.pool,
            stack.database_url,
            workdir,
            hold_s=config.fault_hold_s,
            hang_s=config.zone_hang_s,
            hanging_ids=range(n - 49, n + 1),  # members from the snapshot that no wave removes
            kafka=config.kafka_faults,
            not_exercised=chaos.report.not_exercised,
        ) as setup:
            chaos.faults = setup.faults
            chaos.broker = setup.broker
            chaos.service_env["DATABASE_URL"] = setup.database_url
            if setup.kafka_bootstrap is not None:
                # Everyone (services, driver, checks) reaches the scenario's own broker through its proxy.
                os.environ["KAFKA_BOOTSTRAP_SERVERS"] = setup.kafka_bootstrap
                chaos.service_env["KAFKA_BOOTSTRAP_SERVERS"] = setup.kafka_bootstrap
                chaos.log(f"the scenario's own Kafka broker, reached through toxiproxy at {setup.kafka_bootstrap}")
            try:
                await _play(chaos, expected)
            finally:
                if shared_kafka is None:
                    os.environ.pop("KAFKA_BOOTSTRAP_SERVERS", None)
                else:
                    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = shared_kafka
        chaos.report.seconds = time.monotonic() - chaos.started
        return chaos.report


async def _play(chaos: Chaos, expected: dict[str, set[int]]) -> None:
    stack = chaos.stack
    for name in ("reconcile", "ingest", "publish"):
        await stack.start(name, **chaos.service_env)
    chaos.log("stack up; delivering imports and requesting exports")
    bad = await send_bad_messages(KafkaSettings(topic_prefix=stack.topic_prefix))
    chaos.deliver_imports()
    requests = await chaos.request_exports()
    await chaos.drive()
    if chaos.faults is not None:
        chaos.delivered += [h.batch_root for h in chaos.faults.hanging]
    await chaos.heal()
    await chaos.wait_final()
    chaos.log("all runs final")
    await stack.ecsim_admin("DELETE", "/sim/faults")
    await verify_outcomes(chaos, expected, requests)
    await verify_ledgers(chaos.report.checks, stack.pool, stack.topic_prefix, chaos.delivered, bad)
    if chaos.faults is not None:
        chaos.report.checks += await faults_met(chaos.faults)
    await verify_secrets(chaos)
