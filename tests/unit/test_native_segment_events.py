"""A segment event read without pydantic is exactly what the model validates from it, and anything the native path
does not take goes through the model: a poll of segment events decodes, and dead-letters, as one by one."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiokafka import ConsumerRecord
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.errors import PoisonMessage
from shared.kafka.deliveries import decode_records
from shared.message_batches import decode_all
from shared.messages import SegmentEvent, decode
from shared.native_segment_events import native_event

_EVENT: dict[str, Any] = {
    "event_id": "e-1",
    "segment_id": "5001",
    "id_type": "ecid",
    "data_source": "visitors",
    "id": "12345678901234567890123456789012345678",
    "op": "add",
    "occurred_at": "2026-12-03T13:15:02.123456Z",
}

# Values close to each constraint's edge, on both sides, and of the wrong types.
_TEXT = st.one_of(
    st.sampled_from(["a", "x" * 256, "x" * 257, "", "a b", "a,b", "a\tb", "a\x1cb", "é", "a\x00", "~!+-.", " lead"]),
    st.text(max_size=8),
    st.integers(0, 10),
    st.none(),
)
_TIMES = st.one_of(
    st.sampled_from(
        [
            "2026-12-03T13:15:02Z",
            "2026-12-03T13:15:02",
            "2026-12-03T13:15:02.1+05:30",
            "2026-12-03T13:15:02.1234567Z",
            "2026-12-03 13:15:02Z",
            "2026-02-30T13:15:02Z",
            "2026-12-03T25:15:02Z",
            "2026-12-03T13:15:60Z",
            "2026-12-03T13:15:02+0530",
            "2026-12-03",
            "yesterday",
        ]
    ),
    st.datetimes().map(lambda d: d.isoformat()),
    st.integers(0, 2_000_000_000),
)
_CHANGES = st.fixed_dictionaries(
    {},
    optional={
        "event_id": _TEXT,
        "segment_id": _TEXT,
        "data_source": st.one_of(_TEXT, st.just("v" * 200), st.just("v" * 201), st.just("a b\x7f")),
        "id": _TEXT,
        "id_type": st.sampled_from(["ecid", "declared", "ECID", 1]),
        "op": st.sampled_from(["add", "remove", "delete", None]),
        "occurred_at": _TIMES,
        "schema_version": st.sampled_from([1, 2, True, 1.0, "1"]),
        "unknown": st.just(1),
        "event_id_missing": st.just(None),
    },
).map(lambda extra: {k: v for k, v in {**_EVENT, **extra}.items() if k != "event_id_missing" or v is not None})


def _validated(data: dict[str, Any]) -> SegmentEvent | None:
    try:
        return SegmentEvent.model_validate(data)
    except ValidationError:
        return None


@settings(max_examples=500, deadline=None)
@given(data=_CHANGES)
def test_native_is_what_the_model_validates(data: dict[str, Any]) -> None:
    native = native_event(data)
    if native is None:
        return  # the model decides (checked by the poll test below)
    model = _validated(data)
    assert model is not None, f"native accepted what the model refuses: {data}"
    assert native == model
    assert native.model_dump() == model.model_dump()
    assert native.model_fields_set == model.model_fields_set
    assert native.occurred_at.utcoffset() == model.occurred_at.utcoffset()


def test_the_usual_shapes_take_the_native_path() -> None:
    assert native_event(_EVENT) is not None
    assert native_event({**_EVENT, "schema_version": 1, "occurred_at": "2026-12-03T13:15:02+02:00"}) is not None
    assert native_event({**_EVENT, "id_type": "declared", "op": "remove", "occurred_at": "2026-12-03T13:15:02"})
    # A benchmark's (and upstream's) JSON as pydantic writes it.
    dumped = SegmentEvent.model_validate(_EVENT).model_dump(mode="json")
    assert native_event(dumped) == SegmentEvent.model_validate(_EVENT)


@pytest.mark.parametrize(
    "change",
    [
        {"id": "a b"},
        {"occurred_at": 1700000000},
        {"occurred_at": "2026-02-30T00:00:00Z"},
        {"data_source": "é"},
        {"schema_version": True},
    ],
)
def test_anything_unusual_is_left_to_the_model(change: dict[str, Any]) -> None:
    assert native_event({**_EVENT, **change}) is None


def _record(offset: int, value: bytes | None) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("t", 0, offset, 0, 0, b"k", value, None, 0, len(value or b""), [])


@settings(max_examples=200, deadline=None)
@given(changes=st.lists(st.one_of(_CHANGES.map(orjson.dumps), st.just(b"not json")), max_size=8))
def test_a_poll_of_events_decodes_and_dead_letters_as_one_by_one(changes: list[bytes]) -> None:
    good, poison = decode_records(SegmentEvent, [_record(i, v) for i, v in enumerate(changes)])
    want_good, want_poison = [], []
    for offset, value in enumerate(changes):
        try:
            want_good.append((offset, decode(SegmentEvent, value)))
        except PoisonMessage as exc:
            want_poison.append((offset, str(exc)))
    assert [(d.offset, d.message) for d in good] == want_good
    assert [(r.offset, str(e)) for r, e in poison] == want_poison


def test_a_valid_poll_is_decoded_natively(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path is taken: the model's validation is never called for a poll of usual events."""

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("validated through the model")

    monkeypatch.setattr("shared.message_batches._adapter", refuse)
    values = [orjson.dumps({**_EVENT, "event_id": f"e-{i}"}) for i in range(3)]
    decoded = decode_all(SegmentEvent, values)
    assert decoded is not None
    assert [e.event_id for e in decoded] == ["e-0", "e-1", "e-2"]
