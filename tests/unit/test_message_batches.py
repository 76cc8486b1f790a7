"""A poll decoded at once gives exactly what decoding it one message at a time gives: the same messages in the
same order, the same poison records with the same reasons (their dead-letter reasons)."""

from __future__ import annotations

from typing import Any

import orjson
from aiokafka import ConsumerRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import PoisonMessage
from shared.kafka.deliveries import decode_records
from shared.message_batches import decode_all, native_changes
from shared.messages import AudienceMembership, Message, RecipientChange, SegmentEvent, decode


def _record(offset: int, value: bytes | None) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("t", 0, offset, 0, 0, b"k", value, None, 0, len(value or b""), [])


def _one_by_one(model: type[Message], values: list[bytes | None]) -> tuple[list[Any], list[tuple[int, str]]]:
    """The reference: every value through shared.messages.decode, tombstones passed over where the model does."""
    good, poison = [], []
    for offset, value in enumerate(values):
        if value is None and model.skips_tombstones:
            continue
        try:
            good.append((offset, decode(model, value)))
        except PoisonMessage as exc:
            poison.append((offset, str(exc)))
    return good, poison


_CHANGE = {"recipient_id": 1, "op": "upsert", "email": "a@example.com", "position": 3}
_DEBEZIUM = {
    "op": "u",
    "before": None,
    "after": {"id": 7, "email": "d@example.com", "opted_out": 1},
    "source": {"lsn": 123, "ts_ms": 1700000000000},
}
CHANGE_VALUES = st.one_of(
    st.builds(
        lambda i, p, extra: orjson.dumps({**_CHANGE, "recipient_id": i, "position": p, **extra}),
        st.integers(-2, 2**63),
        st.integers(-1, 10),
        st.sampled_from(
            [
                {},
                {"opted_out": True},
                {"op": "delete"},
                {"schema_version": 2},
                {"unknown": 1},
                {"email": "x\x00y"},
                {"position": None},
                {"op": "merge"},
            ]
        ),
    ),
    st.just(orjson.dumps(_DEBEZIUM)),
    st.just(orjson.dumps({**_DEBEZIUM, "op": "t"})),
    st.sampled_from([b"not json", b"[1, 2]", b"null", b"", b'{"recipient_id": 1, "op": "upsert", "email": "a']),
    st.just(b'b", "position": 1}'),  # with the one before, joined by a comma, it would read as a valid change
    st.none(),
    st.binary(max_size=20),
)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(CHANGE_VALUES, max_size=12))
def test_a_poll_decodes_as_its_messages_one_by_one(values: list[bytes | None]) -> None:
    good, poison = decode_records(RecipientChange, [_record(i, v) for i, v in enumerate(values)])
    want_good, want_poison = _one_by_one(RecipientChange, values)
    assert [(d.offset, d.message) for d in good] == want_good
    assert [(r.offset, str(e)) for r, e in poison] == want_poison


def test_the_other_topics_decode_the_same_way() -> None:
    run = "00000000-0000-0000-0000-000000000001"
    membership = {"run_id": run, "seq": 0, "last": True, "audience_id": "a", "data_source": "visitors",
                  "id_type": "ecid", "mode": "full", "adds": ["1" * 38]}  # fmt: skip
    event = {"segment_id": 5, "ecid": "2" * 38, "realized": True, "observed_at": "2026-01-01T00:00:00Z"}
    for model, valid in ((AudienceMembership, membership), (SegmentEvent, event)):
        values: list[bytes | None] = [
            orjson.dumps(valid),
            None,
            orjson.dumps({**valid, "extra": 1}),
            orjson.dumps(valid),
        ]
        for batch in (values, [values[0], values[3]]):
            good, poison = decode_records(model, [_record(i, v) for i, v in enumerate(batch)])
            want_good, want_poison = _one_by_one(model, batch)
            assert [(d.offset, d.message) for d in good] == want_good
            assert [(r.offset, str(e)) for r, e in poison] == want_poison


def test_the_batch_path_is_taken_only_when_every_value_is_a_message() -> None:
    values: list[bytes | None] = [orjson.dumps({**_CHANGE, "recipient_id": i}) for i in range(5)]
    decoded = decode_all(RecipientChange, values)
    assert decoded is not None
    assert [m.recipient_id for m in decoded] == list(range(5))
    assert decode_all(RecipientChange, [*values, b"{"]) is None
    assert decode_all(RecipientChange, [*values, None]) is None
    assert decode_all(RecipientChange, [*values, orjson.dumps({**_CHANGE, "schema_version": 2})]) is None


_ANY_JSON = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.floats(allow_nan=False), st.text(max_size=5)
)
_FIELD_VALUES = {
    "schema_version": st.one_of(st.just(1), st.just(True), st.just(1.0), _ANY_JSON),
    "recipient_id": st.one_of(st.integers(-1, 2**63), st.sampled_from([0, 2**63 - 1, True, "5", 5.0]), _ANY_JSON),
    "op": st.one_of(st.sampled_from(["upsert", "delete", "Upsert", "merge"]), _ANY_JSON),
    "email": st.one_of(st.none(), st.text(max_size=8), st.just("a\x00b"), st.just("x" * 1000), st.just("é" * 1001)),
    "crm_id": st.one_of(st.none(), st.text(max_size=8), st.integers(0, 9)),
    "first_name": st.one_of(st.none(), st.text(max_size=8)),
    "last_name": st.one_of(st.none(), st.text(max_size=8), st.booleans()),
    "opted_out": st.one_of(st.booleans(), st.sampled_from([0, 1, "true", None])),
    "position": st.one_of(st.integers(-1, 2**63), st.sampled_from([0, 2**63 - 1, None, False, "7", 7.0])),
    "changed_at": st.one_of(st.none(), st.just("2026-01-02T03:04:05Z"), st.integers(0, 10**10)),
    "unknown": st.integers(),
}
_CHANGE_DICTS = st.fixed_dictionaries(
    {"recipient_id": _FIELD_VALUES["recipient_id"], "op": _FIELD_VALUES["op"], "position": _FIELD_VALUES["position"]},
    optional={k: v for k, v in _FIELD_VALUES.items() if k not in ("recipient_id", "op", "position")},
)


# Changes of the usual shape, some at the edges of the constraints: most take the fast path.
_USUAL_DICTS = st.fixed_dictionaries(
    {"recipient_id": st.integers(0, 2**63 - 1), "op": st.sampled_from(["upsert", "delete"]),
     "position": st.integers(0, 2**63 - 1)},
    optional={"schema_version": st.just(1), "email": st.none() | st.text(max_size=1000), "crm_id": st.text(max_size=4),
              "first_name": st.none() | st.text(max_size=3), "last_name": st.text(max_size=3),
              "opted_out": st.booleans(), "changed_at": st.none()},
)  # fmt: skip


def _fast(value: bytes) -> RecipientChange | None:
    changes = native_changes([value])
    return None if changes is None else changes[0]


def _same_as_pydantic(fast: RecipientChange, value: bytes) -> None:
    validated = RecipientChange.model_validate_json(value)  # accepted by the fast path: pydantic accepts it too
    assert fast == validated
    assert fast.model_dump() == validated.model_dump()
    assert fast.model_fields_set == validated.model_fields_set
    assert fast.model_dump_json() == validated.model_dump_json()
    assert (fast.version, fast.key(), hash(fast)) == (validated.version, validated.key(), hash(validated))
    assert fast == RecipientChange.model_validate(orjson.loads(value))


@settings(max_examples=2000, deadline=None)
@given(data=_CHANGE_DICTS | _USUAL_DICTS)
def test_a_change_read_without_pydantic_is_the_one_pydantic_reads(data: dict[str, Any]) -> None:
    try:
        value = orjson.dumps(data)
    except orjson.JSONEncodeError:
        return  # an integer JSON cannot carry here
    fast = _fast(value)
    if fast is None:
        return  # the model decides, as for any other shape
    _same_as_pydantic(fast, value)


# JSON texts the fast path must read as the model does, or leave to it: written by hand, not by orjson.
_RAW_CHANGES = [
    b'{"recipient_id":1,"recipient_id":2,"op":"upsert","position":1}',  # a key twice: the last wins
    b' {"recipient\\u005fid":3,"op":"delete","position":1}\n',  # an escaped key, white space around
    b'{"recipient_id":4,"op":"upsert","position":1,"email":"a\\u0000b"}',  # NUL: the model refuses it
    b'{"recipient_id":5,"op":"upsert","position":1,"email":"a\\\\u0000b"}',  # a backslash, then "u0000"
    b'{"recipient_id":6,"op":"upsert","position":1,"email":"\\ud83d\\ude00"}',  # a surrogate pair: one character
    b'{"recipient_id":7,"op":"upsert","position":1,"email":"\\ud83d"}',  # a lone surrogate: not JSON
    b'{"recipient_id":8,"op":"upsert","position":1,"email":"%s"}' % ("\U0001f600" * 1000).encode(),
    b'{"recipient_id":9,"op":"upsert","position":1,"email":"%s"}' % ("\U0001f600" * 1001).encode(),
    b'{"recipient_id":10,"op":"upsert","position":1,"opted_out":true,"changed_at":null,"schema_version":1}',
    b'{"recipient_id":11,"op":"upsert","position":1e0}',
    b'{"recipient_id":12,"op":"upsert","position":9223372036854775808}',
    b'{"recipient_id":13,"op":"upsert","position":1}{}',
]


def test_hand_written_json_is_read_as_the_model_reads_it() -> None:
    fast = {value: _fast(value) for value in _RAW_CHANGES}
    for value, change in fast.items():
        if change is not None:
            _same_as_pydantic(change, value)
    taken = [orjson.loads(v)["recipient_id"] if c is not None else None for v, c in fast.items()]
    # Read fast: 1 (as 2), 3, 6, 8, 10; the rest (NUL, a lone surrogate, a string too long, a float, a position
    # out of range, trailing data) are the model's to refuse or read, and so is 5 (an escaped backslash before
    # "u0000" looks like NUL to the fast path: the model reads it, as it is).
    assert [t for t in taken if t is not None] == [2, 3, 6, 8, 10]
    assert decode_all(RecipientChange, [_RAW_CHANGES[3]]) == [RecipientChange.model_validate_json(_RAW_CHANGES[3])]
    assert decode_all(RecipientChange, _RAW_CHANGES[:2]) == [
        RecipientChange(recipient_id=2, op="upsert", position=1),
        RecipientChange(recipient_id=3, op="delete", position=1),
    ]


def test_the_usual_change_takes_the_fast_path() -> None:
    usual = {"schema_version": 1, "recipient_id": 7, "op": "upsert", "email": "p7.g2@example.com",
             "crm_id": "CRM7", "opted_out": False, "position": 2}  # fmt: skip
    assert _fast(orjson.dumps(usual)) == RecipientChange.model_validate(usual)
    assert _fast(orjson.dumps({"recipient_id": 7, "op": "delete", "position": 3})) is not None
    for unusual in ({**usual, "position": None, "changed_at": "2026-01-01T00:00:00Z"}, {**usual, "recipient_id": "7"},
                    {**usual, "opted_out": 1}, {**usual, "email": "a\x00"}, {**_DEBEZIUM}):  # fmt: skip
        assert _fast(orjson.dumps(unusual)) is None
    # One value not of the usual shape sends the whole poll the model's way.
    assert native_changes([orjson.dumps(usual), orjson.dumps({**usual, "opted_out": 1})]) is None
