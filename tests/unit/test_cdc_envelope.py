"""Debezium's Postgres change events read as recipient changes (shared/formats/cdc.py), and the pure parts of
applying the streams: the newest change per recipient, each click once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.reconcile.recipient_changes import latest_changes
from services.reconcile.visitor_links import distinct_links
from shared.errors import PoisonMessage
from shared.formats.cdc import CdcError, change_fields, is_change_event
from shared.messages import RecipientChange, VisitorLink, decode

ids = st.integers(min_value=0, max_value=2**63 - 1)
lsns = st.integers(min_value=0, max_value=2**63 - 1)
texts = st.none() | st.text(st.characters(blacklist_characters="\x00", codec="utf-8"), max_size=40)
rows = st.fixed_dictionaries(
    {
        "email": texts,
        "crm_id": texts,
        "first_name": texts,
        "last_name": texts,
        "opted_out": st.none() | st.booleans() | st.sampled_from([0, 1]),
    },
    optional={"unrelated_column": st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5)},
)


def envelope(op: str, before: Any, after: Any, source: Any, wrapped: bool) -> bytes:
    payload = {"before": before, "after": after, "op": op, "source": source, "ts_ms": 1, "transaction": None}
    return orjson.dumps({"schema": {"type": "struct", "optional": False}, "payload": payload} if wrapped else payload)


@given(
    recipient_id=ids,
    row=rows,
    lsn=lsns,
    op=st.sampled_from("cur"),
    id_column=st.sampled_from(["id", "recipient_id"]),
    wrapped=st.booleans(),
)
def test_inserts_updates_and_reads_are_upserts_of_the_after_row(
    recipient_id: int, row: dict[str, Any], lsn: int, op: str, id_column: str, wrapped: bool
) -> None:
    after = {id_column: recipient_id, **row}
    change = decode(RecipientChange, envelope(op, None, after, {"lsn": lsn, "ts_ms": 1764579600123}, wrapped))
    assert change.op == "upsert"
    assert change.recipient_id == recipient_id
    assert (change.email, change.crm_id, change.first_name, change.last_name) == (
        row["email"],
        row["crm_id"],
        row["first_name"],
        row["last_name"],
    )
    assert change.opted_out is bool(row["opted_out"])
    assert change.version == lsn
    assert change.changed_at == datetime(2025, 12, 1, 9, 0, 0, 123000, tzinfo=UTC)


@given(recipient_id=ids, lsn=lsns, wrapped=st.booleans())
def test_a_delete_reads_its_key_from_the_before_row(recipient_id: int, lsn: int, wrapped: bool) -> None:
    before = {"id": recipient_id, "email": None, "opted_out": None}
    change = decode(RecipientChange, envelope("d", before, None, {"lsn": lsn}, wrapped))
    assert (change.op, change.recipient_id, change.version) == ("delete", recipient_id, lsn)


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"op": "t", "before": None, "after": None, "source": {"lsn": 1}}, "truncate"),
        ({"op": "m", "before": None, "after": None, "source": {"lsn": 1}}, "message"),
        ({"op": "x", "before": None, "after": {"id": 1}, "source": {"lsn": 1}}, "unknown op"),
        ({"op": "d", "before": None, "after": None, "source": {"lsn": 1}}, "before row"),
        ({"op": "c", "before": None, "after": None, "source": {"lsn": 1}}, "after row"),
        ({"op": "c", "before": None, "after": {"email": "a"}, "source": {"lsn": 1}}, "no recipient id"),
        ({"op": "c", "before": None, "after": {"id": "12a"}, "source": {"lsn": 1}}, "not an integer"),
        ({"op": "c", "before": None, "after": {"id": 1, "opted_out": "yes"}, "source": {"lsn": 1}}, "boolean"),
        ({"op": "c", "before": None, "after": {"id": 1}, "source": {}}, "cannot be ordered"),
        ({"op": "c", "before": None, "after": {"id": 1}}, "no source"),
        ({"op": "c", "before": None, "after": {"id": 1}, "source": {"lsn": -5}}, "lsn"),
        ({"schema": {}, "payload": None}, "tombstone"),
    ],
)
def test_changes_that_cannot_be_applied_say_why(event: dict[str, Any], reason: str) -> None:
    with pytest.raises(CdcError, match=reason):
        change_fields(event)
    with pytest.raises(PoisonMessage) as caught:
        decode(RecipientChange, orjson.dumps(event))
    assert reason in str(caught.value.context.get("problems", ""))


def test_a_source_without_lsn_is_ordered_by_its_time() -> None:
    change = decode(RecipientChange, envelope("c", None, {"id": 1}, {"ts_ms": 1000, "ts_us": 1_000_123}, wrapped=False))
    assert change.version == 1_000_123
    assert decode(RecipientChange, envelope("c", None, {"id": 1}, {"ts_ms": 1000}, wrapped=False)).version == 1_000_000


def test_native_changes_are_not_taken_for_change_events() -> None:
    native = {"recipient_id": 1, "op": "upsert", "position": 3}
    assert not is_change_event(native)
    assert decode(RecipientChange, orjson.dumps(native)).version == 3


def test_a_native_change_needs_its_position_or_time() -> None:
    with pytest.raises(PoisonMessage):
        decode(RecipientChange, orjson.dumps({"recipient_id": 1, "op": "delete"}))
    at = datetime(2026, 1, 1, tzinfo=UTC)
    change = RecipientChange(recipient_id=1, op="delete", changed_at=at)
    assert change.version == int(at.timestamp() * 1_000_000)


def test_text_postgres_cannot_hold_is_refused() -> None:
    with pytest.raises(PoisonMessage):
        decode(RecipientChange, orjson.dumps({"recipient_id": 1, "op": "upsert", "position": 1, "email": "a\x00b"}))


changes = st.lists(
    st.builds(
        lambda r, p, d, e: RecipientChange(
            recipient_id=r, op="delete" if d else "upsert", position=p, email=None if d else e
        ),
        st.integers(0, 5),
        st.integers(0, 20),
        st.booleans(),
        st.text("abc", max_size=3),
    ),
    max_size=40,
)


@given(changes)
def test_latest_changes_keep_the_first_of_the_highest_position_per_recipient(batch: list[RecipientChange]) -> None:
    latest = latest_changes(batch)
    assert [c.recipient_id for c in latest] == sorted({c.recipient_id for c in batch})
    for kept in latest:
        mine = [c for c in batch if c.recipient_id == kept.recipient_id]
        top = max(c.version for c in mine)
        assert kept is next(c for c in mine if c.version == top)


@given(st.lists(st.tuples(st.sampled_from(["1" * 38, "2" * 38]), st.integers(1, 3), st.integers(0, 100))))
def test_each_click_is_kept_once_at_its_first_sighting(clicks: list[tuple[str, int, int]]) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    links = [VisitorLink(ecid=e, recipient_id=r, seen_at=base + timedelta(seconds=s)) for e, r, s in clicks]
    out = distinct_links(links)
    assert len(out) == len({(e, r) for e, r, _ in clicks})
    for ecid, recipient_id, seen in out:
        assert seen == base + timedelta(seconds=min(s for e, r, s in clicks if (e, r) == (ecid, recipient_id)))


def test_tombstones_are_passed_over_on_recipient_changes_only() -> None:
    from aiokafka import ConsumerRecord

    from shared.kafka.deliveries import decode_records
    from shared.messages import AudienceMembership

    def record(offset: int, value: bytes | None) -> ConsumerRecord[bytes, bytes]:
        return ConsumerRecord("t", 0, offset, 0, 0, b"k", value, None, 0, len(value or b""), [])

    change = orjson.dumps({"recipient_id": 1, "op": "delete", "position": 2})
    good, poison = decode_records(RecipientChange, [record(0, None), record(1, change)])
    assert [d.offset for d in good] == [1]
    assert poison == []
    good, poison = decode_records(AudienceMembership, [record(0, None)])
    assert good == []
    assert [str(e).startswith("message has no value") for _, e in poison] == [True]
