"""The receiver processes' metrics summed into ingest's /metrics: each process's counters and histograms
add up sample by sample, label values only a process has seen are kept, and a report that is not a metric
snapshot is refused."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from services.ingest.realtime import RealtimeMetrics
from services.ingest.realtime_worker_metrics import Snapshot, SummedMetrics, parse_snapshot, snapshot


def _process(accepted: int, bad: int, responses: list[float], skipped: dict[str, int]) -> Snapshot:
    """What one receiver process reports, through the JSON it is sent as."""
    registry = CollectorRegistry()
    metrics = RealtimeMetrics(registry)
    metrics.deliveries.labels("accepted").inc(accepted)
    metrics.deliveries.labels("bad_signature").inc(bad)
    for seconds in responses:
        metrics.response_seconds.observe(seconds)
    for reason, count in skipped.items():
        metrics.skipped.labels(reason).inc(count)
    return parse_snapshot(orjson.loads(orjson.dumps(snapshot(registry))))


def _service(latest: dict[int, Snapshot]) -> CollectorRegistry:
    template = CollectorRegistry()
    RealtimeMetrics(template)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(SummedMetrics(template, latest))
    return registry


def test_the_processes_counts_add_up() -> None:
    latest = {
        0: _process(7, 1, [0.001, 0.02, 0.3], {"ecid: not 38 digits": 2}),
        1: _process(5, 0, [0.004], {"no audience": 4, "ecid: not 38 digits": 1}),
    }
    registry = _service(latest)
    value = registry.get_sample_value
    assert value("ab_realtime_deliveries_total", {"outcome": "accepted"}) == 12
    assert value("ab_realtime_deliveries_total", {"outcome": "bad_signature"}) == 1
    assert value("ab_realtime_deliveries_total", {"outcome": "malformed"}) == 0  # at 0, not absent
    assert value("ab_realtime_response_seconds_count") == 4
    assert value("ab_realtime_response_seconds_sum") == pytest.approx(0.325)
    assert value("ab_realtime_response_seconds_bucket", {"le": "0.005"}) == 2
    assert value("ab_realtime_response_seconds_bucket", {"le": "+Inf"}) == 4
    # Reasons only the processes have seen are there too.
    assert value("ab_realtime_changes_skipped_total", {"reason": "ecid: not 38 digits"}) == 3
    assert value("ab_realtime_changes_skipped_total", {"reason": "no audience"}) == 4
    text = generate_latest(registry).decode()
    assert "# TYPE ab_realtime_response_seconds histogram" in text
    assert "# HELP ab_realtime_deliveries_total Real-time deliveries answered" in text


def test_a_newer_report_replaces_the_process_s_last_one() -> None:
    latest = {0: _process(3, 0, [], {})}
    registry = _service(latest)
    latest[0] = _process(10, 0, [], {})  # the supervisor updates the mapping in place
    assert registry.get_sample_value("ab_realtime_deliveries_total", {"outcome": "accepted"}) == 10


def test_without_processes_the_metrics_are_at_zero() -> None:
    registry = _service({})
    assert registry.get_sample_value("ab_realtime_deliveries_total", {"outcome": "accepted"}) == 0
    assert registry.get_sample_value("ab_realtime_response_seconds_count") == 0
    # Registered under their names: the in-process receiver's metrics cannot be registered beside them.
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        RealtimeMetrics(registry)


labels = st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=5), max_size=3)
rows = st.lists(
    st.tuples(st.text(max_size=10), st.text(max_size=10), labels, st.floats(0, 1e9, allow_nan=False)), max_size=20
)


@given(rows)
def test_a_snapshot_survives_its_json(samples: list[tuple[str, str, dict[str, str], float]]) -> None:
    sent = [[family, name, sample_labels, value] for family, name, sample_labels, value in samples]
    parsed = parse_snapshot(orjson.loads(orjson.dumps(sent)))
    expected = {(f, n, tuple(sorted(lab.items()))): v for f, n, lab, v in samples}
    assert parsed == expected


@pytest.mark.parametrize(
    "row",
    [
        "accepted 3",
        ["ab_x", "ab_x_total", {}],
        ["ab_x", "ab_x_total", [], 1],
        ["ab_x", 7, {}, 1],
        ["ab_x", "ab_x_total", {}, "3"],
        ["ab_x", "ab_x_total", {}, True],
    ],
)
def test_what_is_not_a_sample_is_refused(row: object) -> None:
    with pytest.raises(ValueError, match="not a metric"):
        parse_snapshot([row])
