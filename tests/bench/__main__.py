"""``make bench``: run the benchmarks on the local stack, write var/bench/results.json, print a table.

Scenarios are chosen with BENCH_SCENARIOS (comma-separated; default all): import_1m, import_10m, export_1m,
streaming. Figures are measurements, not assertions: tests check behaviour, this reports speed.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from shared.settings import DEFAULT_VAR_DIR, REPO_ROOT
from tests.bench.export_bench import run_export
from tests.bench.import_bench import run_import
from tests.bench.stack import exclusive_run, stop_on_sigterm
from tests.bench.streaming_bench import run_streaming

OUT = DEFAULT_VAR_DIR / "bench"


def _machine() -> dict[str, Any]:
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "cpu": cpu,
        "python": platform.python_version(),
    }


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# BENCH_SCALE shrinks every scenario (e.g. 0.01 for a quick check of the harness); figures are only
# comparable at 1.
SCALE = float(os.environ.get("BENCH_SCALE", "1"))


def _n(count: int) -> int:
    return max(1000, int(count * SCALE))


SCENARIOS: dict[str, Callable[[Path], Awaitable[dict[str, Any]]]] = {
    "import_1m": lambda work: run_import(work, _n(1_000_000)),
    "import_10m": lambda work: run_import(work, _n(10_000_000)),
    "export_1m": lambda work: run_export(work, _n(1_000_000)),
    "streaming": lambda work: run_streaming(work, rate=5000, seconds=max(2, int(60 * SCALE))),
}


async def main() -> int:
    stop_on_sigterm()
    wanted = [s for s in os.environ.get("BENCH_SCENARIOS", ",".join(SCENARIOS)).split(",") if s]
    unknown = [s for s in wanted if s not in SCENARIOS]
    if unknown:
        print(f"unknown scenarios {unknown}; known: {list(SCENARIOS)}", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "machine": _machine(),
        "commit": _commit(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    rss: dict[str, float] = {}
    for name in wanted:
        work = OUT / "work" / name
        shutil.rmtree(work, ignore_errors=True)
        figures = await SCENARIOS[name](work)
        for service, mb in figures.pop("rss_mb", {}).items():
            rss[service] = max(rss.get(service, 0.0), mb)
        results[name] = figures
        shutil.rmtree(work, ignore_errors=True)
    results["rss_mb"] = rss
    (OUT / "results.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print()
    print(f"{'scenario':<14} figures")
    for name in wanted:
        print(f"{name:<14} " + ", ".join(f"{k}={v}" for k, v in results[name].items()))
    print(f"{'rss_mb':<14} " + ", ".join(f"{k}={v}" for k, v in rss.items()))
    print(f"\nwritten to {OUT / 'results.json'}")
    return 0


if __name__ == "__main__":
    with exclusive_run("bench"):
        sys.exit(asyncio.run(main()))
