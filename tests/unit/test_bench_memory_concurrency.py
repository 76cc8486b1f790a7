"""The benchmarks' memory budget (every bridge service under 300 MB RSS, flat in size) and the concurrency
scenario's figures and audiences."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.messages import SegmentEvent
from tests.bench.campaign import ecid
from tests.bench.concurrency_bench import (
    bench_audiences,
    cpu_per_million,
    process_cpu_seconds,
    summarise_concurrency,
)
from tests.bench.memory_budget import BUDGET_MB, check_budget, flatness, over_budget, service_of
from tests.bench.output_checks import BenchOutputError
from tests.bench.streaming_bench import EventSlices


def test_a_replica_counts_as_its_service() -> None:
    assert service_of("reconcile-2") == "reconcile"
    assert service_of("reconcile") == "reconcile"
    assert service_of("ingest") == "ingest"
    # A name that merely has a dash is not a replica.
    assert service_of("x-ray") == "x-ray"


def test_only_bridge_processes_over_the_budget_are_named() -> None:
    rss = {"ingest": 120.0, "reconcile": 300.0, "reconcile-2": 300.5, "publish": 512.0, "ecsim": 900.0}
    assert over_budget(rss) == [
        "publish peaked at 512.0 MB RSS, over the 300 MB budget",
        "reconcile-2 peaked at 300.5 MB RSS, over the 300 MB budget",
    ]
    assert over_budget({"ingest": 99.0, "reconcile": BUDGET_MB, "ecsim": 1000.0}) == []


def test_a_scenario_over_the_budget_fails_loudly() -> None:
    check_budget({"ingest": 88.0, "reconcile": 140.0}, "import_1m")
    with pytest.raises(BenchOutputError, match="import_10m: over the memory budget") as raised:
        check_budget({"ingest": 88.0, "reconcile": 301.0}, "import_10m")
    assert raised.value.context["problems"] == ["reconcile peaked at 301.0 MB RSS, over the 300 MB budget"]


def test_flatness_compares_the_bridge_processes_measured_at_both_sizes() -> None:
    small = {"ingest": 100.0, "reconcile": 80.0, "ecsim": 70.0, "publish": 90.0}
    large = {"ingest": 110.0, "reconcile": 160.0, "ecsim": 700.0}
    assert flatness(small, large) == {"ingest": 1.1, "reconcile": 2.0}


def test_concurrency_figures_compare_the_slowest_audience_with_one_alone() -> None:
    figures = summarise_concurrency(1_000_000, 8.0, {f"a{k}": 20.0 + k for k in range(8)})
    assert figures["audiences"] == 8
    assert figures["ids"] == 8_000_000
    assert figures["seconds"] == figures["slowest_audience_s"] == 27.0
    assert figures["fastest_audience_s"] == 20.0
    assert figures["ids_per_s"] == round(8_000_000 / 27.0)
    assert figures["alone_ids_per_s"] == 125_000
    assert figures["throughput_vs_alone"] == round(8_000_000 / 27.0 / 125_000, 2)
    assert figures["slowest_vs_alone"] == round(27.0 / 8.0, 2)


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.floats(0.01, 1e4), min_size=1), st.floats(0.01, 1e4))
def test_concurrency_aggregate_is_all_ids_over_the_slowest(finished: dict[str, float], alone: float) -> None:
    figures = summarise_concurrency(1000, alone, finished)
    assert figures["ids"] == 1000 * len(finished)
    assert figures["slowest_audience_s"] == round(max(finished.values()), 2)
    assert figures["fastest_audience_s"] <= figures["slowest_audience_s"]


@pytest.mark.parametrize(("alone", "finished"), [(0.0, {"a": 1.0}), (1.0, {}), (1.0, {"a": 0.0})])
def test_concurrency_refuses_missing_timings(alone: float, finished: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="no timings"):
        summarise_concurrency(1000, alone, finished)


def test_the_concurrent_audiences_alternate_id_types_and_differ_from_the_one_alone() -> None:
    alone, together = bench_audiences(8)
    assert len(together) == 8
    assert alone.audience_id not in {a.audience_id for a in together}
    assert len({a.segment for a in [alone, *together]}) == 9
    assert [a.by_ecid for a in together] == [False, True] * 4
    assert together[0].expectation(1000).reason == "unknown_declared_id"
    assert together[1].expectation(1001).members == 900
    assert together[1].expectation(1001).unmatched == 101


def test_cpu_per_million_ids_is_the_difference_scaled() -> None:
    before = {"ingest": 10.0, "reconcile": 4.0}
    after = {"ingest": 18.0, "reconcile": 10.0, "postgres": 12.0}
    # 2,000,000 IDs: per million, half of each difference; a component first seen after counts whole.
    assert cpu_per_million(before, after, 2_000_000) == {"ingest": 4.0, "postgres": 6.0, "reconcile": 3.0}


def test_a_process_cpu_time_is_read_and_a_gone_one_is_zero() -> None:
    spent = process_cpu_seconds(os.getpid())
    sum(i * i for i in range(300_000))  # some CPU of this process
    assert process_cpu_seconds(os.getpid()) >= spent > 0
    assert process_cpu_seconds(2**22 + 1) == 0.0


def test_streamed_events_are_the_segment_events_the_model_would_send() -> None:
    slices = EventSlices("p.segment-events", rate=1000, total=120, tick=0.05)
    assert len(slices) == 3  # 50 events a slice, the last one short
    sent = [m for number in range(len(slices)) for m in slices.slice(number)]
    assert len(sent) == 120
    events = [SegmentEvent.model_validate_json(m.value) for m in sent]
    assert [e.event_id for e in events] == [f"b-{i}" for i in range(120)]
    assert [e.id for e in events] == [ecid(i + 1) for i in range(120)]
    assert {(e.segment_id, e.data_source, e.id_type, e.op) for e in events} == {("5001", "visitors", "ecid", "add")}
    assert [m.key for m in sent] == [e.key() for e in events]  # by segment and ID, as the model keys them
    assert {m.topic for m in sent} == {"p.segment-events"}
