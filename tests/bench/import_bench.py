"""Import benchmark: N IDs of full segment files (half ECIDs, half hashed e-mails, 90% matchable; one batch
per data source, as the platform delivers them) from the import drop zone to list membership, end to end, the
lists checked exact; then the Postgres floor of the same work (tests/bench/import_floor.py), checked likewise."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from shared.formats.lines import PartSummary
from shared.formats.outbound import OutboundFileName, OutboundWriter
from tests.bench.campaign import PLATFORM_SEED, ecid, hashed_email, load_recipients
from tests.bench.import_floor import measure_floor
from tests.bench.output_checks import check_lists, import_expectations
from tests.bench.stack import BenchStack, bench_stack


def _ecid_rows(n: int) -> Any:
    """Half the IDs are ECIDs of segment 5001 (data source 1001), 10% of them unknown."""
    half = n // 2
    matchable = half * 9 // 10
    for i in range(half):
        yield (ecid(i + 1) if i < matchable else ecid(10**15 + i), (5001,), ())


def _email_rows(n: int) -> Any:
    """The other half are hashed e-mails of segment 5002 (data source 1002), 10% of them unknown."""
    half = n // 2
    matchable = half * 9 // 10
    for i in range(n - half):
        yield (hashed_email(half + i + 1) if i < matchable else hashed_email(10**15 + i), (5002,), ())


def write_outbound(staging: Path, n: int) -> list[tuple[OutboundFileName, list[PartSummary]]]:
    """One batch per data source: a file's master DPID says whose IDs it holds (and which lists it feeds)."""
    stamp = int(time.time() * 1000)
    return [
        _write_batch(staging, OutboundFileName("s3", 7001, 1001, "full", stamp), _ecid_rows(n)),
        _write_batch(staging, OutboundFileName("s3", 7002, 1002, "full", stamp + 1), _email_rows(n)),
    ]


def _write_batch(staging: Path, batch: OutboundFileName, rows: Any) -> tuple[OutboundFileName, list[PartSummary]]:
    writer = OutboundWriter(batch, max_part_bytes=64 << 20)
    current = None
    staging.mkdir(parents=True, exist_ok=True)
    handle = None
    for event in writer.write(rows):
        if isinstance(event, bytes):
            if handle is None:
                current = staging / f"part-{batch.batch_root}-{len(writer.parts)}"
                handle = current.open("wb")
            handle.write(event)
        else:
            assert handle is not None
            assert current is not None
            handle.close()
            current.rename(staging / event.name)
            handle = None
    (staging / batch.info_name).write_bytes(writer.info().to_json())
    return batch, writer.parts


async def _wait_runs(stack: BenchStack, audiences: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = await stack.pool.fetch(
            "SELECT audience_id, state FROM run WHERE audience_id = ANY($1::text[])", audiences
        )
        done = {r["audience_id"] for r in states if r["state"] in ("succeeded", "failed", "blocked")}
        if done == set(audiences):
            bad = [r for r in states if r["state"] != "succeeded"]
            if bad:
                raise RuntimeError(f"import runs did not succeed: {[dict(r) for r in bad]}")
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"import runs not finished after {timeout}s")


async def run_import(workdir: Path, n: int) -> dict[str, Any]:
    expected = import_expectations(n)
    async with bench_stack(workdir) as stack:
        print(f"import {n:,}: loading {n:,} recipients ...", flush=True)
        await load_recipients(stack.pool, n)
        await stack.ecsim_admin("POST", "/sim/seed", PLATFORM_SEED)
        await stack.start("reconcile")
        await stack.start("ingest", MEMBERSHIP_BATCH_SIZE="10000")
        print(f"import {n:,}: writing the outbound file ...", flush=True)
        staging = workdir / "staging"
        batches = write_outbound(staging, n)
        zone = workdir / "import"
        zone.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        for batch, parts in batches:
            for part in parts:
                os.replace(staging / part.name, zone / part.name)
            os.replace(staging / batch.info_name, zone / batch.info_name)
        await _wait_runs(stack, [e.audience_id for e in expected], timeout=max(600, n / 2000))
        elapsed = time.perf_counter() - started
        async with stack.pool.acquire() as conn:
            await check_lists(conn, expected, f"import {n:,}")
        rss = stack.rss()
        print(f"import {n:,}: {elapsed:.1f}s end to end, lists exact; measuring the Postgres floor ...", flush=True)
        snapshots = [
            (expected[0], "ecid", [row[0] for row in _ecid_rows(n)]),
            (expected[1], "declared", [row[0] for row in _email_rows(n)]),
        ]
        floor_s = await measure_floor(stack.pool, snapshots)
        async with stack.pool.acquire() as conn:
            await check_lists(conn, expected, f"import {n:,} floor")
    return {
        "ids": n,
        "seconds": round(elapsed, 2),
        "ids_per_s": round(n / elapsed),
        "members": sum(e.members for e in expected),
        "unmatched": sum(e.unmatched for e in expected),
        "floor_seconds": round(floor_s, 2),
        "floor_ratio": round(elapsed / floor_s, 2),
        "rss_mb": rss,
    }
