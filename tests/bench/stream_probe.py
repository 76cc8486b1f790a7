"""What a streaming run's pipeline is doing, sampled each second: each stage's backlog and Postgres's waits.

A run whose latency runs away says only that something fell behind; the probe says which stage: ingest's lag on
``segment-events`` (its input), reconcile's on ``audience-membership``, and the bench database's sessions by
what they wait for (a lock, I/O, a lightweight lock...), so that a stall shows where it happened.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.bench.stack import BenchStack

LAGS = {"ingest": "segment-events", "reconcile": "audience-membership"}


def lag_of(metrics_text: str, topic: str) -> int:
    """The sum over its partitions of ``ab_consumer_lag`` for ``topic`` (any prefix) in a /metrics page."""
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("ab_consumer_lag{") and f'{topic}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


FLUSH_WAITS = {
    "ab_segment_events_flush_wait_seconds_count": "flush_waits",
    "ab_segment_events_flush_wait_seconds_sum": "flush_wait_s",
    "ab_segment_events_flush_wait_timeouts_total": "flush_wait_timeouts",
}


def flush_waits_of(metrics_text: str) -> dict[str, float]:
    """Ingest's waits for reconcile (``services/ingest/flush_window.py``) in its /metrics page: how many flushes
    went through the window, the seconds they waited in all, and the waits that reached their bound."""
    found = {}
    for line in metrics_text.splitlines():
        name, _, value = line.partition(" ")
        if name in FLUSH_WAITS:
            found[FLUSH_WAITS[name]] = round(float(value), 3)
    return found


@dataclass
class Sample:
    at: float
    lags: dict[str, int]
    waits: dict[str, int]


@dataclass
class StreamProbe:
    stack: BenchStack
    started: float = field(default_factory=time.perf_counter)
    samples: list[Sample] = field(default_factory=list)

    async def _lags(self, session: aiohttp.ClientSession) -> dict[str, int]:
        lags = {}
        for service, topic in LAGS.items():
            try:
                async with session.get(self.stack.services[service].url + "/metrics") as resp:
                    lags[service] = lag_of(await resp.text(), topic)
            except (aiohttp.ClientError, TimeoutError):
                lags[service] = -1
        return lags

    async def flush_waits(self) -> dict[str, float]:
        """Ingest's waits for reconcile so far (empty if its page cannot be read)."""
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
                session.get(self.stack.services["ingest"].url + "/metrics") as resp,
            ):
                return flush_waits_of(await resp.text())
        except (aiohttp.ClientError, TimeoutError):
            return {}

    async def _waits(self) -> dict[str, int]:
        rows = await self.stack.pool.fetch(
            """SELECT coalesce(wait_event_type || ':' || wait_event, state) AS what, count(*) AS n
                 FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
                  AND state <> 'idle' GROUP BY 1"""
        )
        return {r["what"]: r["n"] for r in rows}

    async def run(self, interval: float = 1.0) -> None:
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                lags, waits = await asyncio.gather(self._lags(session), self._waits())
                self.samples.append(Sample(time.perf_counter() - self.started, lags, waits))
                await asyncio.sleep(interval)

    def lines(self, window_s: float = 5.0) -> list[str]:
        """Per window: the highest lag of each stage and the database's waits seen (summed over the samples)."""
        windows: dict[int, list[Sample]] = {}
        for s in self.samples:
            windows.setdefault(int(s.at // window_s), []).append(s)
        out = []
        for number in sorted(windows):
            group = windows[number]
            lags = {k: max(s.lags.get(k, -1) for s in group) for k in LAGS}
            waits: Counter[str] = Counter()
            for s in group:
                waits.update(s.waits)
            shown = ", ".join(f"{k} {v}" for k, v in waits.most_common(4))
            out.append(
                f"  {number * window_s:5.0f}s  lag ingest {lags['ingest']:7d}  reconcile {lags['reconcile']:4d}  "
                f"db: {shown}"
            )
        return out


def summary(probe: StreamProbe) -> dict[str, Any]:
    """The highest lag of each stage over the run."""
    return {f"max_lag_{k}": max((s.lags.get(k, -1) for s in probe.samples), default=-1) for k in LAGS}
