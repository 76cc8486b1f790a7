"""Export benchmark: a list of N recipients shared by declared ID (hashed e-mails), from the request to the
run ``succeeded``: its inbound files uploaded, processed by ecsim (no added delay) and confirmed by the
platform's receipts, which publish polls; the platform's trait then checked to hold exactly the list's IDs. The
time to the uploaded files is kept as a phase."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from services.reconcile.catalog import ensure_list
from shared.kafka import Producer, ensure_topics
from shared.messages import AudienceExportRequest
from shared.settings import KafkaSettings
from tests.bench.campaign import PLATFORM_SEED, hashed_email, load_recipients
from tests.bench.output_checks import id_set_mismatches, require
from tests.bench.stack import BenchStack, bench_stack


async def _wait_export(stack: BenchStack, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = await stack.pool.fetchrow("SELECT state, reason, counts FROM run WHERE direction = 'export'")
        if row is not None and row["state"] in ("succeeded", "failed", "blocked"):
            if row["state"] != "succeeded":
                raise RuntimeError(f"export run ended {row['state']}: {row['reason']}")
            return dict(row)
        await asyncio.sleep(0.05)
    raise TimeoutError(f"export run not finished after {timeout}s")


async def _load_list(stack: BenchStack, n: int) -> None:
    """N recipients, all members of the list to export."""
    await load_recipients(stack.pool, n)
    async with stack.pool.acquire() as conn:
        list_id = await ensure_list(conn, "bench-export")
        await conn.execute(
            "INSERT INTO list_member (list_id, recipient_id) SELECT $1, recipient_id FROM recipient", list_id
        )
        # A campaign database at rest: vacuumed and analysed, so autovacuum does not wake up on the freshly
        # loaded tables in the middle of the measurement.
        await conn.execute("VACUUM (ANALYZE) recipient, visitor_link, list_member")


async def _check_trait(stack: BenchStack, n: int) -> None:
    """The platform's trait (ecsim) must hold exactly the list's hashed e-mails, each once."""
    sid = await stack.pool.fetchval("SELECT platform_trait_id FROM shared_audience WHERE direction = 'export'")
    if sid is None:
        require(["the export audience has no platform trait"], f"export {n:,}")
    held = await stack.ecsim_admin("GET", f"/sim/traits/{sid}/members?ids=true&pageSize={n + 1000}")
    require(id_set_mismatches((hashed_email(i) for i in range(1, n + 1)), held["ids"]), f"export {n:,}")


async def run_export(workdir: Path, n: int) -> dict[str, Any]:
    # ecsim processes inbound files as soon as they land (the platform's hours of latency set to nothing):
    # the headline is the time until the platform has applied the run and publish knows it.
    async with bench_stack(workdir, ECSIM_INBOUND_POLL_INTERVAL_S="0.1", ECSIM_INBOUND_DELAY_S="0") as stack:
        print(f"export {n:,}: loading {n:,} recipients into a list ...", flush=True)
        await _load_list(stack, n)
        await stack.ecsim_admin("POST", "/sim/seed", PLATFORM_SEED)
        await stack.start("reconcile", EXPORT_BATCH_SIZE="10000")
        await stack.start("publish", EXPORT_RECEIPT_POLL_S="0.1", EXPORT_RECEIPT_POLL_MAX_S="0.5")
        settings = KafkaSettings(topic_prefix=stack.topic_prefix)
        topic = f"{stack.topic_prefix}audience-export-requests"
        await ensure_topics(settings, [topic])
        producer = Producer(settings, "bench")
        await producer.start()
        request = AudienceExportRequest(
            list_id="bench-export",
            audience_name="Bench",
            data_source="hashed-emails",
            mode="append",
            requested_by="bench",
        )
        print(f"export {n:,}: requesting ...", flush=True)
        requested_at = await stack.pool.fetchval("SELECT clock_timestamp()")
        started = time.perf_counter()
        await producer.send_model(topic, request)
        await producer.stop()
        await _wait_export(stack, timeout=max(600, n / 2000))
        elapsed = time.perf_counter() - started
        # Where the time went, from the ledgers' timestamps (Postgres' clock, like requested_at).
        marks = await stack.pool.fetchrow(
            """SELECT min(b.staged_at) AS first_staged, max(b.staged_at) AS last_staged,
                      (SELECT max(written_at) FROM published_file) AS files_written,
                      (SELECT count(*) FROM published_file) AS files,
                      (SELECT max(receipt_at) FROM published_file) AS receipts_in,
                      (SELECT finished_at FROM run WHERE direction = 'export') AS confirmed
                 FROM published_batch b"""
        )
        assert marks is not None
        await _check_trait(stack, n)
        rss = stack.rss()

    def since_request(at: Any) -> float:
        return round(float((at - requested_at).total_seconds()), 2)

    to_files = since_request(marks["files_written"])
    return {
        "ids": n,
        # The headline: from the request to the run succeeded, the platform's receipts in (ecsim delay 0).
        "seconds": round(elapsed, 2),
        "ids_per_s": round(n / elapsed),
        # From the request to the uploaded files (the headline before runs followed the platform).
        "uploaded_seconds": to_files,
        "uploaded_ids_per_s": round(n / to_files),
        "phases_s": {
            "first_batch_staged": since_request(marks["first_staged"]),
            "last_batch_staged": since_request(marks["last_staged"]),
            "files_uploaded": to_files,
            "receipts_in": since_request(marks["receipts_in"]),
            "succeeded": since_request(marks["confirmed"]),
        },
        "files": marks["files"],
        "rss_mb": rss,
    }
