"""Postgres failing in ways that are not crashes, through the running services (ingest and reconcile as
subprocesses, the real broker, a fresh database, ecsim): a trigger installed by the test makes every insert into
``list_member`` fail with a chosen SQLSTATE, or last past DB_COMMAND_TIMEOUT_S, until the test drops it.

* disk full (53100) for a while: the delta import waits (``/readyz`` says so), then ends exact once the disk
  recovers; nothing is dead-lettered, no run is left open (the issue's silent loss of 4,800 members);
* a statement over DB_COMMAND_TIMEOUT_S: retried HANDLER_MAX_ATTEMPTS times, then dead-lettered and the run
  ends ``failed`` with a reason naming the setting.
"""

from __future__ import annotations

import asyncpg
import orjson
import pytest

from tests.e2e.test_import_flow import SEG_VISITORS, ImportStack, Row, stack  # noqa: F401
from tests.fixtures.bridge_db import ecid_of
from tests.fixtures.ecsim import ecsim, ecsim_server  # noqa: F401
from tests.fixtures.pg_faults import heal, inject, open_runs, seed_recipients, topic_size
from tests.fixtures.stack import start_service  # noqa: F401
from tests.helpers import eventually

pytestmark = pytest.mark.e2e

MEMBERS = 3000
AUDIENCE = "visitors-5001"


async def _restart_reconcile(stack: ImportStack, **env: str) -> None:  # noqa: F811
    await stack.reconcile.stop()
    stack.reconcile = await stack.start_service(
        "reconcile", env={**stack.env, "RETRY_BACKOFF_MAX_S": "0.5", "HANDLER_MAX_ATTEMPTS": "2", **env}
    )


def _retries(stack: ImportStack, failure: str) -> int:  # noqa: F811
    return sum(
        1
        for line in stack.reconcile.log_lines()
        if line.get("event") == "batch_retry" and line.get("failure") == failure
    )


async def test_disk_full_is_waited_out_and_the_delta_import_ends_exact(
    stack: ImportStack,  # noqa: F811
    kafka_bootstrap: str,
) -> None:
    pool = stack.campaign.pool
    await seed_recipients(pool, stack.campaign.recipients + 1, MEMBERS)
    await _restart_reconcile(stack)
    await inject(pool, "RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = '53100'")
    rows: list[Row] = [(ecid_of(i), [SEG_VISITORS], []) for i in range(1, MEMBERS + 1)]
    await stack.deliver("iter", rows)

    # Retried well past HANDLER_MAX_ATTEMPTS, never given up; /readyz says what reconcile waits for.
    async def dependency_retries() -> int:
        return _retries(stack, "dependency")

    await eventually(dependency_retries, until=lambda n: n >= 6, timeout=60)
    status, body = await stack.reconcile.get("/readyz")
    assert status == 503
    assert orjson.loads(body)["checks"]["dependencies"] is False
    assert await stack.members(AUDIENCE) == set()
    await heal(pool)

    await eventually(lambda: stack.members(AUDIENCE), until=lambda m: len(m) == MEMBERS, timeout=90)
    runs = await eventually(
        lambda: stack.runs(AUDIENCE), until=lambda rs: bool(rs) and all(r["state"] == "succeeded" for r in rs)
    )
    assert '"added": 3000' in runs[-1]["counts"]
    assert await open_runs(pool) == 0
    assert await topic_size(kafka_bootstrap, f"{stack.env['TOPIC_PREFIX']}audience-membership.dlq") == 0
    await stack.reconcile.wait_ready()


async def test_a_statement_over_db_command_timeout_fails_its_run_naming_the_setting(
    stack: ImportStack,  # noqa: F811
    kafka_bootstrap: str,
) -> None:
    pool = stack.campaign.pool
    await _restart_reconcile(stack, DB_COMMAND_TIMEOUT_S="1")
    await inject(pool, "PERFORM pg_sleep(3)")
    await stack.deliver("iter", [(ecid_of(i), [SEG_VISITORS], []) for i in range(1, 21)])

    # The segment feeds two lists: a run each, each batch on its own audience's partition.
    async def runs() -> list[asyncpg.Record]:
        return await pool.fetch("SELECT audience_id, state, reason FROM run WHERE direction = 'import'")

    ended = await eventually(
        runs, until=lambda rs: len(rs) == 2 and all(r["state"] == "failed" for r in rs), timeout=90
    )
    assert all("DB_COMMAND_TIMEOUT_S" in r["reason"] for r in ended)
    assert _retries(stack, "statement_timeout") == 2 * 2  # HANDLER_MAX_ATTEMPTS per batch, then given up
    # The runs end first, then the letters are sent.
    dlq = f"{stack.env['TOPIC_PREFIX']}audience-membership.dlq"
    await eventually(lambda: topic_size(kafka_bootstrap, dlq), until=lambda n: n == 2)
    assert await open_runs(pool) == 0
    await heal(pool)
