"""Debezium's real change events (recorded from the connector: tests/fixtures/debezium/README.md) read as the
bridge's recipient changes, offline: with and without the JSON converter's schema wrapper, in any order."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.reconcile.recipient_changes import latest_changes
from shared.messages import RecipientChange

RECORDED = Path(__file__).parents[1] / "fixtures" / "debezium"
FILES = ["recipient-events-wrapped.jsonl", "recipient-events-envelope.jsonl"]


def _records(name: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (RECORDED / name).read_bytes().splitlines()]


def _payload(value: dict[str, Any]) -> dict[str, Any]:
    inner: dict[str, Any] = value["payload"] if "schema" in value else value
    return inner


@pytest.mark.parametrize("name", FILES)
def test_each_recorded_event_is_the_change_it_records(name: str) -> None:
    records = _records(name)
    changes = [RecipientChange.model_validate(r["value"]) for r in records]
    assert [(c.op, c.recipient_id) for c in changes] == [
        ("upsert", 41),  # the snapshot read
        ("upsert", 42),
        ("upsert", 42),
        ("upsert", 41),
        ("delete", 42),
    ]
    snapshot, inserted, changed, opted_out, _ = changes
    assert (snapshot.email, snapshot.first_name, snapshot.last_name) == ("Zoë.Snapshot@Example.com", "Zoë", "Ünal")
    assert (inserted.email, inserted.crm_id, inserted.opted_out) == ("new@example.com", "CRM42", False)
    assert changed.email == "changed@example.com"
    assert opted_out.opted_out is True
    for record, change in zip(records, changes, strict=True):
        # The position is the change's WAL position; the key, Debezium's primary key, names the same recipient.
        assert change.position == _payload(record["value"])["source"]["lsn"]
        assert _payload(record["key"])["recipient_id"] == change.recipient_id
        assert change.changed_at is not None


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("seed", range(5))
def test_any_order_and_repeats_end_in_the_newest_change(name: str, seed: int) -> None:
    changes = [RecipientChange.model_validate(r["value"]) for r in _records(name)]
    shuffled = changes * 2
    random.Random(seed).shuffle(shuffled)
    newest = {c.recipient_id: c for c in latest_changes(shuffled)}
    assert newest[41].opted_out is True
    assert newest[41].email == "Zoë.Snapshot@Example.com"
    assert newest[42].op == "delete"


def test_the_wrapper_changes_nothing_but_the_bytes() -> None:
    def fields(name: str) -> list[dict[str, Any]]:
        return [
            RecipientChange.model_validate(r["value"]).model_dump(exclude={"position", "changed_at"})
            for r in _records(name)
        ]

    assert fields(FILES[0]) == fields(FILES[1])
