"""The bad-input corpus through the real import side: ecsim, ingest and reconcile as processes.

Every outbound batch, file name, segment event and membership batch of ``tests/corpus`` is fed at once,
with good input alongside; each must end as the clear, counted error its manifest entry names (a rejected
file with its ``.reason.txt``, a ``failed`` status, a dead letter with the reason, counted invalid lines
or IDs) while the services keep running and the good input reaches its lists. Then no log line or status
event may hold a secret. One stack serves the whole module.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import orjson
import pytest
import pytest_asyncio

from services.ingest.run_ids import file_run_id, rejected_batch_run_id
from shared.errors import PermanentError
from shared.formats.lines import collect_parts
from shared.formats.outbound import OutboundFileName, OutboundRow, OutboundWriter
from shared.kafka import OutgoingMessage
from shared.messages import AudienceMembership, SegmentEvent
from tests import corpus
from tests.corpus.harness import (
    headers,
    leaks,
    secrets_to_hunt,
)
from tests.fixtures.bad_input_stack import (
    CONTROL_AUDIENCE,
    CONTROL_SEGMENT,
    EVENTS_AUDIENCE,
    EVENTS_SEGMENT,
    MEMBERSHIP_AUDIENCE,
    Stack,
    bad_input_stack,
)
from tests.fixtures.bridge_db import ecid_of
from tests.fixtures.stack import spawn_service
from tests.helpers import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(infra: None, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with bad_input_stack(tmp_path_factory.mktemp("bad-input-import")) as running:
        yield running


# ------------------------------------------------------------------------------------ outbound files


async def _deliver_control(stack: Stack) -> OutboundFileName:
    """A good batch, written as the platform writes them, alongside the bad ones."""
    batch = OutboundFileName("s3", 7001, 1001, "full", int(time.time() * 1000))
    writer = OutboundWriter(batch)
    rows: list[OutboundRow] = [(ecid_of(r), [CONTROL_SEGMENT], []) for r in range(101, 131)]
    for part in collect_parts(writer.write(rows)):
        await stack.zone.write(part.summary.name, part.data)
    await stack.zone.write(batch.info_name, writer.info().to_json())
    return batch


def _reason_file(stack: Stack, name: str) -> str:
    path = stack.root / "rejected" / (name + ".reason.txt")
    return path.read_text() if path.exists() else ""


async def _batch_problems(stack: Stack, case: corpus.CorpusCase) -> list[str]:
    names = list(case.file_bytes())
    rejected, processed = stack.area("rejected"), stack.area("processed")
    root = case["batch_root"]
    members = await stack.members(case["audience"])
    ledger = await stack.pool.fetchrow("SELECT state, reason FROM processed_file WHERE batch_root = $1", root)
    problems = []
    if case.expect == "rejected":
        for name in names:
            if name not in rejected:
                problems.append(f"{name} not in rejected/")
            elif case.reason not in _reason_file(stack, name):
                problems.append(f"{name}.reason.txt lacks {case.reason!r}: {_reason_file(stack, name)!r}")
        if ledger is None or ledger["state"] != "rejected" or case.reason not in (ledger["reason"] or ""):
            problems.append(f"ledger: {dict(ledger) if ledger else None}")
        failed = [
            s
            for s in stack.tail.statuses(stack.topic("audience-sync-status"))
            if s.run_id == rejected_batch_run_id(root) and s.state == "failed" and case.reason in (s.reason or "")
        ]
        if not failed:
            problems.append("no failed status event with the reason")
        if members:
            problems.append(f"a rejected batch changed the list: {sorted(members)}")
        return problems
    # counted: processed, the good lines imported, the bad ones counted
    problems += [f"{name} not in processed/" for name in names if name not in processed]
    if ledger is None or ledger["state"] != "processed":
        problems.append(f"ledger: {dict(ledger) if ledger else None}")
    if members != set(case["members"]):
        problems.append(f"members {sorted(members)} != {case['members']}")
    run_id = file_run_id(root, case["audience"])
    progress = [
        s
        for s in stack.tail.statuses(stack.topic("audience-sync-status"))
        if s.run_id == run_id and s.service == "ingest" and s.state == "progress"
    ]
    if case.get("invalid_lines") is not None and [s.counts.invalid for s in progress] != [case["invalid_lines"]]:
        problems.append(f"invalid lines on ingest's status: {[s.counts for s in progress]}")
    run = await stack.pool.fetchrow("SELECT state, counts FROM run WHERE run_id = $1", run_id)
    if run is None or run["state"] != "succeeded":
        problems.append(f"run: {dict(run) if run else None}")
    else:
        counts = orjson.loads(run["counts"])
        if case.get("invalid_ids") is not None and counts.get("invalid") != case["invalid_ids"]:
            problems.append(f"invalid ids in the run's counts: {counts} != {case['invalid_ids']}")
        unknown = [i for i, reason in (case.get("unmatched") or {}).items() if reason != "invalid_format"]
        if case.get("unmatched") is not None and counts.get("unmatched") != len(unknown):
            problems.append(f"unmatched ids in the run's counts: {counts} != {len(unknown)}")
    if case.get("unmatched") is not None:
        rows = await stack.pool.fetch("SELECT id, reason FROM unmatched_id WHERE audience_id = $1", case["audience"])
        kept = {r["id"]: r["reason"] for r in rows}
        if kept != case["unmatched"]:
            problems.append(f"unmatched ids {kept} != {case['unmatched']}")
    return problems


async def test_outbound_files_are_rejected_or_counted_and_good_batches_go_through(stack: Stack) -> None:
    batches = corpus.of_kind("outbound-batch")
    names = corpus.of_kind("outbound-name")
    for case in [*batches, *names]:
        for name, data in case.file_bytes().items():
            await stack.zone.write(name, data)
    control = await _deliver_control(stack)

    async def problems() -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for case in batches:
            found[case.id] = await _batch_problems(stack, case)
        for case in names:
            [name] = case.file_bytes()
            if case.reason not in _reason_file(stack, name):
                found[case.id] = [f"no rejected/{name}.reason.txt with {case.reason!r}"]
        if await stack.members(CONTROL_AUDIENCE) != set(range(101, 131)):
            found["control batch"] = ["the good batch alongside did not reach its list"]
        elif control.info_name not in stack.area("processed"):  # filed once its runs are emitted
            found["control batch"] = ["the good batch was not filed in processed/"]
        left = {o.name for o in await stack.zone.list()}
        if left:
            found["inbox"] = [f"files left in the inbox: {sorted(left)}"]
        return {k: v for k, v in found.items() if v}

    # Two batches wait for the parts timeout before they are rejected; everything else is immediate.
    await eventually(problems, until=lambda p: not p, timeout=60, interval=0.5)
    await stack.alive()
    # Counted: every rejected file on the ingest's metric (counted just after its move).
    rejected_files = [n for n in stack.area("rejected") if not n.endswith(".reason.txt")]
    counted = f'ab_dropzone_files_total{{outcome="rejected"}} {float(len(rejected_files))}'

    async def metrics() -> str:
        return (await stack.services["ingest"].get("/metrics"))[1]

    await eventually(metrics, until=lambda page: counted in page, timeout=10)
    # Nothing was read outside the zone: the ../ and absolute FileNames named no file the bridge opened.
    assert not (stack.root.parent / "outside").exists()


# ------------------------------------------------------------------------------------------- Kafka


def _good_events() -> list[SegmentEvent]:
    return [
        SegmentEvent.model_validate(
            {
                "event_id": f"good-{r}",
                "segment_id": str(EVENTS_SEGMENT),
                "id_type": "ecid",
                "data_source": "visitors",
                "id": ecid_of(r),
                "op": "add",
                "occurred_at": "2024-05-01T12:00:00Z",
            }
        )
        for r in range(101, 121)
    ]


def _dlq_problems(stack: Stack, topic: str, cases: list[corpus.CorpusCase]) -> dict[str, str]:
    dead = stack.tail.by_key(stack.topic(topic) + ".dlq")
    problems = {}
    for case in cases:
        record = dead.get(case.key)
        if record is None:
            problems[case.id] = "not dead-lettered"
            continue
        h = headers(record)
        if case.reason not in h.get("dlq.reason", ""):
            problems[case.id] = f"dlq.reason {h.get('dlq.reason')!r} lacks {case.reason!r}"
        elif h.get("dlq.original.topic") != stack.topic(topic):
            problems[case.id] = f"dlq.original.topic is {h.get('dlq.original.topic')}"
        elif case.get("value_omitted"):
            if "dlq.value_omitted" not in h or record.value:
                problems[case.id] = "an oversized dead letter should come without its value"
        elif record.value != (case.value() or b""):
            problems[case.id] = "the dead letter does not carry the original value"
    return problems


async def test_segment_events_are_dead_lettered_with_the_reason_and_good_events_apply(stack: Stack) -> None:
    topic = stack.topic("segment-events")
    cases = corpus.of_kind("segment-event")
    dlq = [c for c in cases if c.expect == "dlq"]
    good = _good_events()
    # A tombstone's value is None, which Kafka takes though OutgoingMessage says bytes.
    bad = [OutgoingMessage(topic=topic, value=cast(bytes, c.value()), key=c.key) for c in dlq]
    # Good events before, between and after the bad ones.
    await stack.producer.send([OutgoingMessage.of(topic, e) for e in good[:10]])
    for message in bad:
        await stack.producer.send([message])
    await stack.producer.send([OutgoingMessage.of(topic, e) for e in good[10:]])
    for case in (c for c in cases if c.expect == "refused"):
        with pytest.raises(PermanentError, match=case.reason):
            await stack.producer.send([OutgoingMessage(topic=topic, value=case.value() or b"", key=case.key)])

    async def problems() -> dict[str, str]:
        return _dlq_problems(stack, "segment-events", dlq)

    await eventually(problems, until=lambda p: not p)
    await eventually(lambda: stack.members(EVENTS_AUDIENCE), until=lambda m: m == set(range(101, 121)))
    await stack.alive()


def _membership(run_id: uuid.UUID, adds: list[str]) -> AudienceMembership:
    return AudienceMembership.model_validate(
        {
            "run_id": run_id,
            "seq": 0,
            "last": True,
            "audience_id": MEMBERSHIP_AUDIENCE,
            "data_source": "visitors",
            "id_type": "ecid",
            "mode": "delta",
            "adds": adds,
            "totals": {"received": len(adds), "batches": 1},
        }
    )


async def test_membership_batches_are_dead_lettered_with_a_failed_run_and_good_ones_apply(stack: Stack) -> None:
    topic = stack.topic("audience-membership")
    cases = corpus.of_kind("membership")
    good = _membership(uuid.uuid4(), [ecid_of(r) for r in range(160, 171)])
    await stack.producer.send([OutgoingMessage(topic=topic, value=c.value() or b"", key=c.key) for c in cases])
    await stack.producer.send([OutgoingMessage.of(topic, good)])

    async def problems() -> dict[str, str]:
        problems = _dlq_problems(stack, "audience-membership", cases)
        statuses = stack.tail.statuses(stack.topic("audience-sync-status"))
        for case in (c for c in cases if c.get("failed_status")):
            run_id = uuid.UUID(case["run_id"])
            if not any(
                s.run_id == run_id and s.state == "failed" and case.reason in (s.reason or "") for s in statuses
            ):
                problems.setdefault(case.id, "no failed status event with the reason")
        return problems

    await eventually(problems, until=lambda p: not p)
    await eventually(lambda: stack.members(MEMBERSHIP_AUDIENCE), until=lambda m: m == set(range(160, 171)))
    await stack.alive()


async def test_a_hostile_catalog_file_stops_reconcile_with_the_reason(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """An operator's broken CATALOG_FILE: reconcile refuses to start (exit 2) and says why, in one log line."""
    logs = tmp_path_factory.mktemp("bad-catalog")
    for case in (corpus.by_id("catalog-deep-nesting"), corpus.by_id("catalog-bad-date")):
        [path] = case.paths()
        env = {**stack.env, "CATALOG_FILE": str(path)}
        service = await spawn_service("reconcile", env=env, log_path=logs / f"{case.id}.log", wait=False)
        assert await asyncio.wait_for(service.process.wait(), 60) == 2
        [line] = [line for line in service.log_lines() if line.get("event") == "invalid_settings"]
        assert case.reason in line["error"]
        assert "Traceback" not in service.log_path.read_text()
    await stack.alive()


# ---------------------------------------------------------------------------------------------- secrets


async def test_no_secret_in_any_log_line_or_status_event(stack: Stack) -> None:
    """Everything the services wrote during this module, and every status event, free of secrets."""
    assert stack.ims.tokens, "the bridge never asked for a token: the hunt below would prove nothing"
    secrets = secrets_to_hunt(stack.client_secret, stack.ims.tokens, stack.env["DATABASE_URL"])
    sources: dict[str, Any] = {
        f"{s.name}'s log": s.log_path.read_text(errors="replace") for s in stack.services.values()
    }
    statuses = stack.tail.records(stack.topic("audience-sync-status"))
    assert statuses
    sources["audience-sync-status"] = "\n".join(r.value.decode("utf-8", "replace") for r in statuses)
    for topic in ("segment-events.dlq", "audience-membership.dlq"):
        sources[topic + " headers"] = "\n".join(str(headers(r)) for r in stack.tail.records(stack.topic(topic)))
    assert leaks(sources, secrets) == []
