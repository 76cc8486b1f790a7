"""A real-time delivery becomes segment events: routed by destination and user DPID, the ID per data source,
the latest status per (segment, ID), invalid IDs skipped and counted; and the keys it is checked with."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest.audiences import ImportAudience
from services.ingest.realtime_keys import KeyRing, parse_keys
from services.ingest.realtime_oauth import ACTIVE_TTL_S, active_until, bearer_token
from services.ingest.realtime_routing import (
    REASON_NO_AUDIENCE,
    REASON_NO_PARTNER_UUID,
    _event,
    delivery_segments,
    event_record,
    route_delivery,
)
from services.ingest.realtime_settings import RealtimeSettings
from shared.errors import ConfigError
from shared.formats.realtime import RealtimeDelivery, RealtimeUser, SegmentChange
from shared.messages import SegmentEvent, decode

T0 = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
ECID_A, ECID_B = "1" * 38, "2" * 38
VISITORS = ImportAudience("visitors", 5001, "visitors", "ecid", 1001, ())
VISITORS_COPY = ImportAudience("visitors-copy", 5001, "visitors", "ecid", 1001, ())
EMAILS = ImportAudience("emails", 5001, "hashed-emails", "declared", 1002, ())
ONLY_7002 = ImportAudience("only-7002", 5002, "visitors", "ecid", 1001, (), platform_destination_id=7002)


def _user(aam: str | None, partner: str | None, *changes: tuple[str, bool, datetime]) -> RealtimeUser:
    return RealtimeUser(aam, partner, (), tuple(SegmentChange(s, a, t) for s, a, t in changes))


def _delivery(dpid: int, *users: RealtimeUser, destination: int = 7001) -> RealtimeDelivery:
    return RealtimeDelivery(None, dpid, "c", destination, users)


AUDIENCES = {"5001": [VISITORS, VISITORS_COPY, EMAILS], "5002": [ONLY_7002]}


def test_an_ecid_data_source_takes_aam_uuid_and_a_declared_one_data_partner_uuid() -> None:
    ecids = _delivery(1001, _user(ECID_A, "crm-1", ("5001", True, T0)))
    routed = route_delivery(ecids, AUDIENCES)
    # One event per data source: the consumer fans it out to both visitor lists.
    assert [(e.data_source, e.id_type, e.id, e.op) for e in routed.events] == [("visitors", "ecid", ECID_A, "add")]
    declared = _delivery(1002, _user(ECID_A, "a" * 64, ("5001", False, T0)))
    routed = route_delivery(declared, AUDIENCES)
    assert [(e.data_source, e.id, e.op) for e in routed.events] == [("hashed-emails", "a" * 64, "remove")]


def test_destination_and_dpid_decide_what_is_fed() -> None:
    unknown_dpid = route_delivery(_delivery(9999, _user(ECID_A, "x", ("5001", True, T0))), AUDIENCES)
    assert unknown_dpid.events == []
    assert unknown_dpid.skipped == {REASON_NO_AUDIENCE: 1}
    other_destination = route_delivery(_delivery(1001, _user(ECID_A, "x", ("5002", True, T0))), AUDIENCES)
    assert other_destination.events == []
    named = route_delivery(_delivery(1001, _user(ECID_A, "x", ("5002", True, T0)), destination=7002), AUDIENCES)
    assert [e.segment_id for e in named.events] == ["5002"]
    unmapped = route_delivery(_delivery(1001, _user(ECID_A, "x", ("777", True, T0))), AUDIENCES)
    assert unmapped.skipped == {REASON_NO_AUDIENCE: 1}


def test_invalid_ids_are_counted_per_reason_and_the_rest_applies() -> None:
    delivery = _delivery(
        1001,
        _user("0578240750487542456854736923319946899715232", "x", ("5001", True, T0)),  # the doc's 43 digits
        _user(None, "x", ("5001", True, T0)),
        _user(ECID_B, "x", ("5001", True, T0)),
    )
    routed = route_delivery(delivery, AUDIENCES)
    assert [e.id for e in routed.events] == [ECID_B]
    assert routed.skipped == {"ecid: not 38 digits": 1, "no AAM_UUID": 1}
    declared = route_delivery(_delivery(1002, _user(ECID_A, None, ("5001", True, T0))), AUDIENCES)
    assert declared.skipped == {REASON_NO_PARTNER_UUID: 1}


def test_the_latest_status_by_datetime_wins_within_a_delivery() -> None:
    later = T0 + timedelta(seconds=5)
    delivery = _delivery(
        1001,
        _user(ECID_A, "x", ("5001", False, later), ("5001", True, T0)),  # the older add comes second
        _user(ECID_B, "x", ("5001", True, T0)),
        _user(ECID_B, "x", ("5001", False, T0)),  # same time: the later one in the delivery
    )
    ops = {e.id: e.op for e in route_delivery(delivery, AUDIENCES).events}
    assert ops == {ECID_A: "remove", ECID_B: "remove"}


def test_a_retried_delivery_yields_the_same_event_ids() -> None:
    delivery = _delivery(1001, _user(ECID_A, "x", ("5001", True, T0)), _user(ECID_B, "x", ("5001", False, T0)))
    first, again = route_delivery(delivery, AUDIENCES), route_delivery(delivery, AUDIENCES)
    assert [e.event_id for e in first.events] == [e.event_id for e in again.events]
    newer = _delivery(1001, _user(ECID_A, "x", ("5001", True, T0 + timedelta(seconds=1))))
    assert route_delivery(newer, AUDIENCES).events[0].event_id != first.events[0].event_id
    assert delivery_segments(delivery) == {"5001"}


def test_keys_file_lines_comments_and_rotation(tmp_path: Path) -> None:
    assert parse_keys("# the platform's keys\nold-key\n\n  new-key  \nold-key\n") == (b"old-key", b"new-key")
    path = tmp_path / "keys"
    path.write_text("old-key\n")
    ring = KeyRing(path, recheck_s=0)
    assert ring.keys() == (b"old-key",)
    path.write_text("old-key\nnew-key\n")
    os.utime(path, ns=(1, 10**18))  # a different modification time, whatever the clock's resolution
    assert ring.keys() == (b"old-key", b"new-key")
    path.write_text("")  # a half-written edit keeps the keys already loaded
    os.utime(path, ns=(1, 2 * 10**18))
    assert ring.keys() == (b"old-key", b"new-key")


def test_a_missing_or_empty_keys_file_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        KeyRing(tmp_path / "absent")
    (tmp_path / "empty").write_text("# no key yet\n")
    with pytest.raises(ConfigError, match="holds no key"):
        KeyRing(tmp_path / "empty")


def test_enabled_without_a_keys_file_is_a_settings_error() -> None:
    with pytest.raises(ValueError, match="REALTIME_SIGNING_KEYS_FILE"):
        RealtimeSettings(realtime_enabled=True)
    assert RealtimeSettings(realtime_enabled=False).realtime_signing_keys_file is None
    with pytest.raises(ValueError):
        RealtimeSettings(realtime_signature_algorithm="sha512")


@pytest.mark.parametrize("at", [T0, T0.replace(microsecond=123456), datetime(2016, 7, 27, 16, 17, 22, tzinfo=UTC)])
def test_an_event_record_is_the_segment_events_own_json(at: datetime) -> None:
    delivery = _delivery(1002, _user(ECID_A, "a" * 64, ("5001", False, at)))
    change = route_delivery(delivery, AUDIENCES).events[0]
    record = event_record("p.segment-events", change)
    model = SegmentEvent(
        event_id=change.event_id,
        segment_id=change.segment_id,
        id_type="declared",
        data_source=change.data_source,
        id=change.id,
        op="remove",
        occurred_at=at,
    )
    assert record.value == model.to_bytes()
    # Keyed by segment, not by SegmentEvent.key()'s segment and ID: deliveries span many segments (README "Keys").
    assert record.key == model.segment_id.encode()
    assert decode(SegmentEvent, record.value) == model


def test_bearer_tokens_and_introspection_answers() -> None:
    assert bearer_token("Bearer abc.def") == "abc.def"
    assert bearer_token("bearer   abc ") == "abc"
    assert bearer_token("Basic dXNlcjpwYXNz") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None
    now = 1_000_000.0
    assert active_until({"active": True, "exp": now + 60}, now) == now + 60
    assert active_until({"active": True, "exp": now + 10 * ACTIVE_TTL_S}, now) == now + ACTIVE_TTL_S
    assert active_until({"active": True}, now) == now + ACTIVE_TTL_S
    assert active_until({"active": True, "exp": now - 1}, now) is None  # expired, whatever the issuer says
    assert active_until({"active": False, "exp": now + 60}, now) is None
    assert active_until({"active": "true"}, now) is None
    assert active_until(None, now) is None


def test_oauth_settings_need_their_client_and_may_replace_the_keys() -> None:
    with pytest.raises(ValueError, match="REALTIME_OAUTH_CLIENT_ID"):
        RealtimeSettings(realtime_oauth_introspection_url="https://issuer.example/introspect")
    with pytest.raises(ValueError, match="http"):
        RealtimeSettings(
            realtime_oauth_introspection_url="issuer.example",
            realtime_oauth_client_id="bridge",
            realtime_oauth_client_secret="s",
        )
    oauth_only = RealtimeSettings(
        realtime_enabled=True,
        realtime_oauth_introspection_url="https://issuer.example/introspect",
        realtime_oauth_client_id="bridge",
        realtime_oauth_client_secret="s",
    )
    assert oauth_only.realtime_signing_keys_file is None


def test_an_event_id_is_the_changes_own_whatever_was_routed_before() -> None:
    """The same instant written in another offset is another text, so another event id, in either order (the
    time's text is cached: equal datetimes of other offsets must not share it)."""
    later = T0 + timedelta(days=1)  # a time no other test has routed
    other_offset = later.astimezone(timezone(timedelta(hours=2)))

    def event_id(at: datetime) -> str:
        return route_delivery(_delivery(1001, _user(ECID_A, None, ("5001", True, at))), AUDIENCES).events[0].event_id

    first_utc, first_other = event_id(later), event_id(other_offset)
    assert first_utc != first_other
    assert (event_id(later), event_id(other_offset)) == (first_utc, first_other)
    # The same ids as the change's text makes them, cache or not.
    assert (
        first_utc
        == route_delivery(_delivery(1001, _user(ECID_A, None, ("5001", True, later + timedelta(0)))), AUDIENCES)
        .events[0]
        .event_id
    )


@settings(max_examples=200, deadline=None)
@given(
    one_id=st.text(min_size=1, max_size=60),
    active=st.booleans(),
    at=st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5))])),
)
def test_an_event_id_is_the_hash_of_the_changes_text(one_id: str, active: bool, at: datetime) -> None:
    """The event id of a change, whatever the cache of its text holds: a retry straddling an upgrade of the
    bridge must still find the same ids."""
    name = f"7001|5001|hashed-emails|{one_id}|{int(active)}|{at.isoformat()}"
    expected = "rt-" + hashlib.blake2b(name.encode(), digest_size=16).hexdigest()
    for _ in range(2):  # uncached, then cached
        assert _event(7001, "5001", EMAILS, one_id, active, at).event_id == expected
