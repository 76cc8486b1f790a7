"""``import_scaling``: the import benchmark at several sizes in one run (1M, 3M, 10M), each on its own fresh stack,
its lists checked exact and its floor measured, to see whether an ID costs the same at every size: the per-ID
time at each size and the ratio of the largest size's to the smallest's (the target: within 1.2)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from tests.bench.import_bench import run_import
from tests.bench.stack import admin_dsn

ImportRun = Callable[[Path, int], Awaitable[dict[str, Any]]]


def size_label(n: int) -> str:
    """``1m``, ``3m``, ``10m``, ``250k``: a size as the figures name it."""
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    if n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


def scaling_figures(by_size: Sequence[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """Each size's import figures as per-ID times (µs, the system's and the floor's), its rate and floor ratio,
    then how the per-ID time grows from the smallest size to the largest (system and floor)."""
    if len(by_size) < 2:
        raise ValueError("import_scaling needs at least two sizes")
    ordered = sorted(by_size, key=lambda pair: pair[0])
    figures: dict[str, Any] = {}
    per_id: dict[int, tuple[float, float]] = {}
    for n, run in ordered:
        us, floor_us = run["seconds"] / n * 1e6, run["floor_seconds"] / n * 1e6
        per_id[n] = (us, floor_us)
        figures[size_label(n)] = {
            "seconds": run["seconds"],
            "us_per_id": round(us, 3),
            "ids_per_s": run["ids_per_s"],
            "floor_us_per_id": round(floor_us, 3),
            "floor_ratio": run["floor_ratio"],
            **({"checkpoints": run["checkpoints"]} if "checkpoints" in run else {}),
        }
    (small, _), (large, _) = ordered[0], ordered[-1]
    name = f"{size_label(large)}_over_{size_label(small)}"
    figures[f"per_id_growth_{name}"] = round(per_id[large][0] / per_id[small][0], 2)
    figures[f"floor_per_id_growth_{name}"] = round(per_id[large][1] / per_id[small][1], 2)
    return figures


async def checkpoints() -> int:
    """Checkpoints the cluster has made so far (timed, requested by WAL volume or forced by another client's
    DROP DATABASE): one in the middle of a load makes every page it touches next write a full image to the WAL,
    a cost that grows with the size of the load rather than with its IDs."""
    conn = await asyncpg.connect(admin_dsn())
    try:
        return int(await conn.fetchval("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"))
    finally:
        await conn.close()


async def run_import_scaling(
    workdir: Path,
    sizes: Sequence[int],
    run: ImportRun = run_import,
    count_checkpoints: Callable[[], Awaitable[int]] = checkpoints,
) -> dict[str, Any]:
    """The import at each size in turn (each checks its lists: a wrong output fails the whole scenario); the
    services' peak memory is the highest over the sizes; each size reports the checkpoints made during it."""
    by_size: list[tuple[int, dict[str, Any]]] = []
    rss: dict[str, float] = {}
    for n in sizes:
        before = await count_checkpoints()
        figures = await run(workdir / size_label(n), n)
        figures["checkpoints"] = await count_checkpoints() - before
        for service, mb in figures.pop("rss_mb", {}).items():
            rss[service] = max(rss.get(service, 0.0), mb)
        by_size.append((n, figures))
    return {**scaling_figures(by_size), "rss_mb": rss}
