"""The real-time benchmark's memory check: a flat RSS passes, one that keeps rising over the second half fails."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.bench.output_checks import BenchOutputError
from tests.bench.rss_watch import check_flat, child_pids, rss_figures, rss_mb, slope


@given(
    st.floats(-50, 50, allow_nan=False),
    st.floats(10, 1000, allow_nan=False),
    st.integers(2, 120),
)
def test_the_slope_of_a_straight_line_is_its_rate(rate: float, start: float, count: int) -> None:
    samples = [(float(t), start + rate * t) for t in range(count)]
    assert slope(samples) == pytest.approx(rate, abs=1e-6)


def test_a_warm_up_then_a_plateau_is_flat() -> None:
    # Connections, caches and arenas fill in the first seconds; then the receiver holds steady.
    samples = [(float(t), 80.0 + min(t, 5) * 8 + (t % 2) * 0.5) for t in range(30)]
    figures = rss_figures(samples)
    assert figures["start_mb"] == 80.0
    assert figures["peak_mb"] == 120.5
    assert abs(figures["second_half_growth_pct"]) < 2
    check_flat(figures, "ingest")


def test_a_leak_over_the_second_half_fails_loudly() -> None:
    samples = [(float(t), 100.0 + 3 * t) for t in range(30)]  # +3 MB/s: 45 MB on ~145 MB over the half
    figures = rss_figures(samples)
    assert figures["second_half_slope_mb_per_s"] == pytest.approx(3)
    assert figures["second_half_growth_pct"] > 20
    with pytest.raises(BenchOutputError, match="ingest's RSS is not flat"):
        check_flat(figures, "ingest")


def test_a_growth_under_the_bound_passes() -> None:
    samples = [(float(t), 100.0 + 0.5 * t) for t in range(30)]  # ~6% over the second half
    figures = rss_figures(samples)
    assert 0 < figures["second_half_growth_pct"] < 20
    check_flat(figures, "ingest")


def test_no_sample_is_an_error_not_a_flat_line() -> None:
    with pytest.raises(BenchOutputError):
        rss_figures([])


def test_rss_of_this_process_is_read() -> None:
    assert rss_mb(os.getpid()) > 1


def test_the_children_of_a_process_are_found_oldest_first() -> None:
    # As the bench finds ingest's real-time receiver processes, to watch their memory and CPU too.
    first = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    second = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        found = child_pids(os.getpid())
        assert [pid for pid in found if pid in (first.pid, second.pid)] == [first.pid, second.pid]
        assert child_pids(first.pid) == []
    finally:
        for child in (first, second):
            child.kill()
            child.wait()
    assert first.pid not in child_pids(os.getpid())
