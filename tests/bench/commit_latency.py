"""Latency to commit: when each sent recipient became visible in a list, seen by a poller reading committed rows.

``list_member.added_at`` is the applying transaction's start (``now()``): it says nothing of how long the
transaction took to commit. The watcher instead asks Postgres, every ``interval`` seconds, which of the recipients
still awaited are members; a row it reads is committed. A recipient's latency is the time the first poll that
saw it was sent minus the time its event was handed to Kafka, both on this process's monotonic clock: at most
``interval`` (plus one poll's time) later than its commit, never earlier.

Where Postgres records commit times (``track_commit_timestamp = on``, as the benchmarks' private clusters do),
``commit_times=True`` ends each latency at its row's commit time instead (``pg_xact_commit_timestamp`` of the
row's ``xmin``: Postgres's clock as it writes the commit record, before the WAL flush that makes it visible, a
millisecond or two on this machine's disk; a row updated since shows its update's commit, later, never earlier;
the server's clock must be this machine's, as the private clusters' is), and the watcher polls every
``COMMIT_TIMES_INTERVAL_S`` only to learn which rows arrived. Polling every 10 ms cost the database ~15 µs a row
read (its ranges read again each time) and this process a sort of every awaited ID per poll: at 20,000 events/s,
a quarter of a core of Postgres and more of its own, taken from the services it timed, growing with any backlog.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterable, Sequence
from typing import Any

DEFAULT_INTERVAL_S = 0.01
COMMIT_TIMES_INTERVAL_S = 0.1


def percentiles(latencies_ms: Sequence[float]) -> dict[str, float]:
    """p50, p95 and p99 of the latencies (inclusive method: a quantile is never beyond the largest)."""
    if len(latencies_ms) < 2:
        raise ValueError(f"need at least 2 latencies, got {len(latencies_ms)}")
    q = statistics.quantiles(latencies_ms, n=100, method="inclusive")
    return {"p50_ms": round(q[49], 1), "p95_ms": round(q[94], 1), "p99_ms": round(q[98], 1)}


def awaited_ranges(awaited: Iterable[int]) -> tuple[list[int], list[int]]:
    """The runs of consecutive IDs among ``awaited``, as their lowest and highest IDs."""
    lows: list[int] = []
    highs: list[int] = []
    for rid in sorted(awaited):
        if highs and rid == highs[-1] + 1:
            highs[-1] = rid
        else:
            lows.append(rid)
            highs.append(rid)
    return lows, highs


_MEMBERS = """SELECT m.recipient_id FROM unnest($2::bigint[], $3::bigint[]) AS r (lo, hi),
                     LATERAL (SELECT recipient_id FROM list_member
                               WHERE list_id = $1 AND recipient_id BETWEEN r.lo AND r.hi OFFSET 0) AS m"""
_COMMIT_TIMES = """SELECT m.recipient_id, pg_xact_commit_timestamp(m.xmin) AS committed
                     FROM unnest($2::bigint[], $3::bigint[]) AS r (lo, hi),
                          LATERAL (SELECT recipient_id, xmin FROM list_member
                                    WHERE list_id = $1 AND recipient_id BETWEEN r.lo AND r.hi OFFSET 0) AS m"""


async def records_commit_times(pool: Any) -> bool:
    """Whether the server records commit times (``track_commit_timestamp``, set at its start)."""
    return bool(await pool.fetchval("SELECT current_setting('track_commit_timestamp') = 'on'"))


class CommitWatch:
    """Polls list ``list_id`` for the recipients announced with :meth:`sent` until each is seen."""

    def __init__(self, pool: Any, list_id: int, *, interval: float | None = None, commit_times: bool = False) -> None:
        self.pool = pool
        self.list_id = list_id
        self.commit_times = commit_times
        default = COMMIT_TIMES_INTERVAL_S if commit_times else DEFAULT_INTERVAL_S
        self.interval = default if interval is None else interval
        # Wall clock minus this process's monotonic clock: a commit time (wall) on the clock the sends are timed by.
        self._wall_minus_perf = time.time() - time.perf_counter()
        self.awaited: dict[int, float] = {}
        self.latencies_ms: list[float] = []
        # (sent at, latency in ms) of each recipient seen: when in the run the latency was spent (a timeline).
        self.seen: list[tuple[float, float]] = []
        self.polls = 0
        # What the polls cost (rows read, seconds spent).
        self.rows_read = 0
        self.most_rows = 0
        self.poll_seconds = 0.0
        self.lowest = 0
        self.highest = 0

    def sent(self, recipient_ids: Iterable[int], at: float) -> None:
        """Recipients whose events were handed to Kafka at ``at`` (``time.perf_counter()``)."""
        for rid in recipient_ids:
            if not self.awaited or rid < self.lowest:
                self.lowest = rid
            self.awaited.setdefault(rid, at)
            self.highest = max(self.highest, rid)

    def _narrow(self) -> None:
        # Between polls the lowest awaited recipient only moves up (to the next one not seen yet): over a run it
        # walks the range of IDs once.
        while self.awaited and self.lowest not in self.awaited:
            self.lowest += 1

    async def poll_once(self) -> int:
        """One look at the committed rows; returns how many awaited recipients it found."""
        if not self.awaited:
            return 0
        asked = time.perf_counter()
        # The members among the runs of consecutive awaited recipients (an index range each): every awaited one
        # that is committed is among them, and none seen before. One range from the lowest to the highest awaited
        # one read again, every 10 ms, each member committed since a straggler below them (events spread over the
        # partitions): thousands of rows a poll in a normal run, tens of thousands once a backlog built, enough
        # to slow the very services it timed; asking for each awaited ID by value cost a probe per ID instead.
        # OFFSET 0 keeps the ranges a nested loop of index scans (never a scan of the whole list).
        lows, highs = awaited_ranges(self.awaited)
        found = await self.pool.fetch(_COMMIT_TIMES if self.commit_times else _MEMBERS, self.list_id, lows, highs)
        self.polls += 1
        self.rows_read += len(found)
        self.most_rows = max(self.most_rows, len(found))
        self.poll_seconds += time.perf_counter() - asked
        seen = 0
        for row in found:
            at = self.awaited.pop(row["recipient_id"], None)
            if at is not None:
                committed = row["committed"] if self.commit_times else None
                # A row without a commit time (a frozen xmin; never within a run) ends at the poll, as without them.
                ended = asked if committed is None else committed.timestamp() - self._wall_minus_perf
                latency = (ended - at) * 1000
                self.latencies_ms.append(latency)
                self.seen.append((at, latency))
                seen += 1
        if seen:
            self._narrow()
        return seen

    async def watch(self, expected: int, timeout: float) -> None:
        """Poll until ``expected`` recipients have been seen (all of them sent by then)."""
        deadline = time.monotonic() + timeout
        while len(self.latencies_ms) < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expected - len(self.latencies_ms)} of {expected} streamed members not seen")
            started = time.perf_counter()
            await self.poll_once()
            await asyncio.sleep(max(0.0, self.interval - (time.perf_counter() - started)))
