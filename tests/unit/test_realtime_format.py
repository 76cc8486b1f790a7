"""The platform's real-time deliveries and their signatures, as the documentation shows them."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.formats.realtime import (
    MalformedDelivery,
    UserChanges,
    _plain_segment,
    _plain_user,
    _segment,
    _user,
    delivery_body,
    format_date,
    parse_date,
    parse_delivery,
)
from shared.formats.realtime_signature import sign, verify

# The documentation's request sample (real-time-outbound-transfers.md), verbatim: numbers as strings, the
# "AAM_Destination_Id" spelling, its date format, and a 43-digit AAM_UUID (a typo of the documentation).
DOC_SAMPLE = b"""{
"ProcessTime": "Wed Jul 27 16:17:42 UTC 2016",
"User_DPID": "12345",
"Client_ID": "74323",
"AAM_Destination_Id": "423",
"User_count": "2",
"Users": [{
   "AAM_UUID": "19393572368547369350319949416899715727",
   "DataPartner_UUID": "4250948725049857",
   "AAM_Regions": ["9"],
   "Segments": [{
            "Segment_ID": "14356",
            "Status": "1",
            "DateTime": "Wed Jul 27 16:17:22 UTC 2016"
         },
         {
            "Segment_ID": "12176",
            "Status": "0",
            "DateTime": "Wed Jul 27 16:17:22 UTC 2016"
         }
      ]
   },
   {
   "AAM_UUID": "0578240750487542456854736923319946899715232",
   "DataPartner_UUID": "848457757347734",
   "AAM_Regions": ["9"],
   "Segments": [{
            "Segment_ID": "10329",
            "Status": "1",
            "DateTime": "Wed Jul 27 16:17:21 UTC 2016"
         },
         {
            "Segment_ID": "23954",
            "Status": "1",
            "DateTime": "Wed Jul 27 16:17:21 UTC 2016"
        }]
    }]
}"""


def test_the_documentations_signing_example_verifies() -> None:
    # digitally-signed-http-requests.md: HmacSHA1 of "POST message content" with "sample_partner_private_key".
    body, key, expected = b"POST message content", b"sample_partner_private_key", "+wFdR/afZNoVqtGl8/e1KJ4ykPU="
    assert sign(body, key, "sha1") == expected
    assert verify(body, expected, [key], "sha1")


def test_wrong_missing_and_unknown_signatures_are_refused() -> None:
    body, key = b"POST message content", b"sample_partner_private_key"
    good = sign(body, key)
    assert not verify(body + b" ", good, [key])  # the body changed
    assert not verify(body, good, [b"another key"])  # unknown key
    assert not verify(body, "", [key])
    assert not verify(body, "not base64 at all \u00e9", [key])
    assert not verify(body, good, [])  # no key at all accepts nothing


def test_a_rotation_accepts_both_keys_and_each_algorithm_is_its_own() -> None:
    body, old, new = b'{"Users": []}', b"old-key", b"new-key"
    for algorithm in ("sha1", "sha256", "md5"):
        assert verify(body, sign(body, old, algorithm), [old, new], algorithm)
        assert verify(body, sign(body, new, algorithm), [old, new], algorithm)
    assert not verify(body, sign(body, old, "sha256"), [old], "sha1")
    assert len(sign(body, old, "md5")) == 24
    assert len(sign(body, old, "sha256")) == 44


def test_the_documentations_sample_payload_is_read() -> None:
    delivery = parse_delivery(DOC_SAMPLE)
    assert (delivery.user_dpid, delivery.destination_id, delivery.client_id) == (12345, 423, "74323")
    assert delivery.process_time == datetime(2016, 7, 27, 16, 17, 42, tzinfo=UTC)
    first, second = delivery.users
    assert first.aam_uuid == "19393572368547369350319949416899715727"
    assert first.partner_uuid == "4250948725049857"
    assert first.regions == ("9",)
    assert [(s.segment_id, s.active) for s in first.segments] == [("14356", True), ("12176", False)]
    assert first.segments[0].at == datetime(2016, 7, 27, 16, 17, 22, tzinfo=UTC)
    assert second.aam_uuid is not None
    assert len(second.aam_uuid) == 43


def test_numbers_as_numbers_and_the_other_key_spelling() -> None:
    doc = orjson.loads(DOC_SAMPLE)
    doc["AAM_Destination_ID"] = int(doc.pop("AAM_Destination_Id"))
    doc["User_DPID"] = 12345
    doc["Users"][0]["Segments"][0].update({"Segment_ID": 14356, "Status": 1})
    delivery = parse_delivery(orjson.dumps(doc))
    assert (delivery.destination_id, delivery.user_dpid) == (423, 12345)
    assert delivery.users[0].segments[0].segment_id == "14356"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d.pop("AAM_Destination_Id"), "AAM_Destination_ID is missing"),
        (lambda d: d.pop("User_DPID"), "User_DPID is missing"),
        (lambda d: d.update(User_DPID="12a"), "User_DPID must be an integer"),
        (lambda d: d.update(Users={}), "Users must be an array"),
        (lambda d: d["Users"][1].update(Segments="10329"), "Users[1].Segments must be an array"),
        (lambda d: d["Users"][0]["Segments"][1].update(Status="2"), "Users[0].Segments[1].Status must be 1"),
        (lambda d: d["Users"][0]["Segments"][1].update(Status=True), "Users[0].Segments[1].Status must be an integer"),
        (lambda d: d["Users"][0]["Segments"][0].pop("Segment_ID"), "Users[0].Segments[0].Segment_ID is missing"),
        (lambda d: d["Users"][0]["Segments"][0].update(DateTime="yesterday"), "Users[0].Segments[0].DateTime is not"),
        (lambda d: d["Users"][0].update(AAM_UUID=["1"]), "Users[0].AAM_UUID must be a string"),
    ],
)
def test_a_broken_shape_says_what_and_where(mutate: object, reason: str) -> None:
    doc = orjson.loads(DOC_SAMPLE)
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(MalformedDelivery) as caught:
        parse_delivery(orjson.dumps(doc))
    assert reason in caught.value.reason


def test_not_json_and_not_an_object() -> None:
    with pytest.raises(MalformedDelivery, match="not valid JSON"):
        parse_delivery(b'{"Users": [')
    with pytest.raises(MalformedDelivery, match="must be a JSON object"):
        parse_delivery(b"[1, 2]")


def test_dates_in_every_accepted_form() -> None:
    expected = datetime(2016, 7, 27, 16, 17, 42, tzinfo=UTC)
    assert parse_date("Wed Jul 27 16:17:42 UTC 2016") == expected
    assert parse_date("Wed  Jul 27 16:17:42 UTC 2016 ") == expected
    assert parse_date("2016-07-27T16:17:42Z") == expected
    assert parse_date("2016-07-27T16:17:42") == expected
    assert parse_date(int(expected.timestamp())) == expected
    assert parse_date(str(int(expected.timestamp() * 1000))) == expected
    assert format_date(expected) == "Wed Jul 27 16:17:42 UTC 2016"


def test_a_segment_without_datetime_is_dated_by_process_time() -> None:
    doc = orjson.loads(DOC_SAMPLE)
    del doc["Users"][0]["Segments"][0]["DateTime"]
    delivery = parse_delivery(orjson.dumps(doc))
    assert delivery.users[0].segments[0].at == datetime(2016, 7, 27, 16, 17, 42, tzinfo=UTC)


_ids = st.text(alphabet="0123456789abcdef", min_size=1, max_size=40)
_segments = st.dictionaries(st.integers(min_value=1, max_value=10**9), st.booleans(), min_size=1, max_size=5)
_users = st.lists(st.builds(UserChanges, aam_uuid=_ids, partner_uuid=_ids, segments=_segments), min_size=1, max_size=10)
_times = st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2099, 1, 1)).map(
    lambda d: d.replace(microsecond=0, tzinfo=UTC)
)


@given(users=_users, at=_times, dpid=st.integers(0, 10**9), destination=st.integers(0, 10**9))
def test_what_ecsim_writes_reads_back(users: list[UserChanges], at: datetime, dpid: int, destination: int) -> None:
    body = delivery_body(user_dpid=dpid, destination_id=destination, client_id="c", users=users, at=at)
    delivery = parse_delivery(body)
    assert (delivery.user_dpid, delivery.destination_id) == (dpid, destination)
    assert [(u.aam_uuid, u.partner_uuid) for u in delivery.users] == [(u.aam_uuid, u.partner_uuid) for u in users]
    for read, written in zip(delivery.users, users, strict=True):
        assert {s.segment_id: s.active for s in read.segments} == {str(k): v for k, v in written.segments.items()}
        assert all(s.at == at for s in read.segments)


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_malformed(body: bytes) -> None:
    try:
        parse_delivery(body)
    except MalformedDelivery as exc:
        outcome = exc.reason  # never an unexpected exception type, and always a reason
    else:
        outcome = "parsed"
    assert outcome


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)


@given(
    st.fixed_dictionaries(
        {"User_DPID": _json_values, "AAM_Destination_ID": _json_values, "Users": _json_values},
        optional={"ProcessTime": _json_values, "User_count": _json_values},
    )
)
def test_any_shape_parses_or_raises_malformed(doc: dict[str, object]) -> None:
    try:
        parse_delivery(orjson.dumps(doc))
    except MalformedDelivery as exc:
        outcome = exc.reason  # never an unexpected exception type, and always a reason
    else:
        outcome = "parsed"
    assert outcome


_segment_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.sampled_from(["", " 1 ", "0", "1", "2", "x y", "a,b", "Wed Jul 27 16:17:22 UTC 2016", "1469636242", "20160727"]),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=2),
)


@given(
    segment=st.dictionaries(
        st.sampled_from(["Segment_ID", "Status", "DateTime", "Other"]), _segment_values, max_size=4
    ),
)
def test_the_fast_reading_of_a_segment_agrees_with_the_checked_one(segment: dict[str, object]) -> None:
    """The receiver's hot path (``_plain_segment``) gives the checked reading's change, or leaves it to it."""
    fallback = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    fast = _plain_segment(segment, fallback)
    try:
        checked = _segment(segment, "Users[0].Segments[0]", fallback)
    except MalformedDelivery:
        assert fast is None
    else:
        assert fast in (None, checked)


def test_the_platforms_segments_take_the_fast_reading() -> None:
    fallback = datetime(2020, 1, 2, tzinfo=UTC)
    raw = {"Segment_ID": 5001, "Status": 0, "DateTime": "Wed Jul 27 16:17:22 UTC 2016"}
    assert _plain_segment(raw, fallback) == _segment(raw, "here", fallback)
    assert _plain_segment(raw, fallback) is not None


_user_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.sampled_from(["", " 1 ", "x" * 1025, "19393572368547369350319949416899715727"]),
    st.text(max_size=8),
    st.lists(st.one_of(st.text(max_size=4), st.integers(), st.none()), max_size=3),
    st.lists(
        st.dictionaries(st.sampled_from(["Segment_ID", "Status", "DateTime"]), _segment_values, max_size=3),
        max_size=3,
    ),
)


@given(
    user=st.dictionaries(
        st.sampled_from(["AAM_UUID", "DataPartner_UUID", "AAM_Regions", "Segments", "Other"]), _user_values, max_size=5
    ),
)
def test_the_fast_reading_of_a_user_agrees_with_the_checked_one(user: dict[str, object]) -> None:
    """The receiver's hot path (``_plain_user``) gives the checked reading's user, or leaves it to it."""
    fallback = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    fast = _plain_user(user, fallback)
    try:
        checked = _user(user, "Users[0]", fallback)
    except MalformedDelivery:
        assert fast is None
    else:
        assert fast in (None, checked)


def test_the_platforms_users_take_the_fast_reading() -> None:
    fallback = datetime(2020, 1, 2, tzinfo=UTC)
    raw = orjson.loads(DOC_SAMPLE)["Users"][0]
    raw["Segments"] = [{"Segment_ID": 5001, "Status": 1, "DateTime": "Wed Jul 27 16:17:22 UTC 2016"}]
    fast = _plain_user(raw, fallback)
    assert fast is not None
    assert fast == _user(raw, "here", fallback)
