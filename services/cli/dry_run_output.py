"""``audience-bridge export … --dry-run``: the run as it would be, computed by reconcile's own queries
(:mod:`services.reconcile.export_dry_run`) straight from Postgres; nothing is recorded or sent."""

from __future__ import annotations

from typing import Any

from services.cli.common import console, run_sync, with_db
from services.reconcile.export_dry_run import DryRun, dry_run
from services.reconcile.export_guard import ExportGuards
from services.reconcile.settings import ReconcileSettings
from shared.messages import AudienceExportRequest
from shared.settings import load_settings

VERDICTS = {
    "would_run": "would run",
    "would_wait": "would wait",
    "would_be_held": "would be HELD by the mass-removal guard",
    "would_be_refused": "would be REFUSED",
    "would_be_blocked": "would be BLOCKED",
}


def dry_run_lines(request: AudienceExportRequest, result: DryRun) -> list[str]:
    """What the operator reads."""
    lines = [
        f"dry run of {request.mode} export of list {request.list_id!r} to audience {request.audience_name!r} "
        f"({result.audience_id}): {VERDICTS[result.verdict]}",
    ]
    if result.reason:
        lines.append(f"  why: {result.reason}")
    if result.verdict in ("would_be_refused", "would_be_blocked"):
        return lines
    lines += [
        f"  recipients in the list: {result.received}",
        f"  IDs to add: {result.to_add}",
        f"  IDs to remove: {result.to_remove}",
        f"  excluded (no ID in {request.data_source}): {result.excluded}",
        f"  opted out (consent): {result.opted_out}",
        f"  the audience holds {result.shared} IDs from the bridge now",
    ]
    for part, shown in result.samples.items():
        if shown:
            lines.append(f"  sample {part.replace('_', ' ')}: {', '.join(shown)}")
    lines.append("nothing was recorded or sent")
    return lines


def show_dry_run(request: AudienceExportRequest) -> DryRun:
    settings = load_settings(ReconcileSettings)
    guards = ExportGuards(settings.export_max_removal_share, settings.export_guard_min_size)

    async def compute(conn: Any) -> DryRun:
        return await dry_run(
            conn,
            request,
            guards,
            sample=settings.dry_run_sample_size,
            allow_undeclared=settings.export_allow_undeclared,
            work_mem_mb=settings.export_work_mem_mb,
        )

    result = run_sync(with_db(compute))
    for line in dry_run_lines(request, result):
        console.print(line, highlight=False, markup=False)
    return result
