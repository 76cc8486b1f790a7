"""What reconcile's consumer does when applying a membership batch fails, against real Kafka and Postgres.

Postgres errors are injected by a trigger on ``list_member`` that raises a chosen SQLSTATE (or sleeps past
DB_COMMAND_TIMEOUT_S) until the test drops it; a code bug is monkeypatched into the importer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from pydantic import SecretStr

from services.reconcile.app import ReconcileApp
from services.reconcile.importing import Importer
from services.reconcile.settings import ReconcileSettings
from shared import db
from shared.failures import FailureKind, classify
from shared.kafka import OutgoingMessage
from shared.messages import AudienceMembership
from shared.settings import DatabaseSettings
from shared.topics import AUDIENCE_MEMBERSHIP, dlq_name
from tests.fixtures.bridge_db import Campaign, add_import_audience, ecid_of
from tests.fixtures.pg_faults import heal, inject, open_runs, seed_recipients, topic_size
from tests.helpers import eventually, read_topic

pytestmark = pytest.mark.integration

MEMBERS = 3000
BATCH = 1000
AUDIENCE = "seg-faults"


def _delta_run(
    run_id: uuid.UUID, ecids: list[str], *, size: int = BATCH, mode: str = "delta"
) -> list[AudienceMembership]:
    chunks = [ecids[i : i + size] for i in range(0, len(ecids), size)]
    return [
        AudienceMembership.model_validate(
            {
                "run_id": run_id,
                "seq": seq,
                "last": seq == len(chunks) - 1,
                "audience_id": AUDIENCE,
                "data_source": "visitors",
                "id_type": "ecid",
                "mode": mode,
                "adds": chunk,
                "totals": {"received": len(ecids)} if seq == len(chunks) - 1 else None,
            }
        )
        for seq, chunk in enumerate(chunks)
    ]


@pytest_asyncio.fixture
async def start_reconcile(
    campaign: Campaign, database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> AsyncIterator[Callable[..., Awaitable[ReconcileApp]]]:
    await add_import_audience(campaign.pool, AUDIENCE, "visitors", 7001)
    await seed_recipients(campaign.pool, campaign.recipients + 1, MEMBERS)
    apps: list[ReconcileApp] = []

    async def start(**overrides: Any) -> ReconcileApp:
        settings = ReconcileSettings(
            kafka_bootstrap_servers=kafka_bootstrap,
            topic_prefix=topic_prefix,
            database_url=SecretStr(database_url),
            http_port=0,
            retry_backoff_initial_s=0.05,
            retry_backoff_max_s=0.3,
            handler_max_attempts=2,
            shutdown_grace_s=2,
            **overrides,
        )
        app = ReconcileApp(settings)
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop()


async def _send(app: ReconcileApp, batches: list[AudienceMembership]) -> None:
    topic = app.topic(AUDIENCE_MEMBERSHIP)
    await app.producer.send([OutgoingMessage.of(topic, b) for b in batches])


async def _members(pool: asyncpg.Pool) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM list_member lm JOIN shared_audience sa USING (list_id) WHERE sa.audience_id = $1",
        AUDIENCE,
    )
    return count


async def _run(pool: asyncpg.Pool, run_id: uuid.UUID) -> dict[str, Any] | None:
    row = await pool.fetchrow("SELECT state, reason FROM run WHERE run_id = $1", run_id)
    return None if row is None else dict(row)


def _dependency_retries(app: ReconcileApp) -> float:
    total = 0.0
    for metric in app.metrics.dependency_failures.collect():
        total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return total


@pytest.mark.parametrize(
    ("sqlstate", "what"),
    [
        ("53100", "disk full"),
        ("53200", "out of memory"),
        ("57014", "canceling statement due to user request"),
        ("25006", "cannot execute INSERT in a read-only transaction"),
        ("55P03", "could not obtain lock on relation list_member"),
    ],
)
async def test_a_postgres_fault_is_waited_out_and_the_import_ends_exact(
    start_reconcile: Callable[..., Awaitable[ReconcileApp]],
    campaign: Campaign,
    kafka_bootstrap: str,
    sqlstate: str,
    what: str,
) -> None:
    pool = campaign.pool
    await inject(pool, f"RAISE EXCEPTION '{what}' USING ERRCODE = '{sqlstate}'")
    app = await start_reconcile()
    run_id = uuid.uuid4()
    await _send(app, _delta_run(run_id, [ecid_of(i) for i in range(1, MEMBERS + 1)]))

    # Retried well past HANDLER_MAX_ATTEMPTS (2), and /readyz says what is being waited for.
    await eventually(lambda: asyncio.sleep(0, _dependency_retries(app)), until=lambda n: n >= 6, timeout=60)
    checks = await app.readiness()
    assert checks["dependencies"] is False
    assert await _members(pool) == 0
    await heal(pool)

    await eventually(lambda: _members(pool), until=lambda n: n == MEMBERS, timeout=60)
    await eventually(lambda: _run(pool, run_id), until=lambda r: r is not None and r["state"] == "succeeded")
    assert await open_runs(pool) == 0
    assert await topic_size(kafka_bootstrap, dlq_name(app.topic(AUDIENCE_MEMBERSHIP))) == 0
    await eventually(app.readiness, until=lambda c: c["dependencies"] is True)


async def test_a_code_bug_is_retried_a_bounded_number_of_times_then_dead_lettered_and_its_run_failed(
    start_reconcile: Callable[..., Awaitable[ReconcileApp]],
    campaign: Campaign,
    kafka_bootstrap: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = campaign.pool
    bad, good = uuid.uuid4(), uuid.uuid4()
    tries: list[int] = []
    apply = Importer.apply

    async def buggy_apply(self: Importer, batch: AudienceMembership) -> Any:
        if batch.run_id == bad:
            tries.append(batch.seq)
            raise KeyError("a_bug_in_the_importer")
        return await apply(self, batch)

    monkeypatch.setattr(Importer, "apply", buggy_apply)
    app = await start_reconcile()
    await _send(app, _delta_run(bad, [ecid_of(i) for i in range(1, 11)]))
    await _send(app, _delta_run(good, [ecid_of(i) for i in range(11, 21)]))

    dlq = dlq_name(app.topic(AUDIENCE_MEMBERSHIP))
    letters = await read_topic(kafka_bootstrap, dlq, expect=1, timeout=60)
    assert len(letters) == 1
    headers = {k: v.decode() for k, v in letters[0].headers}
    assert headers["dlq.error"] == "KeyError"
    assert headers["dlq.error_class"] == "unexpected"
    assert headers["dlq.run_id"] == str(bad)
    assert headers["dlq.attempts"] == "3"  # HANDLER_MAX_ATTEMPTS tries, then one on its own
    assert "buggy_apply" in headers["dlq.stacktrace"]
    assert "a_bug_in_the_importer" in headers["dlq.stacktrace"]
    assert len(tries) == 3  # bounded: two tries of the batch, then the message alone

    run = await eventually(lambda: _run(pool, bad), until=lambda r: r is not None and r["state"] == "failed")
    assert run is not None
    assert "KeyError" in run["reason"]
    await eventually(lambda: _run(pool, good), until=lambda r: r is not None and r["state"] == "succeeded")
    assert await _members(pool) == 10
    assert await open_runs(pool) == 0

    async def failed_runs() -> float | None:  # counted just after the run's end commits
        return app.metrics.registry.get_sample_value("ab_runs_total", {"direction": "import", "state": "failed"})

    await eventually(failed_runs, until=lambda n: n == 1, timeout=10)


async def test_a_statement_over_db_command_timeout_fails_its_run_naming_the_setting(
    start_reconcile: Callable[..., Awaitable[ReconcileApp]], campaign: Campaign, kafka_bootstrap: str
) -> None:
    pool = campaign.pool
    await inject(pool, "PERFORM pg_sleep(3)")
    app = await start_reconcile(db_command_timeout_s=1.0)
    run_id = uuid.uuid4()
    await _send(app, _delta_run(run_id, [ecid_of(i) for i in range(1, 11)]))

    run = await eventually(
        lambda: _run(pool, run_id), until=lambda r: r is not None and r["state"] == "failed", timeout=60
    )
    assert run is not None
    assert "DB_COMMAND_TIMEOUT_S" in run["reason"]
    letters = await read_topic(kafka_bootstrap, dlq_name(app.topic(AUDIENCE_MEMBERSHIP)), expect=1, timeout=30)
    assert [dict(letter.headers)["dlq.error_class"] for letter in letters] == [b"statement_timeout"]
    assert await _members(pool) == 0
    assert await open_runs(pool) == 0


async def test_a_timeout_inside_an_asyncpg_statement_is_a_statement_timeout(campaign: Campaign) -> None:
    async with db.acquire(campaign.pool) as conn:
        with pytest.raises(TimeoutError) as raised:
            await conn.execute("SELECT pg_sleep(2)", timeout=0.2)
    assert classify(raised.value) is FailureKind.STATEMENT_TIMEOUT


async def test_a_pool_with_no_free_connection_is_a_dependency_failure(campaign: Campaign) -> None:
    pool = campaign.pool  # max_size=4
    async with db.acquire(pool), db.acquire(pool), db.acquire(pool), db.acquire(pool):
        with pytest.raises(db.PoolExhausted) as raised:
            async with db.acquire(pool, 0.2):
                pass
    assert classify(raised.value) is FailureKind.DEPENDENCY
    assert "DB_ACQUIRE_TIMEOUT_S" in str(raised.value)


async def test_a_full_import_whose_batches_stop_arriving_ends_failed_and_its_staging_goes(
    start_reconcile: Callable[..., Awaitable[ReconcileApp]], campaign: Campaign
) -> None:
    pool = campaign.pool
    # Long enough to see the staged IDs before the stall ends the run, even on a loaded machine.
    app = await start_reconcile(import_run_stall_s=5.0)
    run_id = uuid.uuid4()
    # A 3-batch snapshot whose last batch never comes (lost upstream).
    snapshot = _delta_run(run_id, [ecid_of(i) for i in range(1, 31)], size=10, mode="full")
    await _send(app, snapshot[:2])

    async def staged() -> int:
        count: int = await pool.fetchval("SELECT count(*) FROM import_stage_id WHERE run_id = $1", run_id)
        return count

    await eventually(staged, until=lambda n: n == 20, timeout=30)
    run = await eventually(
        lambda: _run(pool, run_id), until=lambda r: r is not None and r["state"] == "failed", timeout=30
    )
    assert run is not None
    assert "IMPORT_RUN_STALL_S" in run["reason"]
    assert await staged() == 0
    assert await open_runs(pool) == 0
    assert await _members(pool) == 0  # a partial snapshot changes nothing

    async def failed_runs() -> float | None:  # counted just after the run's end commits
        return app.metrics.registry.get_sample_value("ab_runs_total", {"direction": "import", "state": "failed"})

    await eventually(failed_runs, until=lambda n: n == 1, timeout=10)


async def test_a_service_pool_bounds_its_own_queries_waiting_for_a_connection(database_url: str) -> None:
    """pool.fetch() and friends take a connection too: a service's pool (db.create_pool) bounds those waits."""
    settings = DatabaseSettings(
        database_url=SecretStr(database_url), db_pool_min_size=1, db_pool_max_size=1, db_acquire_timeout_s=0.2
    )
    pool = await db.create_pool(settings, application_name="test")
    try:
        async with db.acquire(pool):
            with pytest.raises(TimeoutError) as raised:
                await pool.fetchval("SELECT 1")
        assert classify(raised.value) is FailureKind.DEPENDENCY
        assert await pool.fetchval("SELECT 1") == 1
    finally:
        await pool.close()
