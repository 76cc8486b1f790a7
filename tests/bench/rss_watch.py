"""A service's resident memory (VmRSS) sampled every second during a benchmark, and whether it stayed flat (and
its CPU time, to give a figure per unit of work).

A receiver that keeps something per delivery (a cache without bound, a list of futures) grows with the
number of deliveries; the sampled curve shows it where a start/end pair can miss it (a collection that
happened to run just before the last sample). Flat means: over the second half of the run (after the
warm-up: connections, caches, the allocator's arenas), the fitted line rises by at most ``MAX_GROWTH_PCT``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from tests.bench.output_checks import BenchOutputError

MAX_GROWTH_PCT: Final = 20.0
INTERVAL_S: Final = 1.0


def rss_mb(pid: int) -> float:
    """Resident memory (VmRSS) of a live process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchOutputError("no VmRSS for the process", pid=pid)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a live process has used, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (ingest's real-time receiver processes), oldest first."""
    children: list[tuple[int, int]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == pid:
            children.append((int(fields[19]), int(entry.name)))  # (start time, pid)
    return [child for _, child in sorted(children)]


def slope(samples: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (t, value) samples (0 for fewer than 2 distinct times)."""
    n = len(samples)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in samples) / spread


def rss_figures(samples: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """Start, peak and end (MB), the second half's slope (MB/s) and how much its fitted line rose (%)."""
    if not samples:
        raise BenchOutputError("no RSS sample taken")
    half = samples[len(samples) // 2 :]
    rate = slope(half)
    span = half[-1][0] - half[0][0]
    base = sum(v for _, v in half) / len(half) - rate * span / 2  # the fitted line at the half's start
    return {
        "start_mb": round(samples[0][1], 1),
        "peak_mb": round(max(v for _, v in samples), 1),
        "end_mb": round(samples[-1][1], 1),
        "second_half_slope_mb_per_s": round(rate, 3),
        "second_half_growth_pct": round(rate * span / base * 100, 1) if base > 0 else 0.0,
        "samples": len(samples),
    }


def check_flat(figures: dict[str, Any], service: str, max_growth_pct: float = MAX_GROWTH_PCT) -> None:
    """Raise when the second half grew beyond the bound: the run's figures would hide a leak."""
    if figures["second_half_growth_pct"] > max_growth_pct:
        raise BenchOutputError(
            f"{service}'s RSS is not flat: it grew {figures['second_half_growth_pct']}% over the second half of "
            f"the run (bound {max_growth_pct}%)",
            **{k: v for k, v in figures.items() if k != "samples"},
        )


@dataclass
class RssWatch:
    """Samples a process's RSS every ``interval_s`` until stopped."""

    pid: int
    interval_s: float = INTERVAL_S
    samples: list[tuple[float, float]] = field(default_factory=list)

    async def run(self) -> None:
        started = time.monotonic()
        while True:
            self.samples.append((time.monotonic() - started, rss_mb(self.pid)))
            await asyncio.sleep(self.interval_s)
