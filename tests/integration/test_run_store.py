"""The run table's one writer (shared/runs/store.py) against real Postgres: every move guarded by the lifecycle."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from shared.runs import store
from shared.runs.states import IllegalTransition
from tests.fixtures.bridge_db import Campaign

pytestmark = pytest.mark.integration


def _import_run(run_id: uuid.UUID, audience_id: str = "seg-store") -> store.NewRun:
    return store.NewRun(run_id=run_id, direction="import", audience_id=audience_id, mode="delta", id_type="ecid")


def _export_run(request_id: uuid.UUID, state: Any = "progress", audience_id: str = "ab-store") -> store.NewRun:
    return store.NewRun(
        run_id=uuid.uuid4(),
        direction="export",
        audience_id=audience_id,
        mode="append",
        state=state,
        request_id=request_id,
        dpid=1001,
        counts={"received": 3},
    )


async def _row(campaign: Campaign, run_id: uuid.UUID) -> dict[str, Any]:
    row = await campaign.pool.fetchrow("SELECT * FROM run WHERE run_id = $1", run_id)
    assert row is not None
    values = dict(row)
    values["counts"] = orjson.loads(values["counts"])
    return values


async def test_a_run_opens_progresses_and_succeeds_then_moves_no_more(campaign: Campaign) -> None:
    run_id = uuid.uuid4()
    async with campaign.pool.acquire() as conn:
        assert await store.open_run(conn, _import_run(run_id))
        assert not await store.open_run(conn, _import_run(run_id))  # a redelivered first batch: nothing new
        assert (await _row(campaign, run_id))["state"] == "started"

        first = await store.record_batch(conn, run_id, {"received": 4, "matched": 3}, seq=0, last=False)
        assert (first.state, first.batches_applied, first.last_seq, first.complete) == ("progress", 1, None, False)
        second = await store.record_batch(conn, run_id, {"received": 6, "matched": 5, "invalid": 2}, seq=1, last=True)
        assert second.counts == {"received": 10, "matched": 8, "invalid": 2}
        assert (second.batches_applied, second.last_seq, second.complete, second.ended) == (2, 1, True, False)

        done = await store.move(conn, run_id, "succeeded", counts={"added": 8})
        assert (done.state, done.direction, done.audience_id, done.reason) == ("succeeded", "import", "seg-store", None)
        assert done.counts == {"received": 10, "matched": 8, "invalid": 2, "added": 8}
        assert done.match_rate == {"ecid": 1.0}  # 8 matched of 8 valid
        assert done == await store.load(conn, run_id)
    ended = await _row(campaign, run_id)
    assert ended["finished_at"] is not None
    assert orjson.loads(ended["match_rate"]) == {"ecid": 1.0}

    async with campaign.pool.acquire() as conn:
        with pytest.raises(IllegalTransition) as refused:
            await store.move(conn, run_id, "progress", counts={"received": 99})
    assert refused.value.context["current"] == "succeeded"
    assert refused.value.context["target"] == "progress"
    assert await _row(campaign, run_id) == ended  # state, counts, updated_at: nothing changed


async def test_a_released_run_succeeds_without_its_reason_and_names_who_released_it(campaign: Campaign) -> None:
    run_id = uuid.uuid4()
    async with campaign.pool.acquire() as conn:
        await store.open_run(conn, _import_run(run_id))
        await store.record_batch(conn, run_id, {"received": 5, "matched": 1}, seq=0, last=True)
        with pytest.raises(ValueError, match="needs its reason"):
            await store.move(conn, run_id, "blocked")
        held = await store.move(conn, run_id, "blocked", reason="held back", counts={"unmatched": 4})
        assert (held.state, held.reason) == ("blocked", "held back")
        assert (await _row(campaign, run_id))["released_by"] is None

        locked = await store.lock(conn, run_id, "import")
        assert locked["state"] == "blocked"
        released = await store.move(conn, run_id, "succeeded", released_by="ops", counts={"added": 1, "removed": 7})
    assert (released.state, released.reason) == ("succeeded", None)
    row = await _row(campaign, run_id)
    assert (row["state"], row["reason"], row["released_by"]) == ("succeeded", None, "ops")
    assert row["counts"] == {"received": 5, "matched": 1, "unmatched": 4, "added": 1, "removed": 7}


class _Counted:
    """A connection that counts the statements sent through it."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.statements = 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._conn, name)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.statements += 1
            return await method(*args, **kwargs)

        return counted


async def test_a_move_writes_the_rate_it_expects_and_corrects_one_that_differs(campaign: Campaign) -> None:
    """The importer hands the rate of the counts it knows (one statement); what the run ended with wins."""
    right, wrong, none = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with campaign.pool.acquire() as conn:
        for run_id in (right, wrong, none):
            await store.open_run(conn, _import_run(run_id))
            await store.record_batch(conn, run_id, {"received": 4, "matched": 1}, seq=0, last=True)
        counted = _Counted(conn)
        done = await store.move(counted, right, "succeeded", expected_rate={"ecid": 0.25})
        assert counted.statements == 1  # the rate written with the move
        corrected = await store.move(counted, wrong, "succeeded", expected_rate={"ecid": 0.5})
        nothing = await store.move(counted, none, "succeeded", expected_rate=None)
        assert counted.statements == 5  # a second statement for each of the others
    assert done.match_rate == corrected.match_rate == nothing.match_rate == {"ecid": 0.25}
    for run_id in (right, wrong, none):
        assert orjson.loads((await _row(campaign, run_id))["match_rate"]) == {"ecid": 0.25}


async def test_an_unknown_run_cannot_move(campaign: Campaign) -> None:
    async with campaign.pool.acquire() as conn:
        with pytest.raises(store.UnknownRun):
            await store.move(conn, uuid.uuid4(), "succeeded")
        with pytest.raises(store.UnknownRun):
            await store.record_batch(conn, uuid.uuid4(), {"received": 1}, seq=0, last=True)
        with pytest.raises(store.UnknownRun):
            await store.lock(conn, uuid.uuid4(), "import")
        assert await store.load(conn, uuid.uuid4()) is None
    assert await campaign.pool.fetchval("SELECT count(*) FROM run") == 0


async def test_fail_live_attempts_fails_only_the_live_runs_of_that_request(campaign: Campaign) -> None:
    request, other_request = uuid.uuid4(), uuid.uuid4()
    live = [_export_run(request, "progress"), _export_run(request, "started")]
    finished = _export_run(request, "progress")
    others = _export_run(other_request, "progress", audience_id="ab-other")
    async with campaign.pool.acquire() as conn:
        for run in [*live, finished, others]:
            assert await store.open_run(conn, run)
        await store.move(conn, finished.run_id, "succeeded")
        before = {r.run_id: await _row(campaign, r.run_id) for r in (finished, others)}

        failed = await store.fail_live_attempts(conn, request, "superseded")
        assert sorted(failed) == sorted(r.run_id for r in live)
        for run in live:
            row = await _row(campaign, run.run_id)
            assert (row["state"], row["reason"]) == ("failed", "superseded")
            assert row["finished_at"] is not None
        assert {r.run_id: await _row(campaign, r.run_id) for r in (finished, others)} == before
        assert await store.fail_live_attempts(conn, request, "again") == []

        # The other request's run is still live for its audience; the failed ones are not.
        assert await store.live_export_of(conn, "ab-other", other_than_request=request) == others.run_id
        assert await store.live_export_of(conn, "ab-other", other_than_request=other_request) is None
        assert await store.live_export_of(conn, "ab-store", other_than_request=other_request) is None
