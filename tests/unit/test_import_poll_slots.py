"""Import polling intervals (issue 19): which deliveries a scan may read, from each audience's slots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.audiences import ImportAudience
from services.ingest.poll_slots import PollInterval, held, poll_window
from services.ingest.routing import Origin
from services.reconcile.catalog import CatalogImportAudience

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _audience(audience_id: str, dpid: int = 5001, destination: int | None = None) -> ImportAudience:
    return ImportAudience(audience_id, 1, "visitors", "ecid", dpid, (), destination)


def test_no_slot_is_due_before_the_first_interval_has_passed() -> None:
    interval = PollInterval("a", 3600, anchor=T0)
    assert interval.due(T0) is None
    assert interval.due(T0 + HOUR - timedelta(seconds=1)) is None
    assert interval.due(T0 + HOUR) == T0 + HOUR
    assert interval.next_poll() == T0 + HOUR


def test_a_polled_slot_is_not_polled_again_and_the_next_one_is_an_interval_later() -> None:
    interval = PollInterval("a", 3600, anchor=T0, last_slot=T0 + HOUR)
    assert interval.due(T0 + HOUR + timedelta(minutes=59)) is None
    assert interval.due(T0 + 2 * HOUR) == T0 + 2 * HOUR
    assert interval.next_poll() == T0 + 2 * HOUR


def test_slots_missed_while_down_are_polled_once_the_latest() -> None:
    interval = PollInterval("a", 3600, anchor=T0, last_slot=T0 + HOUR)
    assert interval.due(T0 + 5 * HOUR + timedelta(minutes=10)) == T0 + 5 * HOUR
    after = PollInterval("a", 3600, anchor=T0, last_slot=T0 + 5 * HOUR)
    assert after.due(T0 + 5 * HOUR + timedelta(minutes=20)) is None


@given(st.integers(min_value=60, max_value=86400 * 3), st.integers(min_value=0, max_value=86400 * 30))
def test_polls_are_never_closer_than_the_interval(every_s: int, elapsed_s: int) -> None:
    interval = PollInterval("a", every_s, anchor=T0)
    slot = interval.due(T0 + timedelta(seconds=elapsed_s))
    if slot is None:
        assert elapsed_s < every_s
        return
    assert (slot - T0).total_seconds() % every_s == 0
    polled = PollInterval("a", every_s, anchor=T0, last_slot=slot)
    assert polled.due(slot + timedelta(seconds=every_s - 1)) is None
    assert polled.due(slot + timedelta(seconds=every_s)) == slot + timedelta(seconds=every_s)


def test_an_audience_without_interval_is_always_open() -> None:
    window = poll_window([PollInterval("slow", 3600, anchor=T0)], T0 + timedelta(minutes=5))
    assert window.is_open("fast")
    assert not window.is_open("slow")
    assert dict(window.due) == {}


def test_a_batch_waits_while_every_audience_it_feeds_has_no_slot_due() -> None:
    audiences = [_audience("slow"), _audience("other", dpid=6001)]
    window = poll_window([PollInterval("slow", 3600, anchor=T0)], T0 + timedelta(minutes=5))
    assert held(window, audiences, Origin(5001, 7001))
    # Another data source's delivery feeds "other" (no interval): read at once.
    assert not held(window, audiences, Origin(6001, 7001))


def test_a_batch_feeding_several_audiences_is_read_at_the_earliest_slot_among_them() -> None:
    audiences = [_audience("hourly"), _audience("daily")]
    intervals = [PollInterval("hourly", 3600, anchor=T0), PollInterval("daily", 86400, anchor=T0)]
    assert held(poll_window(intervals, T0 + timedelta(minutes=30)), audiences, Origin(5001, None))
    window = poll_window(intervals, T0 + HOUR)
    assert dict(window.due) == {"hourly": T0 + HOUR}
    assert not held(window, audiences, Origin(5001, None))


def test_a_batch_any_audience_without_interval_takes_is_read_at_every_scan() -> None:
    audiences = [_audience("slow"), _audience("fast")]
    window = poll_window([PollInterval("slow", 3600, anchor=T0)], T0)
    assert not held(window, audiences, Origin(5001, None))


def test_a_batch_no_audience_takes_is_never_held() -> None:
    window = poll_window([PollInterval("slow", 3600, anchor=T0)], T0)
    assert not held(window, [_audience("slow")], Origin(9999, None))


def test_the_destination_an_audience_names_decides_which_deliveries_it_holds() -> None:
    audiences = [_audience("slow", destination=7001), _audience("fast", destination=7002)]
    window = poll_window([PollInterval("slow", 3600, anchor=T0)], T0)
    assert held(window, audiences, Origin(5001, 7001))
    assert not held(window, audiences, Origin(5001, 7002))


def test_the_catalog_takes_poll_every_as_an_interval() -> None:
    spec = CatalogImportAudience(
        audience_id="a", name="a", platform_segment_id=1, data_source="d", list="l", poll_every="6h"
    )
    assert spec.poll_every_s == 6 * 3600
    unset = CatalogImportAudience(audience_id="a", name="a", platform_segment_id=1, data_source="d", list="l")
    assert unset.poll_every_s is None


@pytest.mark.parametrize("text", ["10s", "6 hours", "h", "-1h", ""])
def test_the_catalog_refuses_an_unreadable_or_too_short_poll_every(text: str) -> None:
    with pytest.raises(ValueError, match="poll_every"):
        CatalogImportAudience(
            audience_id="a", name="a", platform_segment_id=1, data_source="d", list="l", poll_every=text
        )
