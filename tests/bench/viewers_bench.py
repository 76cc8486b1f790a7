"""Page viewers during an import: the import's time with and without 50 viewers reloading the status page.

The same import as ``import_1m`` (tests/bench/import_bench.py), each time on a fresh stack: once alone, then
while ``VIEWERS`` clients reload reconcile's page and ``/api/status`` (each with a bearer token: the
credential check is part of what they cost), every ``BENCH_VIEWER_INTERVAL_S`` seconds each (default 1 s:
30 times the page's own refresh), and once more with no pause at all (a stress figure: 50 clients in a loop
on the same 2 cores as the services), then alone again: the two runs alone show the machine's noise. The
page reads through its own pool, one read and one rendering serve every viewer, so the import's time should
stay within that noise.
Reported: the times, their ratios to the first, the viewers' requests, statuses and latency percentiles.
The viewers run in the benchmark's own process: on this machine they take CPU the services would have.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp

from tests.bench.campaign import PLATFORM_SEED, load_recipients
from tests.bench.import_bench import _wait_runs, write_outbound
from tests.bench.stack import bench_stack

VIEWERS: Final = 50
TOKEN: Final = "bench-viewer-token-0123456789"
AUDIENCES: Final = ["visitors-5001", "emails-5002"]


@dataclass
class ViewerStats:
    statuses: Counter[int] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_s) or [0.0]
        return {
            "requests": len(self.latencies_s),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1 if len(ordered) > 1 else 0] * 1000, 1),
            "max_ms": round(ordered[-1] * 1000, 1),
        }


async def _viewer(url: str, stats: ViewerStats, stop: asyncio.Event, interval_s: float) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
        paths = ("/", "/api/status")
        n = 0
        while not stop.is_set():
            started = time.perf_counter()
            try:
                async with session.get(url + paths[n % 2]) as resp:
                    await resp.read()
                    stats.statuses[resp.status] += 1
            except (aiohttp.ClientError, TimeoutError):
                stats.statuses[0] += 1
            stats.latencies_s.append(time.perf_counter() - started)
            n += 1
            if interval_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)


async def _one_import(workdir: Path, n: int, viewers: int, interval_s: float = 0.0) -> dict[str, Any]:
    async with bench_stack(workdir) as stack:
        await load_recipients(stack.pool, n)
        await stack.ecsim_admin("POST", "/sim/seed", PLATFORM_SEED)
        credentials = workdir / "page-credentials"
        credentials.write_text(f"token:bench:{TOKEN}\n")
        reconcile = await stack.start("reconcile", STATUS_PAGE_CREDENTIALS_FILE=str(credentials))
        await stack.start("ingest", MEMBERSHIP_BATCH_SIZE="10000")
        batches = write_outbound(workdir / "staging", n)
        zone = workdir / "import"
        zone.mkdir(parents=True, exist_ok=True)
        stats, stop = ViewerStats(), asyncio.Event()
        tasks = [asyncio.create_task(_viewer(reconcile.url, stats, stop, interval_s)) for _ in range(viewers)]
        started = time.perf_counter()
        for batch, parts in batches:
            for part in parts:
                os.replace(workdir / "staging" / part.name, zone / part.name)
            os.replace(workdir / "staging" / batch.info_name, zone / batch.info_name)
        try:
            await _wait_runs(stack, AUDIENCES, timeout=max(600, n / 2000))
            elapsed = time.perf_counter() - started
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
    return {"seconds": round(elapsed, 2), **({"viewers": stats.summary()} if viewers else {})}


async def run_import_with_viewers(workdir: Path, n: int, viewers: int = VIEWERS) -> dict[str, Any]:
    interval_s = float(os.environ.get("BENCH_VIEWER_INTERVAL_S", "1.0"))
    print(f"import {n:,} alone ...", flush=True)
    alone = await _one_import(workdir / "alone", n, 0)
    print(f"import {n:,} alone: {alone['seconds']}s; with {viewers} viewers every {interval_s}s ...", flush=True)
    paced = await _one_import(workdir / "paced", n, viewers, interval_s)
    print(f"import {n:,}: {paced['seconds']}s; with {viewers} viewers in a loop ...", flush=True)
    looping = await _one_import(workdir / "looping", n, viewers)
    print(f"import {n:,}: {looping['seconds']}s; alone again (the noise) ...", flush=True)
    again = await _one_import(workdir / "again", n, 0)
    print(f"import {n:,} alone again: {again['seconds']}s", flush=True)
    return {
        "ids": n,
        "viewers": viewers,
        "viewer_interval_s": interval_s,
        "seconds_alone": alone["seconds"],
        "seconds_alone_again": again["seconds"],
        "seconds_paced_viewers": paced["seconds"],
        "ratio_paced": round(paced["seconds"] / alone["seconds"], 3),
        "seconds_looping_viewers": looping["seconds"],
        "ratio_looping": round(looping["seconds"] / alone["seconds"], 3),
        "page_paced": paced["viewers"],
        "page_looping": looping["viewers"],
    }
