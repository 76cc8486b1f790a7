"""Membership follows every ID, end to end: the platform's outbound files in the drop zone -> ingest -> Kafka ->
reconcile -> a campaign list, with the services running as processes (the stack of test_import_flow.py).

A recipient with two ECIDs in a segment stays on the list when an ``iter`` file removes one of them, and
leaves it when a later one removes the other.
"""

from __future__ import annotations

import asyncpg
import orjson
import pytest

from tests.e2e.test_import_flow import SEG_VISITORS, ImportStack, Row, stack  # noqa: F401
from tests.fixtures.bridge_db import ecid_of
from tests.fixtures.ecsim import ecsim, ecsim_server  # noqa: F401
from tests.fixtures.stack import start_service  # noqa: F401
from tests.helpers import eventually

pytestmark = pytest.mark.e2e

AUDIENCE = "visitors-5001"


async def _run_done(stack: ImportStack, runs: int) -> asyncpg.Record:  # noqa: F811
    """The audience's ``runs``-th run, once it has ended."""

    def ended(rows: list[asyncpg.Record]) -> bool:
        return len(rows) == runs and rows[-1]["state"] in ("succeeded", "failed", "blocked")

    rows = await eventually(lambda: stack.runs(AUDIENCE), until=ended, timeout=60)
    return rows[-1]


async def test_an_iter_file_removing_one_of_two_ecids_keeps_the_recipient(stack: ImportStack) -> None:  # noqa: F811
    # Recipient 2 holds two ECIDs (tests/fixtures/bridge_db.py), both in the segment.
    full: list[Row] = [(ecid, [SEG_VISITORS], []) for ecid in [*map(ecid_of, range(1, 11)), ecid_of(2, 1)]]
    await stack.deliver("full", full)
    assert (await _run_done(stack, 1))["state"] == "succeeded"
    assert await stack.members(AUDIENCE) == set(range(1, 11))

    await stack.deliver("iter", [(ecid_of(2), [], [SEG_VISITORS])])
    partial = await _run_done(stack, 2)
    assert (partial["mode"], partial["state"]) == ("delta", "succeeded")
    counts = orjson.loads(partial["counts"])
    assert (counts["removed"], counts["kept_by_other_ids"]) == (0, 1)
    assert await stack.members(AUDIENCE) == set(range(1, 11))

    await stack.deliver("iter", [(ecid_of(2, 1), [], [SEG_VISITORS])])
    gone = await _run_done(stack, 3)
    assert gone["state"] == "succeeded"
    assert (orjson.loads(gone["counts"])["removed"], orjson.loads(gone["counts"])["kept_by_other_ids"]) == (1, 0)
    assert await stack.members(AUDIENCE) == set(range(1, 11)) - {2}
    assert stack.area("rejected") == set()
