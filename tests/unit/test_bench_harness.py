"""The benchmarks' pure parts: output checks, repetitions' medians and ranges, WAL levels, latency percentiles."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import ConfigError
from tests.bench.commit_latency import percentiles
from tests.bench.output_checks import (
    BenchOutputError,
    ListExpectation,
    ListState,
    id_set_mismatches,
    import_expectations,
    list_mismatches,
    require,
)
from tests.bench.private_postgres import cluster_settings, wal_level
from tests.bench.repeat import DEFAULT_REPEAT, repeat_count, summarise


def test_import_expectations_follow_the_files_mix() -> None:
    ecids, emails = import_expectations(1001)
    assert ecids == ListExpectation("visitors-5001", 1, 450, 50, "unknown_ecid")
    # The e-mail half is the larger one (501 IDs): its recipients follow the ECID half's.
    assert emails == ListExpectation("emails-5002", 501, 450, 51, "unknown_declared_id")


def test_exact_lists_pass_and_every_kind_of_wrong_list_is_named() -> None:
    expected = import_expectations(1000)
    exact = {e.audience_id: e.state() for e in expected}
    assert list_mismatches(expected, exact) == []
    ecids = expected[0]
    wrong = {
        "a member short": ListState(ecids.members - 1, 1, ecids.members, {"unknown_ecid": ecids.unmatched}),
        "shifted": ListState(ecids.members, 2, ecids.members + 1, {"unknown_ecid": ecids.unmatched}),
        "unmatched lost": ListState(ecids.members, 1, ecids.members, {}),
        "wrong reason": ListState(ecids.members, 1, ecids.members, {"invalid_format": ecids.unmatched}),
    }
    for state in wrong.values():
        problems = list_mismatches(expected, {**exact, ecids.audience_id: state})
        assert len(problems) == 1
        assert problems[0].startswith("visitors-5001: expected")
    assert list_mismatches(expected, {ecids.audience_id: ecids.state()}) == ["emails-5002: no list found"]


def test_an_empty_expected_list_has_no_bounds() -> None:
    assert ListExpectation("a", 1, 0, 0, "unknown_ecid").state() == ListState(0, None, None, {})


def test_id_sets_must_match_exactly_each_id_once() -> None:
    assert id_set_mismatches(["a", "b"], ["b", "a"]) == []
    assert id_set_mismatches(["a", "b"], ["a"]) == ["1 IDs missing, e.g. ['b']"]
    assert id_set_mismatches(["a"], ["a", "z"]) == ["1 IDs unexpected, e.g. ['z']"]
    assert id_set_mismatches(["a"], ["a", "a"]) == ["1 IDs more than once, e.g. ['a']"]


def test_a_wrong_output_raises_with_its_problems_and_a_right_one_does_not() -> None:
    require([], "import 1,000")
    with pytest.raises(BenchOutputError, match="import 1,000: the output is wrong, no figure reported") as caught:
        require(["visitors-5001: no list found"], "import 1,000")
    assert caught.value.context == {"problems": ["visitors-5001: no list found"]}


def test_repetitions_give_medians_and_ranges_per_figure_nested_ones_too() -> None:
    runs = [
        {"seconds": 9.0, "ids": 1000, "phases_s": {"uploaded": 3.0}, "mode": "x"},
        {"seconds": 7.0, "ids": 1000, "phases_s": {"uploaded": 1.0}, "mode": "x"},
        {"seconds": 8.0, "ids": 1000, "phases_s": {"uploaded": 2.0}, "mode": "x"},
    ]
    summary = summarise(runs)
    assert summary["repeat"] == 3
    assert summary["median"] == {"seconds": 8.0, "ids": 1000, "phases_s": {"uploaded": 2.0}, "mode": "x"}
    assert summary["range"] == {
        "seconds": [7.0, 9.0],
        "ids": [1000, 1000],
        "phases_s": {"uploaded": [1.0, 3.0]},
        "mode": None,
    }
    assert summary["runs"] == runs
    assert summarise([{"seconds": 1}, {"seconds": 2}])["median"] == {"seconds": 1.5}
    with pytest.raises(ValueError, match="no runs"):
        summarise([])


@given(st.lists(st.floats(min_value=0, max_value=1e9, allow_nan=False), min_size=1, max_size=9))
def test_the_median_lies_within_the_range(values: list[float]) -> None:
    summary = summarise([{"seconds": v} for v in values])
    low, high = summary["range"]["seconds"]
    assert low == min(values)
    assert high == max(values)
    assert low <= summary["median"]["seconds"] <= high


@given(st.integers(min_value=1, max_value=10_000))
def test_bench_repeat_reads_any_positive_count(count: int) -> None:
    assert repeat_count(str(count)) == count
    assert repeat_count(f" {count} ") == count


@pytest.mark.parametrize("raw", ["0", "-2", "three", "1.5"])
def test_bench_repeat_refuses_what_is_not_a_positive_count(raw: str) -> None:
    with pytest.raises(ValueError, match="BENCH_REPEAT"):
        repeat_count(raw)


def test_bench_repeat_defaults_to_three() -> None:
    assert repeat_count(None) == repeat_count("") == DEFAULT_REPEAT == 3


def test_wal_levels() -> None:
    assert wal_level(None) is None
    assert wal_level("") is None
    assert wal_level("replica") == "replica"
    with pytest.raises(ConfigError, match="BENCH_WAL_LEVEL must be one of minimal, replica, logical"):
        wal_level("archive")
    replica = cluster_settings("replica", 5999)
    assert replica["wal_level"] == "replica"
    assert replica["max_wal_senders"] != "0"  # minimal refuses to start with WAL senders; replica needs some
    assert cluster_settings("minimal", 5999)["max_wal_senders"] == "0"
    # Only the WAL level differs from the local cluster.
    assert {k: v for k, v in replica.items() if k not in ("wal_level", "max_wal_senders", "port")} == {
        k: v for k, v in cluster_settings("minimal", 1).items() if k not in ("wal_level", "max_wal_senders", "port")
    }


def test_percentiles() -> None:
    figures = percentiles([float(i) for i in range(1, 101)])
    assert figures == {"p50_ms": 50.5, "p95_ms": 95.0, "p99_ms": 99.0}
    with pytest.raises(ValueError, match="at least 2"):
        percentiles([1.0])
