"""The status page's export files: per inbound file of the recent export runs, the lines uploaded against
those the platform applied (from its processing receipt), the lines it rejected by reason, or that its
receipt is still awaited. Read-only; the row, its query, its HTML section and its JSON, so the page and
``audience-bridge run RUN`` say the same."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson

from services.reconcile.status_chart import esc, fmt_int, fmt_time

RECENT_FILES: Final = 100


@dataclass(frozen=True, slots=True)
class FileRow:
    run_id: uuid.UUID
    audience_id: str
    name: str
    lines: int  # uploaded
    status: str | None  # None: the platform's receipt is awaited
    applied: int | None
    rejected: int | None
    rejected_by: dict[str, int]
    reason: str | None
    written_at: datetime

    @property
    def outcome(self) -> str:
        return self.status or "awaiting receipt"


_COLUMNS = """pf.run_id, r.audience_id, pf.name, pf.lines, pf.receipt_status, pf.lines_applied,
       pf.lines_rejected, pf.rejected_by::text AS rejected_by, pf.receipt_reason, pf.written_at
  FROM published_file pf JOIN run r ON r.run_id = pf.run_id"""
RECENT_FILES_SQL: Final = f"SELECT {_COLUMNS} ORDER BY pf.written_at DESC, pf.name LIMIT $1"
RUN_FILES_SQL: Final = f"SELECT {_COLUMNS} WHERE pf.run_id = $1 ORDER BY pf.name"


def file_row(row: Any) -> FileRow:
    by = orjson.loads(row["rejected_by"]) if row["rejected_by"] else {}
    return FileRow(
        run_id=row["run_id"],
        audience_id=row["audience_id"],
        name=row["name"],
        lines=row["lines"],
        status=row["receipt_status"],
        applied=row["lines_applied"],
        rejected=row["lines_rejected"],
        rejected_by={str(k): int(v) for k, v in by.items()},
        reason=row["receipt_reason"],
        written_at=row["written_at"],
    )


async def load_files(conn: Any, limit: int = RECENT_FILES) -> list[FileRow]:
    return [file_row(r) for r in await conn.fetch(RECENT_FILES_SQL, limit)]


def _by_reason(f: FileRow) -> str:
    return ", ".join(f"{k}: {fmt_int(v)}" for k, v in sorted(f.rejected_by.items()))


def files_section(files: list[FileRow] | tuple[FileRow, ...]) -> str:
    rows = [
        f'<tr class="export-file" data-run-id="{esc(f.run_id)}" data-outcome="{esc(f.outcome)}">'
        f'<td class="t">{esc(fmt_time(f.written_at))}</td><td class="id">{esc(f.audience_id)}</td>'
        f'<td class="id">{esc(f.name.rsplit("/", 1)[-1])}</td><td class="n">{fmt_int(f.lines)}</td>'
        f'<td class="n">{fmt_int(f.applied)}</td><td class="n">{fmt_int(f.rejected)}</td>'
        f"<td>{esc(f.outcome)}</td><td class=reason>{esc(_by_reason(f))}"
        f"{'<br>' + esc(f.reason) if f.reason else ''}</td></tr>"
        for f in files
    ]
    head = [("uploaded (UTC)", False), ("audience", False), ("file", False), ("lines uploaded", True)]
    head += [("applied", True), ("rejected", True), ("receipt", False), ("rejected by reason", False)]
    head_html = "".join(f"<th{' class=n' if n else ''}>{esc(t)}</th>" for t, n in head)
    if not rows:
        return (
            '<section id="export-files"><h2>Export files</h2><p class="empty-state">No export file yet.</p></section>'
        )
    return (
        '<section id="export-files"><h2>Export files: uploaded vs applied by the platform</h2>'
        f'<div class="scroll"><table id="export-files-table"><thead><tr>{head_html}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div></section>"
    )


def file_json(f: FileRow) -> dict[str, Any]:
    return {
        "run_id": str(f.run_id),
        "audience_id": f.audience_id,
        "file": f.name,
        "lines_uploaded": f.lines,
        "receipt": f.outcome,
        "lines_applied": f.applied,
        "lines_rejected": f.rejected,
        "rejected_by": dict(f.rejected_by),
        "reason": f.reason,
        "uploaded_at": f.written_at.isoformat(),
    }
