"""Export benchmarks: N IDs shared from a list, from the request to the run ``succeeded``: its inbound files
uploaded, processed by ecsim (no added delay) and confirmed by the platform's receipts, which publish polls; the
platform's trait then checked to hold exactly the expected IDs. The time to the uploaded files is kept as a phase.

Two shapes of the same N IDs: by declared ID (N recipients, one hashed e-mail each) and by ECID (a third as many
recipients, each with several ECIDs: a recipient's every ECID is exported)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Literal

from services.reconcile.catalog import ensure_list
from shared.kafka import Producer, ensure_topics
from shared.messages import AudienceExportRequest
from shared.settings import KafkaSettings
from tests.bench.campaign import PLATFORM_SEED, ecid, hashed_email, load_recipients
from tests.bench.output_checks import id_set_mismatches, require
from tests.bench.stack import BenchStack, bench_stack


async def _wait_export(stack: BenchStack, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # clock_timestamp(): when the ended run was seen committed (its finished_at is its transaction's start).
        row = await stack.pool.fetchrow(
            "SELECT state, reason, counts, clock_timestamp() AS seen_at FROM run WHERE direction = 'export'"
        )
        if row is not None and row["state"] in ("succeeded", "failed", "blocked"):
            if row["state"] != "succeeded":
                raise RuntimeError(f"export run ended {row['state']}: {row['reason']}")
            return dict(row)
        await asyncio.sleep(0.05)
    raise TimeoutError(f"export run not finished after {timeout}s")


ExportBy = Literal["email", "ecid"]
# The ECID scenario's recipients each hold this many ECIDs (the last ones one fewer when N is not a multiple).
ECIDS_PER_RECIPIENT = 3
DATA_SOURCES: dict[ExportBy, str] = {"email": "hashed-emails", "ecid": "visitors"}


def expected_ids(by: ExportBy, n: int) -> list[str]:
    """The N IDs the platform's trait must hold after the run."""
    return [hashed_email(i) if by == "email" else ecid(i) for i in range(1, n + 1)]


def recipients_for(by: ExportBy, n: int) -> int:
    """How many recipients hold the N IDs: one each by e-mail, several ECIDs each by ECID."""
    return n if by == "email" else -(-n // ECIDS_PER_RECIPIENT)


def extra_ecid_owners(recipients: int, n: int) -> list[tuple[str, int]]:
    """The ECIDs after each recipient's first (``load_recipients`` links ECID i to recipient i): ECIDs
    recipients+1 .. n, dealt round-robin to recipients 1.., so each holds up to ECIDS_PER_RECIPIENT."""
    return [(ecid(i), (i - recipients - 1) % recipients + 1) for i in range(recipients + 1, n + 1)]


async def _load_list(stack: BenchStack, by: ExportBy, n: int) -> None:
    """The recipients holding the N IDs, all members of the list to export."""
    recipients = recipients_for(by, n)
    await load_recipients(stack.pool, recipients)
    async with stack.pool.acquire() as conn:
        if by == "ecid":
            await conn.copy_records_to_table(
                "visitor_link", records=extra_ecid_owners(recipients, n), columns=("ecid", "recipient_id")
            )
        list_id = await ensure_list(conn, "bench-export")
        await conn.execute(
            "INSERT INTO list_member (list_id, recipient_id) SELECT $1, recipient_id FROM recipient", list_id
        )
        # A campaign database at rest: vacuumed and analysed, so autovacuum does not wake up on the freshly
        # loaded tables in the middle of the measurement.
        await conn.execute("VACUUM (ANALYZE) recipient, visitor_link, list_member")


async def _check_trait(stack: BenchStack, by: ExportBy, n: int) -> None:
    """The platform's trait (ecsim) must hold exactly the expected IDs (hashed e-mails or ECIDs), each once."""
    what = f"export {n:,} by {by}"
    sid = await stack.pool.fetchval("SELECT platform_trait_id FROM shared_audience WHERE direction = 'export'")
    if sid is None:
        require(["the export audience has no platform trait"], what)
    held = await stack.ecsim_admin("GET", f"/sim/traits/{sid}/members?ids=true&pageSize={n + 1000}")
    require(id_set_mismatches(expected_ids(by, n), held["ids"]), what)


async def run_export(workdir: Path, n: int, by: ExportBy = "email") -> dict[str, Any]:
    # ecsim processes inbound files as soon as they land (the platform's hours of latency set to nothing):
    # the headline is the time until the platform has applied the run and publish knows it.
    async with bench_stack(workdir, ECSIM_INBOUND_POLL_INTERVAL_S="0.1", ECSIM_INBOUND_DELAY_S="0") as stack:
        print(f"export {n:,} by {by}: loading {recipients_for(by, n):,} recipients into a list ...", flush=True)
        await _load_list(stack, by, n)
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
            data_source=DATA_SOURCES[by],
            mode="append",
            requested_by="bench",
        )
        print(f"export {n:,}: requesting ...", flush=True)
        requested_at = await stack.pool.fetchval("SELECT clock_timestamp()")
        started = time.perf_counter()
        await producer.send_model(topic, request)
        await producer.stop()
        ended = await _wait_export(stack, timeout=max(600, n / 2000))
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
        await _check_trait(stack, by, n)
        rss = stack.rss()

    def since_request(at: Any) -> float:
        return round(float((at - requested_at).total_seconds()), 2)

    to_files = since_request(marks["files_written"])
    return {
        "ids": n,
        "recipients": recipients_for(by, n),
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
            # The run's last transaction (exported_member recorded, the run moved) from its start to its commit.
            "recording_began": since_request(marks["confirmed"]),
            "succeeded": since_request(ended["seen_at"]),
        },
        "files": marks["files"],
        "rss_mb": rss,
    }
