"""Schedule cadences and slots: parsing ``--every``/``--cron``, and which slot fires when (missed ones once)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.reconcile.schedule_slots import (
    BadCadence,
    Cadence,
    check_cron,
    due_slot,
    next_run,
    parse_every,
    slot_request_id,
)

T0 = datetime(2026, 3, 1, 10, 17, 42, tzinfo=UTC)
HOURLY = Cadence(every_s=3600)
EVERY_3H_CRON = Cadence(cron="0 */3 * * *")


@pytest.mark.parametrize(
    ("text", "seconds"), [("60s", 60), ("15m", 900), ("1h", 3600), (" 2 h ", 7200), ("1d", 86400), ("90s", 90)]
)
def test_every_parses(text: str, seconds: int) -> None:
    assert parse_every(text) == seconds


@pytest.mark.parametrize("text", ["", "1", "h", "1 hour", "1.5h", "-1h", "30s", "0m", "1w", "1h30m"])
def test_bad_every_is_a_clear_error(text: str) -> None:
    with pytest.raises(BadCadence, match="--every"):
        parse_every(text)


@given(st.integers(min_value=0, max_value=9_999_999), st.sampled_from("smhd"))
def test_every_is_the_number_times_the_unit_or_refused_below_a_minute(n: int, unit: str) -> None:
    seconds = n * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    if seconds < 60:
        with pytest.raises(BadCadence):
            parse_every(f"{n}{unit}")
    else:
        assert parse_every(f"{n}{unit}") == seconds


@given(st.text(max_size=30))
def test_any_every_text_parses_or_is_refused_cleanly(text: str) -> None:
    with contextlib.suppress(BadCadence):
        assert parse_every(text) >= 60


@pytest.mark.parametrize("expression", ["0 */3 * * *", "*/5 * * * *", "30 6 * * 1-5", "0 0 1 * *"])
def test_valid_cron_is_kept(expression: str) -> None:
    assert check_cron(expression) == expression


@pytest.mark.parametrize("expression", ["", "* * * *", "61 * * * *", "0 25 * * *", "0 0 * * * *", "every hour"])
def test_bad_cron_is_a_clear_error(expression: str) -> None:
    with pytest.raises(BadCadence, match="--cron"):
        check_cron(expression)


def test_a_schedule_takes_exactly_one_cadence() -> None:
    with pytest.raises(BadCadence, match="exactly one"):
        Cadence()
    with pytest.raises(BadCadence, match="exactly one"):
        Cadence(every_s=3600, cron="0 * * * *")


def test_an_interval_fires_from_its_creation_not_at_it() -> None:
    assert due_slot(HOURLY, created=T0, anchor=T0, last_slot=None, now=T0) is None
    assert due_slot(HOURLY, created=T0, anchor=T0, last_slot=None, now=T0 + timedelta(minutes=59)) is None
    first = T0 + timedelta(hours=1)
    assert due_slot(HOURLY, created=T0, anchor=T0, last_slot=None, now=first) == first
    assert due_slot(HOURLY, created=T0, anchor=T0, last_slot=first, now=first + timedelta(minutes=30)) is None


def test_missed_slots_fire_once_the_latest() -> None:
    """Reconcile was down for three slots: on recovery one request, for the latest, then nothing until the next."""
    down_until = T0 + timedelta(hours=4, minutes=20)
    slot = due_slot(HOURLY, created=T0, anchor=T0, last_slot=T0 + timedelta(hours=1), now=down_until)
    assert slot == T0 + timedelta(hours=4)
    assert due_slot(HOURLY, created=T0, anchor=T0, last_slot=slot, now=down_until) is None
    assert next_run(HOURLY, created=T0, anchor=T0, last_slot=slot) == T0 + timedelta(hours=5)


def test_slots_that_fell_while_paused_are_skipped() -> None:
    resumed = T0 + timedelta(hours=5, minutes=10)
    assert due_slot(HOURLY, created=T0, anchor=resumed, last_slot=None, now=resumed) is None
    assert next_run(HOURLY, created=T0, anchor=resumed, last_slot=None) == T0 + timedelta(hours=6)
    assert due_slot(HOURLY, created=T0, anchor=resumed, last_slot=None, now=T0 + timedelta(hours=6)) == (
        T0 + timedelta(hours=6)
    )


def test_cron_slots() -> None:
    created = datetime(2026, 3, 1, 1, 30, tzinfo=UTC)
    assert due_slot(EVERY_3H_CRON, created=created, anchor=created, last_slot=None, now=created) is None
    at_three = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
    assert due_slot(EVERY_3H_CRON, created=created, anchor=created, last_slot=None, now=at_three) == at_three
    later = datetime(2026, 3, 1, 10, 59, 59, tzinfo=UTC)  # 03:00, 06:00 and 09:00 missed: 09:00 fires
    nine = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    assert due_slot(EVERY_3H_CRON, created=created, anchor=created, last_slot=at_three, now=later) == nine
    assert next_run(EVERY_3H_CRON, created=created, anchor=created, last_slot=nine) == datetime(
        2026, 3, 1, 12, 0, tzinfo=UTC
    )


@given(
    st.sampled_from([HOURLY, Cadence(every_s=900), EVERY_3H_CRON, Cadence(cron="*/7 * * * *")]),
    st.integers(min_value=0, max_value=10 * 86400),
    st.integers(min_value=0, max_value=10 * 86400),
)
def test_a_fired_slot_is_never_fired_again_and_never_in_the_future(cadence: Cadence, last_s: int, now_s: int) -> None:
    last = T0 + timedelta(seconds=min(last_s, now_s))
    now = T0 + timedelta(seconds=now_s)
    slot = due_slot(cadence, created=T0, anchor=T0, last_slot=last, now=now)
    if slot is not None:
        assert last < slot <= now
        assert due_slot(cadence, created=T0, anchor=T0, last_slot=slot, now=now) is None
        assert next_run(cadence, created=T0, anchor=T0, last_slot=slot) > now


def test_a_slot_has_one_request_id() -> None:
    slot = T0 + timedelta(hours=1)
    assert slot_request_id(7, slot) == slot_request_id(7, slot.astimezone(UTC))
    assert slot_request_id(7, slot) != slot_request_id(8, slot)
    assert slot_request_id(7, slot) != slot_request_id(7, slot + timedelta(hours=1))


def test_a_cadence_is_checked_whoever_builds_it() -> None:
    with pytest.raises(BadCadence, match="at least 60 s"):
        Cadence(every_s=59)
    with pytest.raises(BadCadence, match="--cron"):
        Cadence(cron="61 * * * *")
