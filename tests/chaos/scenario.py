"""The fault scenario behind ``make chaos`` (and, shortened, a CI test).

On the real local stack: import several audiences (full and delta, both ID types) and export two lists
while a driver kills ingest, reconcile and publish with SIGKILL at random points (restarting them),
restarts the Kafka broker once and Postgres once, and ecsim answers 429/500 on a share of calls, expires
tokens, processes inbound files late and rejects a whole file and then a share of lines of the e-mail
audience's files (the runs end ``failed``/``partial``, and the following mirrors send what was not applied
again; a last mirror once the rejections stop). At the end every outcome must be exactly right: lists, the
platform's trait members, ``exported_member``,
``applied_batch`` (each batch once), processed files (each once), every run final. Secrets must not
appear in any log line or status event. The driver prints what it killed when and the time to recover.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from services.reconcile.catalog import CatalogImportAudience, ensure_list, upsert_import_audience
from services.reconcile.exporting import export_audience_id
from shared.errors import TransientError
from shared.formats.outbound import OutboundRow
from shared.kafka import Producer, ensure_topics
from shared.messages import AudienceExportRequest
from shared.settings import REPO_ROOT, KafkaSettings
from tests.bench.campaign import PLATFORM_SEED, ecid, hashed_email, load_recipients
from tests.bench.stack import BenchStack, bench_stack
from tests.helpers import deliver_outbound, read_topic

LOCAL = REPO_ROOT / "deploy" / "local"
CLIENT_SECRET = "ecsim-local-secret"


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


@dataclass
class Event:
    at: float
    what: str
    recovery_s: float | None = None


@dataclass
class ChaosReport:
    events: list[Event] = field(default_factory=list)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.checks)

    def print(self) -> None:
        print("\nchaos timeline (seconds since start):")
        for event in self.events:
            recovery = f", back in {event.recovery_s:.1f}s" if event.recovery_s is not None else ""
            print(f"  {event.at:7.1f}  {event.what}{recovery}")
        print(f"\nchecks (scenario took {self.seconds:.0f}s):")
        for name, ok, detail in self.checks:
            print(f"  {'ok  ' if ok else 'FAIL'} {name}: {detail}")


class Chaos:
    def __init__(self, stack: BenchStack, config: ChaosConfig) -> None:
        self.stack = stack
        self.config = config
        self.report = ChaosReport()
        self.rng = random.Random(config.seed)
        self.started = time.monotonic()
        self.waves = 0
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
        deliver_outbound(zone, "full", visitors, ts)
        deliver_outbound(zone, "full", emails, ts + 1, master_dpid=1002, destination_id=7002)  # hashed e-mails' DPID

    async def wave(self) -> None:
        """More work arriving while things fail: 100 visitors leave (a delta file), and the e-mail list
        loses some members and is exported again (mirror), which must remove them on the platform."""
        self.waves += 1
        k = self.waves
        zone = self.stack.workdir / "import"
        leaving = range(100 * (k - 1) + 1, 100 * k + 1)
        deliver_outbound(zone, "iter", [(ecid(i), (), (5001,)) for i in leaving], int(time.time() * 1000) + k)
        dropped = [r for r in range(1000 * k, 1000 * k + 200) if r % 2 == 0]
        await self._with_retry(
            lambda conn: conn.execute(
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
                list_id="export-emails",
                audience_name="Chaos emails",
                data_source="hashed-emails",
                mode="mirror",
                requested_by="chaos",
            ),
            AudienceExportRequest(
                list_id="export-visitors",
                audience_name="Chaos visitors",
                data_source="visitors",
                mode="append",
                requested_by="chaos",
            ),
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
        if c.restart_broker and _started_here("kafka"):
            actions.append(("infra", "kafka.sh"))
        if c.restart_postgres and _started_here("postgres"):
            actions.append(("infra", "postgres.sh"))
        self.rng.shuffle(actions)
        for kind, target in actions:
            await asyncio.sleep(self.rng.uniform(0.5, 3.0))
            if kind == "kill":
                await self.kill_and_restart(target)
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
            everything = len(final) == len(rows) and files >= 2 + self.waves and len(rows) >= 2 + self.waves + 2
            if everything and await self._last_request_ended():
                return
            await asyncio.sleep(0.5)
        raise TimeoutError("runs did not all reach a final state")

    async def verify(self, expected: dict[str, set[int]], requests: list[AudienceExportRequest]) -> None:
        pool = self.stack.pool
        check = self.report.checks
        left = set(range(1, 100 * self.waves + 1))
        expected = {**expected, "full-visitors": expected["full-visitors"] - left}
        for audience_id, members in expected.items():
            rows = await pool.fetch(
                "SELECT recipient_id FROM list_member JOIN shared_audience USING (list_id) WHERE audience_id = $1",
                audience_id,
            )
            actual = {r["recipient_id"] for r in rows}
            check.append(
                (
                    f"list of {audience_id} is exact",
                    actual == members,
                    f"{len(actual):,} members, {len(members):,} expected, {len(actual ^ members)} differ",
                )
            )
        runs = await pool.fetch("SELECT run_id, direction, state, batches_applied, last_seq, reason FROM run")
        superseded = [r for r in runs if r["state"] == "failed" and "superseded" in (r["reason"] or "")]
        # Export runs the platform refused in whole or in part, as ecsim was told to: their IDs went again.
        refused = [
            r
            for r in runs
            if r["direction"] == "export" and r["state"] in ("failed", "partial") and _refused_by_platform(r["reason"])
        ]
        others = [r for r in runs if r not in superseded and r not in refused]
        check.append(
            (
                "every run reached a final state",
                all(r["state"] == "succeeded" for r in others),
                f"{sum(r['state'] == 'succeeded' for r in others)} succeeded of {len(others)}"
                f" (+{len(superseded)} export attempts superseded after a crash,"
                f" +{len(refused)} export runs the platform refused in whole or in part, as told)"
                + "".join(
                    f"; {r['direction']} {r['state']}: {r['reason']}" for r in others if r["state"] != "succeeded"
                ),
            )
        )
        imports = [r for r in runs if r["direction"] == "import"]
        once = all(r["last_seq"] is not None and r["batches_applied"] == r["last_seq"] + 1 for r in imports)
        applied = await pool.fetchval("SELECT count(*) FROM applied_batch")
        check.append(
            (
                "every import batch applied exactly once",
                once and applied == sum(r["batches_applied"] for r in imports),
                f"{applied} batches in applied_batch",
            )
        )
        staged = await pool.fetchval("SELECT count(*) FROM import_stage_id")
        check.append(("no staged snapshot left behind", staged == 0, f"{staged} IDs left in import_stage_id"))
        files = await pool.fetch("SELECT batch_root, state FROM processed_file")
        check.append(
            (
                "every file batch processed once",
                len(files) == 2 + self.waves and all(f["state"] == "processed" for f in files),
                f"{len(files)} batches recorded for {2 + self.waves} delivered, "
                f"states {sorted({f['state'] for f in files})}",
            )
        )
        for request, step, source, id_of, gone in (
            (requests[0], 2, "hashed-emails", hashed_email, self.dropped),
            (requests[1], 3, "visitors", ecid, set()),
        ):
            audience_id = export_audience_id(source, request.audience_name)
            want = {id_of(r) for r in range(step, self.config.recipients + 1, step) if r not in gone}
            exported = {
                r["id"] for r in await pool.fetch("SELECT id FROM exported_member WHERE audience_id = $1", audience_id)
            }
            trait = await pool.fetchval(
                "SELECT platform_trait_id FROM shared_audience WHERE audience_id = $1", audience_id
            )
            held = await self._trait_members(int(trait)) if trait is not None else set()
            check.append(
                (
                    f"platform holds exactly the {source} export",
                    held == want == exported,
                    f"{len(want):,} expected, {len(exported):,} recorded, {len(held):,} on the platform",
                )
            )

    async def _trait_members(self, trait: int) -> set[str]:
        await self.stack.ecsim_admin("POST", "/sim/inbound/scan")
        ids: set[str] = set()
        page = 0
        while True:
            body = await self.stack.ecsim_admin(
                "GET", f"/sim/traits/{trait}/members?ids=true&page={page}&pageSize=50000"
            )
            ids.update(body["ids"])
            if len(body["ids"]) < 50000:
                return ids
            page += 1

    async def verify_secrets(self) -> None:
        leaks = []
        for log in self.stack.workdir.glob("*.log"):
            text = log.read_text(errors="replace")
            for secret in (CLIENT_SECRET, "audience_bridge:audience_bridge@"):
                if secret in text:
                    leaks.append(f"{log.name}: {secret[:6]}…")
            if "Bearer ey" in text or 'access_token":"' in text:
                leaks.append(f"{log.name}: a token")
        status = await read_topic(
            KafkaSettings().kafka_bootstrap_servers,
            f"{self.stack.topic_prefix}audience-sync-status",
            expect=10**9,
            timeout=5,
        )
        for record in status:
            value = record.value or b""
            if CLIENT_SECRET.encode() in value or b"Bearer" in value:
                leaks.append("audience-sync-status")
        self.report.checks.append(
            (
                "no secret in any log line or status event",
                not leaks,
                f"{len(status)} status events and {len(list(self.stack.workdir.glob('*.log')))} "
                f"logs scanned; leaks: {leaks or 'none'}",
            )
        )


def _refused_by_platform(reason: str | None) -> bool:
    """A run ended by the platform's receipts refusing lines or a file (services.publish.receipts)."""
    text = reason or ""
    return "the platform applied none" in text or "the platform rejected" in text or "chaos: file rejected" in text


def _started_here(what: str) -> bool:
    """Only restart what this checkout started (a shared broker or server is not ours to bounce)."""
    script = LOCAL / f"{what}.sh"
    out = subprocess.run([str(script), "status"], capture_output=True, text=True, check=False)
    return (
        out.returncode == 0 and "pid" in out.stdout and "not started" not in out.stdout and "external" not in out.stdout
    )


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
        for name in ("reconcile", "ingest", "publish"):
            await stack.start(name, **chaos.service_env)
        chaos.log("stack up; delivering imports and requesting exports")
        chaos.deliver_imports()
        requests = await chaos.request_exports()
        await chaos.drive()
        await chaos.heal()
        await chaos.wait_final()
        chaos.log("all runs final")
        await stack.ecsim_admin("DELETE", "/sim/faults")
        await chaos.verify(expected, requests)
        await chaos.verify_secrets()
        chaos.report.seconds = time.monotonic() - chaos.started
        return chaos.report


def dumps(report: ChaosReport) -> bytes:
    data: dict[str, Any] = {
        "events": [{"at": e.at, "what": e.what, "recovery_s": e.recovery_s} for e in report.events],
        "checks": [{"name": n, "ok": ok, "detail": d} for n, ok, d in report.checks],
        "seconds": report.seconds,
    }
    return orjson.dumps(data, option=orjson.OPT_INDENT_2)
