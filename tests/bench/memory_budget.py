"""The bridge's memory budget: every bridge service under ``BUDGET_MB`` of resident memory at its peak, whatever the
size of the files and lists it handled. A scenario whose service went over fails like a wrong output (no figure).

A service's peak is its ``VmHWM`` (tests/bench/stack.py), the highest RSS over its life. Replicas of a service
(``reconcile-2``) count as the service they run. ecsim is the test rig, not the bridge: it is reported, not held
to the budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from tests.bench.output_checks import BenchOutputError

BUDGET_MB: Final = 300.0
BRIDGE_SERVICES: Final = frozenset({"ingest", "reconcile", "publish"})


def service_of(process_name: str) -> str:
    """The service a stack process runs: ``reconcile-2`` (a second replica) is ``reconcile``."""
    base, _, suffix = process_name.rpartition("-")
    return base if base and suffix.isdigit() else process_name


def over_budget(rss_mb: Mapping[str, float], budget_mb: float = BUDGET_MB) -> list[str]:
    """The bridge processes whose peak RSS exceeds ``budget_mb`` (empty: all within), each with its figure."""
    return [
        f"{name} peaked at {mb:,.1f} MB RSS, over the {budget_mb:,.0f} MB budget"
        for name, mb in sorted(rss_mb.items())
        if service_of(name) in BRIDGE_SERVICES and mb > budget_mb
    ]


def check_budget(rss_mb: Mapping[str, float], what: str, budget_mb: float = BUDGET_MB) -> None:
    """Fail the scenario (no figure) when a bridge process went over the budget."""
    problems = over_budget(rss_mb, budget_mb)
    if problems:
        raise BenchOutputError(f"{what}: over the memory budget, no figure reported", problems=problems)


def flatness(small: Mapping[str, float], large: Mapping[str, float]) -> dict[str, float]:
    """Peak RSS at the larger size over that at the smaller, per bridge process measured at both (1.0: flat)."""
    return {
        name: round(large[name] / small[name], 2)
        for name in sorted(small.keys() & large.keys())
        if service_of(name) in BRIDGE_SERVICES and small[name] > 0
    }
