"""The demo: a campaign and an overlapping platform population, two imports and one export, verified.

``audience-bridge demo`` (what ``make run`` and ``make demo`` call) works against the running local stack
(``make up``): it loads 100,000 recipients with e-mails, CRM ids and visitor links into Postgres, gives
ecsim a population that overlaps them, has ecsim deliver two shared audiences (one by Visitor ID, one by
Declared ID), waits for the imports, builds a targeted list from them, shows its export's dry run, schedules
the export daily and exports it as a shared audience (:mod:`services.cli.demo_preview`), then checks every
result against what the population says it must be and prints a summary.

The synthetic population (``shared.population``) is part of the test rig: the dev image and a source
checkout carry it, the runtime image does not. It is imported when the demo runs, never at import time, so
the CLI's other commands work without it and ``audience-bridge demo`` fails with one line saying why.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
import orjson
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from services.cli import demo_preview
from services.cli.demo_setup import (
    CATALOG,
    DECLARED_DESTINATION,
    EXPORT_AUDIENCE,
    PLATFORM_SEED,
    TARGETED_LIST,
    VISITOR_DESTINATION,
    expected_members,
    population_spec,
)
from services.cli.demo_streams import CampaignStreams
from services.reconcile.catalog import apply_catalog, ensure_list
from services.reconcile.export_dry_run import DryRun
from services.reconcile.schedules import Schedule
from shared.errors import BridgeError
from shared.kafka import Producer, ensure_topics
from shared.messages import AudienceExportRequest
from shared.migrations import migrate
from shared.runs.states import ENDED_STATES
from shared.settings import KafkaSettings
from shared.topics import AUDIENCE_EXPORT_REQUESTS, topic_name

if TYPE_CHECKING:  # the dev image's: imported by population_spec() at run time
    from shared.population import Population


class DemoFailed(BridgeError):
    """A step of the demo did not end as it must."""


@dataclass
class RunSummary:
    direction: str
    audience: str
    state: str
    counts: dict[str, int]
    unmatched_by_reason: dict[str, int]
    match_rate: dict[str, float] | None
    seconds: float | None
    reason: str | None


@dataclass
class DemoResult:
    runs: list[RunSummary] = field(default_factory=list)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.checks) and all(r.state == "succeeded" for r in self.runs)


class Demo:
    def __init__(
        self,
        *,
        database_url: str,
        kafka: KafkaSettings,
        ecsim_url: str,
        console: Console,
        timeout_s: float = 600,
        sim_token: str | None = None,
    ) -> None:
        self._dsn = database_url
        # ecsim's /sim needs it when ECSIM_SIM_TOKEN is set there (services/ecsim/admin_auth.py).
        self._sim_headers = {"Authorization": f"Bearer {sim_token}"} if sim_token else {}
        self._kafka = kafka
        self._ecsim = ecsim_url.rstrip("/")
        self._console = console
        self._timeout = timeout_s
        # The export's dry run and its schedule, made just before it is requested (demo_preview).
        self._preview: DryRun | None = None
        self._schedule: Schedule | None = None

    async def run(self, recipients: int, seed: int) -> DemoResult:
        spec = population_spec(recipients, seed)  # first: without the test rig, fail before touching anything
        from shared.population import Population

        population = Population(spec)
        result = DemoResult()
        conn = await asyncpg.connect(self._dsn)
        try:
            await migrate(conn)
            with Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=self._console,
                transient=False,
            ) as progress:
                await self._step(
                    progress,
                    f"loading {recipients:,} recipients and their visitor links",
                    lambda: self._load_campaign(conn, population),
                )
                await self._step(
                    progress,
                    "configuring data sources, audiences and the platform",
                    lambda: self._configure(conn, population),
                )
                since = await conn.fetchval("SELECT now()")
                await self._step(progress, "the platform delivers two shared audiences", lambda: self._deliver())
                await self._step(
                    progress, "importing them into campaign lists", lambda: self._wait_runs(conn, "import", since, 2)
                )
                await self._step(
                    progress,
                    "exporting a targeted list as a shared audience (a dry run first, then daily on a schedule)",
                    lambda: self._export(conn),
                )
                await self._step(
                    progress,
                    "waiting for the export and the platform's processing",
                    lambda: self._wait_runs(conn, "export", since, 1),
                )
            await self._verify(conn, population, result)
            result.checks += await demo_preview.checks(conn, self._preview, self._schedule, since)
            # The campaign side streaming in (recipients beyond the population's, removed again at the end).
            streams = CampaignStreams(self._kafka, self._admin, self._timeout)
            result.checks += await streams.run(conn, population.recipient_count + 1)
            result.runs = await self._summaries(conn, since)
        finally:
            await conn.close()
        return result

    async def _step(self, progress: Progress, title: str, work: Callable[[], Awaitable[Any]]) -> Any:
        task = progress.add_task(title, total=None)
        value = await work()
        progress.update(task, description=f"[green]✓[/green] {title}", completed=1, total=1)
        return value

    async def _load_campaign(self, conn: Any, population: Population) -> None:
        have = await conn.fetchval(
            "SELECT count(*) FROM recipient WHERE recipient_id <= $1", population.recipient_count
        )
        if have == population.recipient_count:
            return  # loaded by an earlier demo: the population is deterministic
        async with conn.transaction():
            await conn.execute(
                "CREATE TEMP TABLE demo_recipient (recipient_id bigint, email text, crm_id text) ON COMMIT DROP;"
                "CREATE TEMP TABLE demo_link (ecid text, recipient_id bigint) ON COMMIT DROP"
            )
            recipients = list(population.recipients())
            await conn.copy_records_to_table(
                "demo_recipient", records=[(r.index, r.email, r.crm_id) for r in recipients]
            )
            await conn.copy_records_to_table("demo_link", records=[(e, r.index) for r in recipients for e in r.ecids])
            await conn.execute(
                """INSERT INTO recipient (recipient_id, email, crm_id) SELECT * FROM demo_recipient
                   ON CONFLICT (recipient_id) DO UPDATE SET email = EXCLUDED.email, crm_id = EXCLUDED.crm_id;
                   INSERT INTO visitor_link (ecid, recipient_id) SELECT * FROM demo_link ON CONFLICT DO NOTHING;
                   ANALYZE recipient; ANALYZE visitor_link"""
            )

    async def _configure(self, conn: Any, population: Population) -> None:
        await apply_catalog(conn, CATALOG)
        # Both sides start over: ecsim forgets everything, so the bridge must forget what it shared there.
        async with conn.transaction():
            await conn.execute(
                """DELETE FROM exported_member WHERE audience_id IN
                       (SELECT audience_id FROM shared_audience WHERE direction = 'export' AND name = $1)""",
                EXPORT_AUDIENCE,
            )
            await conn.execute(
                """UPDATE shared_audience SET platform_trait_id = NULL, platform_segment_id = NULL,
                          integration_code = NULL WHERE direction = 'export' AND name = $1""",
                EXPORT_AUDIENCE,
            )
            await conn.execute(
                "DELETE FROM list_member WHERE list_id IN (SELECT list_id FROM list WHERE name = ANY($1::text[]))",
                [a.list for a in CATALOG.import_audiences] + [TARGETED_LIST],
            )
            await conn.execute(
                "DELETE FROM unmatched_id WHERE audience_id = ANY($1::text[])",
                [a.audience_id for a in CATALOG.import_audiences],
            )
        await self._admin("POST", "/sim/reset")
        await self._admin("POST", "/sim/seed", PLATFORM_SEED)
        await self._admin("POST", "/sim/population", population.spec.model_dump(mode="json"))

    async def _deliver(self) -> None:
        for destination in (VISITOR_DESTINATION, DECLARED_DESTINATION):
            await self._admin("POST", "/sim/deliveries", {"destination_id": destination, "mode": "full", "gzip": True})

    async def _wait_runs(self, conn: Any, direction: str, since: Any, count: int) -> None:
        deadline = time.monotonic() + self._timeout
        while True:
            rows = await conn.fetch(
                "SELECT audience_id, state, reason FROM run WHERE direction = $1 AND started_at >= $2", direction, since
            )
            final = [r for r in rows if r["state"] in ENDED_STATES]
            if len(final) >= count:
                bad = [f"{r['audience_id']}: {r['state']} ({r['reason']})" for r in final if r["state"] != "succeeded"]
                if bad:
                    raise DemoFailed(f"{direction} runs did not succeed: {'; '.join(bad)}")
                return
            if time.monotonic() > deadline:
                raise DemoFailed(
                    f"{direction} runs not finished after {self._timeout:.0f}s",
                    runs=[(r["audience_id"], r["state"]) for r in rows],
                )
            await asyncio.sleep(0.2)

    async def _export(self, conn: Any) -> None:
        list_id = await ensure_list(conn, TARGETED_LIST)
        async with conn.transaction():
            await conn.execute("DELETE FROM list_member WHERE list_id = $1", list_id)
            # The targeting: engaged visitors who also read the newsletter.
            await conn.execute(
                """INSERT INTO list_member (list_id, recipient_id)
                   SELECT $1::bigint, a.recipient_id FROM list_member a
                     JOIN list la ON la.list_id = a.list_id AND la.name = 'Demo: engaged visitors'
                     JOIN list_member b ON b.recipient_id = a.recipient_id
                     JOIN list lb ON lb.list_id = b.list_id AND lb.name = 'Demo: newsletter readers'""",
                list_id,
            )
        request = AudienceExportRequest(
            list_id=TARGETED_LIST,
            audience_name=EXPORT_AUDIENCE,
            data_source="hashed-emails",
            mode="mirror",
            requested_by="demo",
        )
        # First what it would do (a dry run: nothing recorded or sent), and a schedule that repeats it daily.
        self._preview = await demo_preview.preview(conn, request)
        self._schedule = await demo_preview.schedule_daily(conn, request)
        topic = topic_name(self._kafka.topic_prefix, AUDIENCE_EXPORT_REQUESTS)
        await ensure_topics(self._kafka, [topic])
        producer = Producer(self._kafka, "demo")
        try:
            await producer.send_model(topic, request)
        finally:
            await producer.stop()

    async def _verify(self, conn: Any, population: Population, result: DemoResult) -> None:
        for list_name, segment, id_type in (
            ("Demo: engaged visitors", "engaged", "ecid"),
            ("Demo: newsletter readers", "readers", "declared"),
        ):
            rows = await conn.fetch(
                "SELECT recipient_id FROM list_member JOIN list USING (list_id) WHERE list.name = $1", list_name
            )
            actual = {r["recipient_id"] for r in rows}
            expected = expected_members(population, segment, id_type)
            result.checks.append(
                (
                    f"list {list_name!r} holds exactly the expected recipients",
                    actual == expected,
                    f"{len(actual):,} members, {len(expected):,} expected",
                )
            )
        audience = await conn.fetchrow(
            "SELECT audience_id, platform_trait_id FROM shared_audience WHERE direction = 'export' AND name = $1",
            EXPORT_AUDIENCE,
        )
        exported = await conn.fetchval(
            "SELECT count(*) FROM exported_member WHERE audience_id = $1", audience["audience_id"] if audience else ""
        )
        targeted = await conn.fetchval(
            "SELECT count(*) FROM list_member JOIN list USING (list_id) WHERE list.name = $1", TARGETED_LIST
        )
        held = -1
        if audience is not None and audience["platform_trait_id"] is not None:
            held = await self._trait_members(int(audience["platform_trait_id"]), expect=int(exported))
        result.checks.append(
            (
                "the platform holds the exported audience",
                held == exported == targeted,
                f"{targeted:,} targeted, {exported:,} exported, {held:,} on the platform",
            )
        )

    async def _trait_members(self, trait: int, expect: int) -> int:
        deadline = time.monotonic() + 60
        count = -1
        while time.monotonic() < deadline:
            await self._admin("POST", "/sim/inbound/scan")
            count = int((await self._admin("GET", f"/sim/traits/{trait}/members"))["count"])
            if count == expect:
                break
            await asyncio.sleep(0.5)
        return count

    async def _summaries(self, conn: Any, since: Any) -> list[RunSummary]:
        rows = await conn.fetch(
            """SELECT run_id, direction, audience_id, state, counts, match_rate, reason,
                      extract(epoch FROM coalesce(finished_at, updated_at) - started_at) AS seconds
                 FROM run WHERE started_at >= $1 ORDER BY started_at""",
            since,
        )
        summaries = []
        for r in rows:
            reasons = await conn.fetch(
                "SELECT reason, count(*) AS n FROM unmatched_id WHERE audience_id = $1 GROUP BY reason",
                r["audience_id"],
            )
            summaries.append(
                RunSummary(
                    direction=r["direction"],
                    audience=r["audience_id"],
                    state=r["state"],
                    counts={k: int(v) for k, v in orjson.loads(r["counts"]).items()},
                    unmatched_by_reason={x["reason"]: int(x["n"]) for x in reasons},
                    match_rate=orjson.loads(r["match_rate"]) if r["match_rate"] else None,
                    seconds=float(r["seconds"]) if r["seconds"] is not None else None,
                    reason=r["reason"],
                )
            )
        return summaries

    async def _admin(self, method: str, path: str, body: Any = None) -> Any:
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                method,
                self._ecsim + path,
                json=body,
                headers=self._sim_headers,
                timeout=aiohttp.ClientTimeout(total=120),
            ) as resp,
        ):
            text = await resp.text()
            if resp.status >= 400:
                raise DemoFailed("ecsim refused an admin call", path=path, status=resp.status, body=text[:300])
            return orjson.loads(text) if text else None


def render(result: DemoResult, console: Console, *, urls: dict[str, str]) -> None:
    """One block per run: readable in any terminal width."""
    console.print()
    for run in result.runs:
        c = run.counts
        took = f" in {run.seconds:.1f}s" if run.seconds is not None else ""
        colour = "green" if run.state == "succeeded" else "red"
        console.print(f"[bold]{run.direction}[/bold] {run.audience}: [{colour}]{run.state}[/{colour}]{took}")
        if run.direction == "import":
            rate = ", ".join(f"{v:.1%} by {k}" for k, v in (run.match_rate or {}).items()) or "n/a"
            reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(run.unmatched_by_reason.items())) or "none"
            console.print(
                f"    received {c.get('received', 0):,} · matched {c.get('matched', 0):,} ({rate}) · "
                f"kept unmatched: {reasons} · added {c.get('added', 0):,} · removed {c.get('removed', 0):,}"
            )
        else:
            console.print(
                f"    list members {c.get('received', 0):,} · could not be mapped {c.get('excluded', 0):,} · "
                + (f"opted out {c['opted_out']:,} · " if c.get("opted_out") else "")
                + f"added {c.get('added', 0):,} · removed {c.get('removed', 0):,}"
            )
        if run.reason:
            console.print(f"    reason: {run.reason}")
    console.print()
    for title, ok, detail in result.checks:
        mark = "[green]✓[/green]" if ok else "[red]✗[/red]"
        console.print(f"{mark} {title}: {detail}")
    console.print()
    for what, url in urls.items():
        console.print(f"{what}: {url}")
    console.print("[green]demo succeeded[/green]" if result.ok else "[red]demo failed[/red]")
