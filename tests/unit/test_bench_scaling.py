"""``import_scaling``: per-ID times at each size, their growth, and a wrong output at any size failing the scenario."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.bench.output_checks import BenchOutputError
from tests.bench.repeat import summarise
from tests.bench.scaling_bench import run_import_scaling, scaling_figures, size_label


def _run(n: int, seconds: float, floor_seconds: float) -> dict[str, Any]:
    return {
        "ids": n,
        "seconds": seconds,
        "ids_per_s": round(n / seconds),
        "floor_seconds": floor_seconds,
        "floor_ratio": round(seconds / floor_seconds, 2),
    }


def test_sizes_are_named_as_the_figures_name_them() -> None:
    assert [size_label(n) for n in (1_000_000, 3_000_000, 10_000_000, 250_000, 1234)] == [
        "1m",
        "3m",
        "10m",
        "250k",
        "1234",
    ]


def test_per_id_times_and_their_growth_from_the_smallest_size_to_the_largest() -> None:
    figures = scaling_figures(
        [
            (10_000_000, _run(10_000_000, 114.0, 88.0)),
            (1_000_000, _run(1_000_000, 7.6, 5.0)),
            (3_000_000, _run(3_000_000, 27.0, 18.0)),
        ]
    )
    assert figures["1m"]["us_per_id"] == 7.6
    assert figures["3m"]["us_per_id"] == 9.0
    assert figures["10m"]["us_per_id"] == 11.4
    assert figures["10m"]["floor_us_per_id"] == 8.8
    assert figures["10m"]["ids_per_s"] == 87_719
    # 11.4 µs an ID at 10M against 7.6 at 1M: 1.5 times; the floor 8.8 against 5.0.
    assert figures["per_id_growth_10m_over_1m"] == 1.5
    assert figures["floor_per_id_growth_10m_over_1m"] == 1.76


@given(st.integers(1000, 10**7), st.integers(2, 20), st.floats(1.0, 500.0))
def test_a_linear_cost_grows_by_one(small: int, factor: int, seconds: float) -> None:
    figures = scaling_figures(
        [(small, _run(small, seconds, seconds / 2)), (small * factor, _run(small * factor, seconds * factor, seconds))]
    )
    growth = [v for k, v in figures.items() if k.startswith("per_id_growth_")]
    assert growth == [1.0]


def test_one_size_is_no_scaling() -> None:
    with pytest.raises(ValueError, match="at least two sizes"):
        scaling_figures([(1_000_000, _run(1_000_000, 7.6, 5.0))])


async def test_each_size_runs_on_its_own_work_directory_and_memory_is_the_highest(tmp_path: Path) -> None:
    seen: list[tuple[Path, int]] = []

    async def fake_import(work: Path, n: int) -> dict[str, Any]:
        seen.append((work, n))
        return {**_run(n, n / 100_000, n / 150_000), "rss_mb": {"ingest": n / 10_000, "reconcile": 90.0}}

    made = iter([5, 5, 7, 10])  # the cluster's checkpoints before and after each size

    async def counter() -> int:
        return next(made)

    figures = await run_import_scaling(tmp_path, [1000, 3000], run=fake_import, count_checkpoints=counter)
    assert [figures["1k"]["checkpoints"], figures["3k"]["checkpoints"]] == [0, 3]
    assert seen == [(tmp_path / "1k", 1000), (tmp_path / "3k", 3000)]
    assert figures["rss_mb"] == {"ingest": 0.3, "reconcile": 90.0}
    assert figures["per_id_growth_3k_over_1k"] == 1.0
    # Repetitions summarise as any scenario's figures do: nested per size.
    assert summarise([figures, figures])["median"]["1k"]["us_per_id"] == 10.0


async def test_a_wrong_output_at_any_size_fails_the_scenario(tmp_path: Path) -> None:
    async def wrong_at_3k(work: Path, n: int) -> dict[str, Any]:
        if n == 3000:
            raise BenchOutputError("import 3,000: visitors-5001 holds 2,699 members, expected 2,700")
        return _run(n, 1.0, 1.0)

    async def no_checkpoints() -> int:
        return 0

    with pytest.raises(BenchOutputError, match="import 3,000"):
        await run_import_scaling(tmp_path, [1000, 3000, 10_000], run=wrong_at_3k, count_checkpoints=no_checkpoints)
