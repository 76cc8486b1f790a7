"""The membership-layout experiment (README, Performance: growth with size) against the real Postgres: each way of
writing a snapshot's members leaves both lists exactly as expected, whatever the order the ways run in."""

from __future__ import annotations

import pytest

from tests.bench.membership_layouts import measure

pytestmark = pytest.mark.integration


async def test_every_layout_writes_both_lists_exactly(database_url: str) -> None:
    seconds = await measure(database_url, 2000, ["swap", "trunc", "live", "swap"], database="ab_layouts_test")
    assert set(seconds) == {"live", "trunc", "swap"}
    assert all(s > 0 for s in seconds.values())


async def test_an_unknown_layout_is_refused(database_url: str) -> None:
    with pytest.raises(ValueError, match="unknown variants"):
        await measure(database_url, 2000, ["sideways"], database="ab_layouts_test")
