"""A change's staged row (services/reconcile/recipient_changes.py stage_row), read from the model's fields for
speed, is what the model's attributes say: the version orders it, a delete carries only its id."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from hypothesis import given
from hypothesis import strategies as st

from services.reconcile.recipient_changes import stage_row
from shared.message_batches import decode_all
from shared.messages import RecipientChange

texts = st.none() | st.text(st.characters(blacklist_characters="\x00", codec="utf-8"), max_size=20)
changes = st.builds(
    RecipientChange,
    recipient_id=st.integers(0, 2**63 - 1),
    op=st.sampled_from(["upsert", "delete"]),
    email=texts,
    crm_id=texts,
    first_name=texts,
    last_name=texts,
    opted_out=st.booleans(),
    position=st.none() | st.integers(0, 2**63 - 1),
    changed_at=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
)


def expected(change: RecipientChange) -> tuple[object, ...]:
    if change.op == "delete":
        return (change.recipient_id, True, change.version, None, None, None, None, False)
    return (
        change.recipient_id,
        False,
        change.version,
        change.email,
        change.crm_id,
        change.first_name,
        change.last_name,
        change.opted_out,
    )


@given(changes)
def test_the_staged_row_is_the_models_change(change: RecipientChange) -> None:
    assert stage_row(change) == expected(change)


@given(changes)
def test_a_change_read_by_the_fast_path_stages_the_same_row(change: RecipientChange) -> None:
    # The native fast path builds the model without validating: its fields must serve stage_row alike.
    decoded = decode_all(RecipientChange, [orjson.dumps(change.model_dump(mode="json", exclude_none=True))])
    assert decoded is not None
    assert stage_row(decoded[0]) == expected(change)
