"""The fault scenario's checks of outcomes: every list and the platform exact, every run final, each batch
applied once by the bridge's ledgers, and no secret in any log line or status event."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.reconcile.exporting import export_audience_id
from shared.messages import AudienceExportRequest
from shared.settings import KafkaSettings
from tests.bench.campaign import ecid, hashed_email
from tests.helpers import read_topic

if TYPE_CHECKING:
    from tests.chaos.scenario import Chaos

CLIENT_SECRET = "ecsim-local-secret"


async def verify_outcomes(chaos: Chaos, expected: dict[str, set[int]], requests: list[AudienceExportRequest]) -> None:
    pool = chaos.stack.pool
    check = chaos.report.checks
    left = set(range(1, 100 * chaos.waves + 1))
    expected = {**expected, "full-visitors": expected["full-visitors"] - left}
    for audience_id, members in expected.items():
        rows = await pool.fetch(
            "SELECT recipient_id FROM list_member JOIN shared_audience USING (list_id) WHERE audience_id = $1",
            audience_id,
        )
        actual = {r["recipient_id"] for r in rows}
        check.append(
            (
                f"list of {audience_id} is exact",
                actual == members,
                f"{len(actual):,} members, {len(members):,} expected, {len(actual ^ members)} differ",
            )
        )
    runs = await pool.fetch("SELECT run_id, direction, state, batches_applied, last_seq, reason FROM run")
    superseded = [r for r in runs if r["state"] == "failed" and "superseded" in (r["reason"] or "")]
    # Export runs the platform refused in whole or in part, as ecsim was told to: their IDs went again.
    refused = [
        r
        for r in runs
        if r["direction"] == "export" and r["state"] in ("failed", "partial") and _refused_by_platform(r["reason"])
    ]
    others = [r for r in runs if r not in superseded and r not in refused]
    check.append(
        (
            "every run reached a final state",
            all(r["state"] == "succeeded" for r in others),
            f"{sum(r['state'] == 'succeeded' for r in others)} succeeded of {len(others)}"
            f" (+{len(superseded)} export attempts superseded after a crash,"
            f" +{len(refused)} export runs the platform refused in whole or in part, as told)"
            + "".join(f"; {r['direction']} {r['state']}: {r['reason']}" for r in others if r["state"] != "succeeded"),
        )
    )
    imports = [r for r in runs if r["direction"] == "import"]
    once = all(r["last_seq"] is not None and r["batches_applied"] == r["last_seq"] + 1 for r in imports)
    applied = await pool.fetchval("SELECT count(*) FROM applied_batch")
    check.append(
        (
            "every import batch applied exactly once",
            once and applied == sum(r["batches_applied"] for r in imports),
            f"{applied} batches in applied_batch",
        )
    )
    staged = await pool.fetchval("SELECT count(*) FROM import_stage_id")
    check.append(("no staged snapshot left behind", staged == 0, f"{staged} IDs left in import_stage_id"))
    files = await pool.fetch("SELECT batch_root, state FROM processed_file")
    check.append(
        (
            "every file batch processed once",
            len(files) == len(chaos.delivered) and all(f["state"] == "processed" for f in files),
            f"{len(files)} batches recorded for {len(chaos.delivered)} delivered, "
            f"states {sorted({f['state'] for f in files})}",
        )
    )
    for request, step, source, id_of, gone in (
        (requests[0], 2, "hashed-emails", hashed_email, chaos.dropped),
        (requests[1], 3, "visitors", ecid, set()),
    ):
        audience_id = export_audience_id(source, request.audience_name)
        want = {id_of(r) for r in range(step, chaos.config.recipients + 1, step) if r not in gone}
        exported = {
            r["id"] for r in await pool.fetch("SELECT id FROM exported_member WHERE audience_id = $1", audience_id)
        }
        trait = await pool.fetchval("SELECT platform_trait_id FROM shared_audience WHERE audience_id = $1", audience_id)
        held = await _trait_members(chaos, int(trait)) if trait is not None else set()
        check.append(
            (
                f"platform holds exactly the {source} export",
                held == want == exported,
                f"{len(want):,} expected, {len(exported):,} recorded, {len(held):,} on the platform",
            )
        )


async def _trait_members(chaos: Chaos, trait: int) -> set[str]:
    await chaos.stack.ecsim_admin("POST", "/sim/inbound/scan")
    ids: set[str] = set()
    page = 0
    while True:
        body = await chaos.stack.ecsim_admin("GET", f"/sim/traits/{trait}/members?ids=true&page={page}&pageSize=50000")
        ids.update(body["ids"])
        if len(body["ids"]) < 50000:
            return ids
        page += 1


async def verify_secrets(chaos: Chaos) -> None:
    leaks = []
    for log in chaos.stack.workdir.glob("*.log"):
        text = log.read_text(errors="replace")
        for secret in (CLIENT_SECRET, "audience_bridge:audience_bridge@"):
            if secret in text:
                leaks.append(f"{log.name}: {secret[:6]}…")
        if "Bearer ey" in text or 'access_token":"' in text:
            leaks.append(f"{log.name}: a token")
    status = await read_topic(
        KafkaSettings().kafka_bootstrap_servers,
        f"{chaos.stack.topic_prefix}audience-sync-status",
        expect=10**9,
        timeout=5,
    )
    for record in status:
        value = record.value or b""
        if CLIENT_SECRET.encode() in value or b"Bearer" in value:
            leaks.append("audience-sync-status")
    chaos.report.checks.append(
        (
            "no secret in any log line or status event",
            not leaks,
            f"{len(status)} status events and {len(list(chaos.stack.workdir.glob('*.log')))} "
            f"logs scanned; leaks: {leaks or 'none'}",
        )
    )


def _refused_by_platform(reason: str | None) -> bool:
    """A run ended by the platform's receipts refusing lines or a file (services.publish.receipts)."""
    text = reason or ""
    return "the platform applied none" in text or "the platform rejected" in text or "chaos: file rejected" in text
