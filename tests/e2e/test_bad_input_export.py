"""The bad-input corpus through the real export side: ecsim, reconcile and publish as processes.

Export requests and export batches of ``tests/corpus`` are fed with good requests alongside (lists and
audiences with hostile names among them); each bad one must end dead-lettered with the reason and, where a
run was asked for, a ``failed`` or ``blocked`` status, while the good ones reach the platform: ecsim's
profile store holds exactly the lists' IDs. The corpus' inbound files are then given to ecsim (the
platform), which rejects or counts them as the platform does. No log line or status event may hold a
secret. One stack serves the whole module.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from services.reconcile.catalog import CatalogDataSource, ensure_list, upsert_data_source
from services.reconcile.exporting import export_audience_id, export_run_id
from shared.kafka import OutgoingMessage, Producer
from shared.messages import AudienceExportRequest
from shared.metrics import RuntimeMetrics
from shared.platform import PlatformClient
from shared.settings import KafkaSettings
from tests import corpus
from tests.corpus.generate import INBOUND_TRAIT
from tests.corpus.harness import (
    TokenRecorder,
    TopicTail,
    bootstrap_servers,
    ecsim_seed,
    fresh_database,
    headers,
    leaks,
    secrets_to_hunt,
    start_services,
    stop_services,
)
from tests.fixtures.bridge_db import ecid_of, seed_campaign
from tests.fixtures.ecsim import EcsimEndpoint, _spawn, _stop
from tests.fixtures.stack import ServiceProcess
from tests.helpers import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

PARTNER = "acme"
PII_SOURCE = CatalogDataSource(name="partner-pii", dpid=1009, id_type="ecid", export_controls=("PII",))
# Good exports alongside the bad requests: (list name, audience name, recipients). Hostile names too: they
# must round-trip through Postgres, Kafka and the platform unchanged.
GOOD_EXPORTS = [
    ("Corpus export", "Corpus good audience", range(1, 31)),
    ("'; DROP TABLE recipient; --", 'Robert\'); DROP TABLE list;-- "audience"', range(31, 41)),
    ("Ünïcødé ☃ \U0001d518 list \u202e", "%s $1 {} \\' ` audience", range(41, 46)),
]


def _visitor_ids(recipients: range) -> set[str]:
    """Every ECID of these recipients (the campaign gives recipient 2 a second browser)."""
    return {ecid_of(r) for r in recipients} | ({ecid_of(2, 1)} if 2 in recipients else set())


@dataclass
class Stack:
    pool: asyncpg.Pool
    export_root: Path
    prefix: str
    env: dict[str, str]
    services: dict[str, ServiceProcess]
    tail: TopicTail
    producer: Producer
    ims: TokenRecorder
    client_secret: str
    ecsim: EcsimEndpoint

    def topic(self, base: str) -> str:
        return self.prefix + base

    async def alive(self) -> None:
        for service in self.services.values():
            assert service.process.returncode is None, f"{service.name} exited: {service.log_path.read_text()[-2000:]}"
            assert (await service.get("/readyz"))[0] == 200, f"{service.name} is not ready"

    async def trait_members(self, sid: int) -> set[str]:
        body = await self.ecsim.admin("GET", f"/traits/{sid}/members?ids=true&pageSize=100000")
        return set(body["ids"])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(infra: None, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    tmp = tmp_path_factory.mktemp("bad-input-export")
    secret = f"corpus-client-secret-{uuid.uuid4().hex}"
    export_root = tmp / "export"
    process, ecsim = await asyncio.to_thread(
        _spawn,
        tmp / "ecsim.log",
        {
            "ECSIM_CLIENT_SECRET": secret,
            "ECSIM_EXPORT_DROPZONE_URL": export_root.as_uri(),
            "ECSIM_INBOUND_POLL_INTERVAL_S": "0",  # processed when the test says so
        },
    )
    ims = TokenRecorder(ecsim.ims_url)
    prefix = f"t{uuid.uuid4().hex[:10]}."
    try:
        seed = ecsim_seed({})
        seed["traits"].append(
            {
                "sid": INBOUND_TRAIT,
                "name": "inbound",
                "traitType": "ON_BOARDED_TRAIT",
                "dataSourceId": 1001,
                "folderId": 0,
            }
        )
        await ecsim.seed(seed)
        ims_url = await ims.start()
        async with fresh_database() as dsn:
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
            assert pool is not None
            await seed_campaign(pool, 200)
            async with pool.acquire() as conn:
                await upsert_data_source(conn, PII_SOURCE)
                for list_name, _, recipients in GOOD_EXPORTS:
                    list_id = await ensure_list(conn, list_name)
                    await conn.executemany(
                        "INSERT INTO list_member (list_id, recipient_id) VALUES ($1, $2)",
                        [(list_id, r) for r in recipients],
                    )
            env = {
                "TOPIC_PREFIX": prefix,
                "DATABASE_URL": dsn,
                "EXPORT_DROPZONE_URL": export_root.as_uri(),
                "EXPORT_PARTNER_FOLDER": PARTNER,
                # Its ecsim processes files only when asked: the runs end when uploaded, as before receipts.
                "EXPORT_AWAIT_RECEIPTS": "false",
                "PLATFORM_IMS_URL": ims_url,
                "PLATFORM_API_URL": ecsim.api_url,
                "PLATFORM_CLIENT_SECRET": secret,
                "RETRY_BACKOFF_INITIAL_S": "0.05",
                "RETRY_BACKOFF_MAX_S": "0.5",
                "LOG_LEVEL": "DEBUG",
            }
            services = await start_services(["reconcile", "publish"], env, tmp)
            tail = TopicTail(
                [
                    prefix + "audience-sync-status",
                    prefix + "audience-export-requests.dlq",
                    prefix + "audience-export-batches.dlq",
                ]
            )
            await tail.start()
            producer = Producer(
                KafkaSettings(kafka_bootstrap_servers=bootstrap_servers()), "corpus", RuntimeMetrics("c")
            )
            await producer.start()
            try:
                yield Stack(
                    pool=pool,
                    export_root=export_root,
                    prefix=prefix,
                    env=env,
                    services={s.name: s for s in services},
                    tail=tail,
                    producer=producer,
                    ims=ims,
                    client_secret=secret,
                    ecsim=ecsim,
                )
            finally:
                await producer.stop()
                await tail.stop()
                await stop_services(services)
                await pool.close()
    finally:
        await ims.stop()
        await asyncio.to_thread(_stop, process)


def _problems(stack: Stack, base: str, cases: list[corpus.CorpusCase], run_id_of: Any) -> dict[str, str]:
    """Why each case did not (yet) end as its manifest says: a dead letter, and a failed/blocked status."""
    dead = stack.tail.by_key(stack.topic(base) + ".dlq")
    statuses = stack.tail.statuses(stack.topic("audience-sync-status"))
    problems = {}
    for case in cases:
        record = dead.get(case.key)
        if case.expect == "dlq":
            if record is None:
                problems[case.id] = "not dead-lettered"
                continue
            if case.reason not in headers(record).get("dlq.reason", ""):
                problems[case.id] = f"dlq.reason {headers(record).get('dlq.reason')!r} lacks {case.reason!r}"
                continue
            if record.value != case.value():
                problems[case.id] = "the dead letter does not carry the original value"
                continue
        elif record is not None:
            problems[case.id] = f"dead-lettered, but a {case.expect} request is valid"
            continue
        state = {"dlq": "failed", "blocked": "blocked"}[case.expect]
        if case.get("failed_status") or case.expect == "blocked":
            run_id = run_id_of(case)
            if not any(s.run_id == run_id and s.state == state and case.reason in (s.reason or "") for s in statuses):
                problems[case.id] = f"no {state} status event with the reason"
    return problems


async def test_export_requests_fail_clearly_and_good_exports_reach_the_platform(stack: Stack) -> None:
    topic = stack.topic("audience-export-requests")
    cases = corpus.of_kind("export-request")
    good = [
        AudienceExportRequest(list_id=list_name, audience_name=audience, data_source="visitors", requested_by="t")
        for list_name, audience, _ in GOOD_EXPORTS
    ]
    await stack.producer.send([OutgoingMessage.of(topic, good[0])])
    await stack.producer.send([OutgoingMessage(topic=topic, value=c.value() or b"", key=c.key) for c in cases])
    await stack.producer.send([OutgoingMessage.of(topic, r) for r in good[1:]])

    def request_run(case: corpus.CorpusCase) -> uuid.UUID:
        return export_run_id(uuid.UUID(case["request_id"]), 0)

    async def problems() -> dict[str, str]:
        return _problems(stack, "audience-export-requests", cases, request_run)

    await eventually(problems, until=lambda p: not p)

    async def states() -> list[str | None]:
        return [await stack.pool.fetchval("SELECT state FROM run WHERE request_id = $1", r.request_id) for r in good]

    assert await eventually(states, until=lambda s: None not in s and "progress" not in s, timeout=60) == [
        "succeeded"
    ] * len(good)
    # The platform applies the files: each audience's trait holds exactly its list's visitor IDs.
    receipts = await stack.ecsim.scan_inbound()
    assert receipts
    assert {(r["status"], r["formatErrors"], r["invalidAamIds"]) for r in receipts} == {("processed", 0, 0)}
    for (list_name, audience, recipients), request in zip(GOOD_EXPORTS, good, strict=True):
        audience_id = export_audience_id("visitors", audience)
        row = await stack.pool.fetchrow(
            "SELECT name, platform_trait_id FROM shared_audience WHERE audience_id = $1", audience_id
        )
        assert row is not None
        assert row["name"] == audience  # hostile names round-trip exactly
        assert await stack.pool.fetchval("SELECT count(*) FROM list WHERE name = $1", list_name) == 1
        assert await stack.trait_members(row["platform_trait_id"]) == _visitor_ids(recipients), request
        async with PlatformClient(stack.ecsim.platform_settings()) as platform:
            trait = await platform.get_trait(row["platform_trait_id"])
        assert (trait.name, trait.integration_code) == (audience, audience_id)
    await stack.alive()


async def test_export_batches_fail_clearly(stack: Stack) -> None:
    topic = stack.topic("audience-export-batches")
    cases = corpus.of_kind("export-batch")
    await stack.producer.send([OutgoingMessage(topic=topic, value=c.value() or b"", key=c.key) for c in cases])

    async def problems() -> dict[str, str]:
        return _problems(stack, "audience-export-batches", cases, lambda c: uuid.UUID(c["run_id"]))

    await eventually(problems, until=lambda p: not p)
    await stack.alive()


async def test_the_platform_rejects_or_counts_bad_inbound_files(stack: Stack) -> None:
    """ecsim, as the platform, on inbound files with format errors: a receipt says why, or counts them."""
    cases = corpus.of_kind("inbound-file")
    keys = {}
    for case in cases:
        [path] = case.files
        key = path.split("/", 2)[2]  # inbound/<case>/<partner>/date=.../<name>
        target = stack.export_root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((corpus.CORPUS_DIR / path).read_bytes())
        keys[case.id] = key
    receipts = {r["objectKey"]: r for r in await stack.ecsim.scan_inbound()}
    problems = {}
    for case in cases:
        receipt = receipts.get(keys[case.id])
        if receipt is None:
            problems[case.id] = "no receipt"
        elif case.expect == "ecsim-rejected":
            if receipt["status"] != "rejected" or case.reason not in receipt.get("reason", ""):
                problems[case.id] = f"{receipt['status']}: {receipt.get('reason')!r}"
            elif not (stack.export_root / "rejected" / (keys[case.id] + ".reason.txt")).exists():
                problems[case.id] = "no .reason.txt beside the rejected file"
        else:
            wrong = {k: receipt.get(k) for k, v in case["receipt"].items() if receipt.get(k) != v}
            if receipt["status"] != "processed" or wrong:
                problems[case.id] = f"{receipt['status']}, counters {wrong} != {case['receipt']}"
    assert problems == {}
    members = {ecid_of(r) for c in cases if c.expect == "ecsim-counted" for r in c["members"]}
    assert await stack.trait_members(INBOUND_TRAIT) == members


async def test_no_secret_in_any_log_line_or_status_event(stack: Stack) -> None:
    assert stack.ims.tokens, "the bridge never asked for a token: the hunt below would prove nothing"
    secrets = secrets_to_hunt(stack.client_secret, stack.ims.tokens, stack.env["DATABASE_URL"])
    sources = {f"{s.name}'s log": s.log_path.read_text(errors="replace") for s in stack.services.values()}
    statuses = stack.tail.records(stack.topic("audience-sync-status"))
    assert statuses
    sources["audience-sync-status"] = "\n".join(r.value.decode("utf-8", "replace") for r in statuses)
    for base in ("audience-export-requests.dlq", "audience-export-batches.dlq"):
        sources[base + " headers"] = "\n".join(str(headers(r)) for r in stack.tail.records(stack.topic(base)))
    # The files the platform received carry IDs only, never a credential.
    for path in stack.export_root.rglob("ftp_dpm_*"):
        sources[f"file {path.name}"] = path.read_bytes().decode("latin-1")
    assert leaks(sources, secrets) == []
