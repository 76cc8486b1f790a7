"""``make chaos``: the full fault scenario on the local stack; exit 0 only when every check holds."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys

from shared.settings import DEFAULT_VAR_DIR
from tests.bench.stack import exclusive_run, stop_on_sigterm
from tests.chaos.report import dumps
from tests.chaos.scenario import ChaosConfig, run_chaos


async def main() -> int:
    stop_on_sigterm()
    config = ChaosConfig(
        recipients=int(os.environ.get("CHAOS_RECIPIENTS", 300_000)),
        ids_per_import=int(os.environ.get("CHAOS_IDS_PER_IMPORT", 200_000)),
        kills_per_service=int(os.environ.get("CHAOS_KILLS", 3)),
        batch_size=int(os.environ.get("CHAOS_BATCH_SIZE", 2000)),
        # 0: no broker (or Postgres) restart: the shared ones serve everyone using this checkout's stack.
        restart_broker=os.environ.get("CHAOS_RESTART_KAFKA", "1") != "0",
        restart_postgres=os.environ.get("CHAOS_RESTART_POSTGRES", "1") != "0",
        fault_hold_s=float(os.environ.get("CHAOS_FAULT_HOLD_S", 8)),
        zone_hang_s=float(os.environ.get("CHAOS_ZONE_HANG_S", 15)),
        kafka_faults=os.environ.get("CHAOS_KAFKA_FAULTS", "1") != "0",
    )
    work = DEFAULT_VAR_DIR / "chaos"
    shutil.rmtree(work, ignore_errors=True)
    report = await run_chaos(work, config)
    report.print()
    (DEFAULT_VAR_DIR / "chaos-report.json").write_bytes(dumps(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    with exclusive_run("chaos"):
        sys.exit(asyncio.run(main()))
