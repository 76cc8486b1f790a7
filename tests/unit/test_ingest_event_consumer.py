"""How ingest consumes segment-events: partitions side by side, each poll bounded and lingered as configured."""

from __future__ import annotations

import pytest

from services.ingest.app import IngestApp
from services.ingest.settings import IngestSettings
from shared.topics import SEGMENT_EVENTS


def test_segment_event_partitions_are_handled_side_by_side_as_configured() -> None:
    app = IngestApp(IngestSettings(segment_events_concurrency=3, segment_events_linger_ms=40))
    assert app.partition_concurrency(SEGMENT_EVENTS) == 3
    assert app.poll_linger_s(SEGMENT_EVENTS) == pytest.approx(0.04)
    assert app.partition_concurrency("other-topic") == 1


def test_by_default_several_segments_are_handled_at_once() -> None:
    assert IngestApp(IngestSettings()).partition_concurrency(SEGMENT_EVENTS) > 1


def test_a_concurrency_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="segment_events_concurrency"):
        IngestSettings(segment_events_concurrency=0)
