"""The status page's JSON API bodies (``GET /api/status``, ``GET /api/runs``): the same snapshot as the page
(:class:`~services.reconcile.status_queries.StatusSnapshot`), as plain JSON for scripts and dashboards."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from services.reconcile.status_files import file_json
from services.reconcile.status_import_polls import import_poll_json
from services.reconcile.status_queries import RunRow, StatusSnapshot
from services.reconcile.status_schedules import schedule_json

RELEASE_COMMAND: Final = "audience-bridge release"


def run_json(run: RunRow, now: datetime) -> dict[str, Any]:
    return {
        "run_id": str(run.run_id),
        "direction": run.direction,
        "audience_id": run.audience_id,
        "audience_name": run.audience_name,
        "mode": run.mode,
        "state": run.state,
        "counts": dict(run.counts),
        "match_rate": run.rate,
        "reason": run.reason,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "duration_s": round(run.duration_s(now), 3),
        "released_by": run.released_by,
        "requested_by": run.requested_by,
        "requested_via": run.requested_via,
    }


def snapshot_json(snapshot: StatusSnapshot) -> dict[str, Any]:
    now = snapshot.generated_at
    return {
        "generated_at": now.isoformat(),
        "totals": dict(snapshot.totals),
        "audiences": [
            {
                "audience_id": a.audience_id,
                "name": a.name,
                "direction": a.direction,
                "data_source": a.data_source,
                "id_type": a.id_type,
                "list_id": a.list_id,
                "list_name": a.list_name,
                "list_size": a.list_size,
                "export_mode": a.export_mode,
                "platform_segment_id": a.platform_segment_id,
                "last_state": a.last_state,
                "last_started_at": a.last_started_at.isoformat() if a.last_started_at else None,
            }
            for a in snapshot.audiences
        ],
        "runs": [run_json(r, now) for r in snapshot.runs],
        "blocked": [{**run_json(r, now), "release_command": f"{RELEASE_COMMAND} {r.run_id}"} for r in snapshot.blocked],
        "unmatched": [
            {
                "audience_id": u.audience_id,
                "reason": u.reason,
                "ids": u.ids,
                "last_seen": u.last_seen.isoformat() if u.last_seen else None,
            }
            for u in snapshot.unmatched
        ],
        "deliveries_not_imported": [
            {
                "batch_root": d.batch_root,
                "state": d.state,
                "reason": d.reason,
                "finished_at": d.finished_at.isoformat() if d.finished_at else None,
            }
            for d in snapshot.deliveries
        ],
        "export_files": [file_json(f) for f in snapshot.files],
        "schedules": [schedule_json(s) for s in snapshot.schedules],
        "import_polls": [import_poll_json(p) for p in snapshot.import_polls],
    }
