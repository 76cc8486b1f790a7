"""``import_scaling`` through the running services: each size imported end to end on its own stack, the lists
checked exact and the floor measured, then the per-ID times at each size and their growth."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.scaling_bench import run_import_scaling

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(300)
async def test_import_scaling_imports_every_size_checked_and_reports_the_growth(tmp_path: Path) -> None:
    figures = await run_import_scaling(tmp_path, [1000, 3000])
    for label, n in (("1k", 1000), ("3k", 3000)):
        size = figures[label]
        # Timed, checked work at each size: the rate is the size over its time, the floor was measured too.
        assert size["us_per_id"] == pytest.approx(size["seconds"] / n * 1e6, rel=0.01)
        assert size["floor_us_per_id"] > 0
        assert size["floor_ratio"] > 0
        assert size["checkpoints"] >= 0  # the cluster's checkpoints during that size, counted
    growth = figures["3k"]["us_per_id"] / figures["1k"]["us_per_id"]
    assert figures["per_id_growth_3k_over_1k"] == pytest.approx(growth, abs=0.01)
    assert {"ingest", "reconcile"} <= set(figures["rss_mb"])
