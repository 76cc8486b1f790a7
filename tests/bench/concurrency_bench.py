"""Concurrency benchmark: several audiences' full snapshots imported at once by two reconcile replicas (two
processes in one consumer group sharing the membership topic's partitions), against one audience alone on the
same stack just before; every list checked exact.

Each audience gets a batch of its own (its own segment, alternately ECIDs of data source 1001 and hashed e-mails
of 1002), ``n`` IDs of which 90% are recipients 1.. and the rest unknown, so every list holds the same recipients
and keeps the same number of unmatched IDs. The audience imported alone is not one of the concurrent ones: each
concurrent snapshot starts from an empty list, as the alone one did.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.reconcile.catalog import CatalogImportAudience, upsert_import_audience
from shared.formats.outbound import OutboundFileName
from tests.bench.campaign import PLATFORM_SEED, VISITORS, ecid, hashed_email, load_recipients
from tests.bench.import_bench import _write_batch
from tests.bench.output_checks import ListExpectation, check_lists
from tests.bench.stack import BenchStack, bench_stack
from tests.fixtures.stack import spawn_service
from tests.helpers import eventually

FIRST_SEGMENT = 5100
ENDED = (
    "succeeded",
    "partial",
    "failed",
    "blocked",
    "cancelled",
)  # the alone audience's; the concurrent ones follow it


@dataclass(frozen=True, slots=True)
class BenchAudience:
    audience_id: str
    segment: int
    by_ecid: bool  # else hashed e-mails

    @property
    def dpid(self) -> int:
        return 1001 if self.by_ecid else 1002

    def expectation(self, n: int) -> ListExpectation:
        matchable = n * 9 // 10
        reason = "unknown_ecid" if self.by_ecid else "unknown_declared_id"
        return ListExpectation(self.audience_id, 1, matchable, n - matchable, reason)


def bench_audiences(count: int) -> tuple[BenchAudience, list[BenchAudience]]:
    """The audience imported alone and the ``count`` imported at once, ECIDs and hashed e-mails alternately."""
    every = [
        BenchAudience(f"{'visitors' if k % 2 == 0 else 'emails'}-{FIRST_SEGMENT + k}", FIRST_SEGMENT + k, k % 2 == 0)
        for k in range(count + 1)
    ]
    return every[0], every[1:]


def summarise_concurrency(
    ids_per_audience: int, alone_s: float, finished_s: Mapping[str, float]
) -> dict[str, float | int]:
    """The figures of a concurrent import: ``finished_s`` is each concurrent audience's time from the files'
    arrival to its run ``succeeded``; ``alone_s`` one audience's time alone."""
    if not finished_s or alone_s <= 0 or min(finished_s.values()) <= 0:
        raise ValueError(f"no timings to summarise: alone {alone_s}, concurrent {dict(finished_s)}")
    total = ids_per_audience * len(finished_s)
    slowest = max(finished_s.values())
    alone_rate = ids_per_audience / alone_s
    return {
        "audiences": len(finished_s),
        "ids": total,
        "seconds": round(slowest, 2),
        "ids_per_s": round(total / slowest),
        "slowest_audience_s": round(slowest, 2),
        "fastest_audience_s": round(min(finished_s.values()), 2),
        "alone_seconds": round(alone_s, 2),
        "alone_ids_per_s": round(alone_rate),
        # > 1: the replicas and cores do more together than one audience alone uses.
        "throughput_vs_alone": round(total / slowest / alone_rate, 2),
        "slowest_vs_alone": round(slowest / alone_s, 2),
    }


def _rows(audience: BenchAudience, n: int) -> Iterator[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    matchable = n * 9 // 10
    key = ecid if audience.by_ecid else hashed_email
    for i in range(n):
        yield (key(i + 1) if i < matchable else key(10**15 + i), (audience.segment,), ())


def _write(staging: Path, audience: BenchAudience, n: int, stamp: int) -> list[Path]:
    """The audience's batch in ``staging``; returns its files in the order they must arrive (.info last)."""
    name = OutboundFileName("s3", 7000 + audience.segment, audience.dpid, "full", stamp)
    batch, parts = _write_batch(staging, name, _rows(audience, n))
    return [staging / p.name for p in parts] + [staging / batch.info_name]


def _deliver(files: list[Path], zone: Path) -> None:
    for path in files:
        os.replace(path, zone / path.name)


async def _register(stack: BenchStack, audiences: list[BenchAudience]) -> None:
    seed = {**PLATFORM_SEED, "segments": list(PLATFORM_SEED["segments"])}
    async with stack.pool.acquire() as conn:
        for a in audiences:
            source = VISITORS.name if a.by_ecid else "hashed-emails"
            await upsert_import_audience(
                conn,
                CatalogImportAudience(
                    audience_id=a.audience_id,
                    name=a.audience_id,
                    platform_segment_id=a.segment,
                    data_source=source,
                    list=f"List {a.audience_id}",
                ),
            )
            seed["segments"].append(
                {
                    "sid": a.segment,
                    "name": a.audience_id,
                    "segmentRule": f"{9000 + a.dpid - 1000}T",
                    "dataSourceId": a.dpid,
                    "folderId": 0,
                }
            )
    await stack.ecsim_admin("POST", "/sim/seed", seed)


async def _finish_times(stack: BenchStack, audiences: list[str], started: float, timeout: float) -> dict[str, float]:
    """Each audience's time from ``started`` to its run succeeding (seen by a poll every 50 ms)."""
    finished: dict[str, float] = {}

    async def probe() -> dict[str, float]:
        rows = await stack.pool.fetch(
            "SELECT audience_id, state FROM run WHERE audience_id = ANY($1::text[]) AND state = ANY($2::text[])",
            audiences,
            list(ENDED),
        )
        now = time.perf_counter() - started
        for row in rows:
            if row["state"] != "succeeded":
                raise RuntimeError(f"import run of {row['audience_id']} ended {row['state']}")
            finished.setdefault(row["audience_id"], now)
        return finished

    await eventually(probe, until=lambda done: len(done) == len(audiences), timeout=timeout, interval=0.05)
    return finished


async def run_import_concurrent(workdir: Path, n: int, audiences: int) -> dict[str, Any]:
    alone, together = bench_audiences(audiences)
    async with bench_stack(workdir) as stack:
        print(f"import_concurrent: {audiences} x {n:,} IDs; loading {n:,} recipients ...", flush=True)
        await load_recipients(stack.pool, n)
        await _register(stack, [alone, *together])
        await stack.start("reconcile")
        # The second replica: the same consumer group, so the membership topic's partitions are shared out.
        stack.services["reconcile-2"] = await spawn_service(
            "reconcile", env=stack.env, log_path=workdir / "reconcile-2.log", wait=True
        )
        await stack.start("ingest", MEMBERSHIP_BATCH_SIZE="10000")
        staging, zone = workdir / "staging", workdir / "import"
        zone.mkdir(parents=True, exist_ok=True)
        stamp = int(time.time() * 1000)
        print(f"import_concurrent: one audience alone ({n:,} IDs) ...", flush=True)
        files = await asyncio.to_thread(_write, staging, alone, n, stamp)
        started = time.perf_counter()
        _deliver(files, zone)
        alone_s = (await _finish_times(stack, [alone.audience_id], started, timeout=max(600, n / 2000)))[
            alone.audience_id
        ]
        rss_alone = stack.rss()
        print(f"import_concurrent: alone {alone_s:.1f}s; writing {audiences} batches ...", flush=True)
        batches = [await asyncio.to_thread(_write, staging, a, n, stamp + 1 + k) for k, a in enumerate(together)]
        wal_before = await stack.pool.fetchval("SELECT pg_current_wal_lsn()::text")
        cpu_before = await _cpu_seconds(stack)
        started = time.perf_counter()
        for files in batches:
            _deliver(files, zone)
        ids = [a.audience_id for a in together]
        finished = await _finish_times(stack, ids, started, timeout=max(900, audiences * n / 2000))
        cpu = cpu_per_million(cpu_before, await _cpu_seconds(stack), audiences * n)
        async with stack.pool.acquire() as conn:
            await check_lists(conn, [a.expectation(n) for a in [alone, *together]], "import_concurrent")
            storage = await _storage(conn, wal_before, audiences * n)
        rss = stack.rss()
    return {
        **summarise_concurrency(n, alone_s, finished),
        **storage,
        "cpu_s_per_million_ids": cpu,
        "rss_alone_mb": rss_alone,
        "rss_mb": rss,
    }


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU time a live process has used (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command's closing parenthesis: utime and stime are the 12th and 13th fields.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_million(before: Mapping[str, float], after: Mapping[str, float], ids: int) -> dict[str, float]:
    """CPU seconds each component used per million imported IDs between two readings (the per-core cost)."""
    return {name: round((after[name] - before.get(name, 0.0)) * 1e6 / ids, 2) for name in sorted(after)}


async def _cpu_seconds(stack: BenchStack) -> dict[str, float]:
    """CPU time so far of the bridge's processes and of the benchmark database's Postgres backends (those alive:
    the services' pools keep theirs)."""
    used = {name: process_cpu_seconds(s.process.pid) for name, s in stack.services.items() if name != "ecsim"}
    backends = await stack.pool.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    used["postgres"] = sum(process_cpu_seconds(r["pid"]) for r in backends)
    return used


async def _storage(conn: Any, wal_before: str, ids: int) -> dict[str, float]:
    """What the lists cost Postgres, per member and per imported ID: the inputs of the README's sizing."""
    row = await conn.fetchrow(
        """SELECT pg_total_relation_size('list_member') AS member_bytes,
                  (SELECT count(*) FROM list_member) AS members,
                  pg_total_relation_size('unmatched_id') AS unmatched_bytes,
                  (SELECT count(*) FROM unmatched_id) AS unmatched,
                  pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn) AS wal_bytes""",
        wal_before,
    )
    return {
        "list_member_bytes_per_member": round(row["member_bytes"] / max(1, row["members"]), 1),
        "unmatched_bytes_per_id": round(row["unmatched_bytes"] / max(1, row["unmatched"]), 1),
        "wal_bytes_per_id": round(float(row["wal_bytes"]) / ids, 1),
    }
