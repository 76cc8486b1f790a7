"""A poll of recipient changes, decoded and staged, leaves nothing for the collector to find: its objects are freed
by reference counting once its batch is done (what a slower collector pace in reconcile would rely on: README,
"twelfth pass" under Performance)."""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Iterator

import orjson
import pytest
from aiokafka import ConsumerRecord

from services.reconcile.recipient_changes import latest_changes, stage_row
from shared.kafka.deliveries import decode_records
from shared.messages import RecipientChange


@pytest.fixture
def collector() -> Iterator[None]:
    try:
        yield
    finally:
        gc.enable()


def _records(n: int) -> list[ConsumerRecord[bytes, bytes]]:
    def value(i: int) -> bytes:
        return orjson.dumps(
            {"schema_version": 1, "recipient_id": i, "op": "upsert" if i % 7 else "delete",
             "email": f"user{i}@example.com", "crm_id": f"CRM-{i}", "opted_out": i % 11 == 0, "position": i}
        )  # fmt: skip

    topic = "recipient-changes"
    return [ConsumerRecord(topic, 0, i, 0, 0, str(i).encode(), value(i), None, 0, 0, []) for i in range(n)]


@pytest.mark.parametrize("shape", ["usual", "through the model"])
def test_a_poll_of_changes_leaves_no_reference_cycles(collector: None, shape: str) -> None:
    records = _records(2_000)
    if shape == "through the model":
        # A value the fast path does not read (changed_at) sends the whole poll through pydantic.
        slow = b'{"recipient_id": 0, "op": "upsert", "changed_at": "2026-12-05T00:00:00Z"}'
        records[0] = dataclasses.replace(records[0], value=slow)
    gc.collect()
    gc.disable()
    deliveries, poison = decode_records(RecipientChange, records)
    rows = [stage_row(change) for change in latest_changes([d.message for d in deliveries])]
    assert len(rows) == 2_000
    assert not poison
    del deliveries, rows
    tracked = len(gc.get_objects())
    found = gc.collect()
    # What the collector freed, counted apart from what it reports: gc.collect() leaves out objects freed
    # through a generator's finalizer (a cycle through a suspended generator's frame).
    freed = tracked - len(gc.get_objects())
    # A cycle a change would be thousands of objects: the collector's slow pace would then hold them for long.
    assert found < 20, f"{found} objects in reference cycles after 2,000 changes"
    assert freed < 20, f"{freed} objects freed by the collector after 2,000 changes"
