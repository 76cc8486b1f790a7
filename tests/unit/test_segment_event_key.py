"""segment-events' key: ``<segment_id>:<id>``, the same from every producer the bridge has (the model, the
real-time receiver, the streaming benchmark's sender)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from services.ingest.realtime_routing import Change, event_record
from shared.messages import SegmentEvent
from shared.segment_event_key import segment_event_key
from tests.bench.streaming_bench import EventSlices

# What SegmentEvent accepts as an identifier: no whitespace, no comma.
identifiers = st.text(
    st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc"), blacklist_characters=","),
    min_size=1,
    max_size=40,
)
AT = datetime(2026, 12, 3, tzinfo=UTC)


@given(segment=identifiers, member=identifiers)
def test_the_model_keys_an_event_by_segment_and_id_and_the_real_time_receiver_by_segment(
    segment: str, member: str
) -> None:
    model = SegmentEvent(
        event_id="e-1", segment_id=segment, id_type="ecid", data_source="visitors", id=member, op="add", occurred_at=AT
    )
    change = Change("e-1", segment, "ecid", "visitors", member, "add", AT)
    assert model.key() == segment_event_key(segment, member) == f"{segment}:{member}".encode()
    # The receiver's deliveries span many segments: keyed by segment, a poll concerns few audiences (README "Keys").
    assert event_record("segment-events", change).key == segment.encode()


def test_the_streaming_benchmark_keys_each_event_by_its_segment_and_id() -> None:
    slices = EventSlices("segment-events", rate=200, total=30, tick=0.05)
    records = [r for n in range(len(slices)) for r in slices.slice(n)]
    assert len(records) == 30
    events = [SegmentEvent.model_validate_json(r.value) for r in records]
    assert [r.key for r in records] == [e.key() for e in events]
    assert len({r.key for r in records}) == 30  # one key per ID: the segment spreads over the partitions
