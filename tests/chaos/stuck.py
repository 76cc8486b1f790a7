"""What the scenario is still waiting for when its deadline passes: enough to tell a stuck run from a lost file
without the database, which the stack drops on the way out (CI keeps only the log)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import asyncpg

_NOTED = re.compile(r'"level":\s*"(warning|error|critical)"|^\w+(Error|Exception)\b')
_FINAL = ("succeeded", "partial", "failed", "blocked", "cancelled")


async def describe_unfinished(pool: asyncpg.Pool, delivered: list[str], last_request: uuid.UUID | None) -> str:
    lines: list[str] = []
    async with pool.acquire() as conn:
        runs = await conn.fetch(
            """
            SELECT r.run_id, r.direction, r.mode, r.state, r.audience_id, r.reason, r.batches_applied, r.last_seq,
                   r.counts, round(extract(epoch FROM now() - r.updated_at)) AS idle_s,
                   (SELECT count(*) FROM published_file f WHERE f.run_id = r.run_id) AS files,
                   (SELECT count(*) FROM published_file f WHERE f.run_id = r.run_id AND f.receipt_status IS NULL)
                       AS awaiting_receipt,
                   (SELECT count(*) FROM publish_stage_batch b WHERE b.run_id = r.run_id) AS staged_batches,
                   (SELECT count(*) FROM applied_batch a WHERE a.run_id = r.run_id) AS applied_batches
            FROM run r WHERE r.state <> ALL($1::text[]) ORDER BY r.started_at
            """,
            list(_FINAL),
        )
        lines.append(f"runs not final: {len(runs)}")
        for r in runs:
            lines.append(
                f"  {r['run_id']} {r['direction']} {r['mode']} {r['audience_id']} state={r['state']} "
                f"idle={r['idle_s']}s batches_applied={r['batches_applied']} last_seq={r['last_seq']} "
                f"applied_batch_rows={r['applied_batches']} staged={r['staged_batches']} files={r['files']} "
                f"awaiting_receipt={r['awaiting_receipt']} reason={r['reason']!r} counts={r['counts']}"
            )
        files = await conn.fetch("SELECT batch_root, state, reason FROM processed_file WHERE state <> 'processed'")
        known = {row["batch_root"] for row in await conn.fetch("SELECT batch_root FROM processed_file")}
        lines.append(f"files not processed: {len(files)}")
        lines += [f"  {f['batch_root']} state={f['state']} reason={f['reason']!r}" for f in files]
        missing = [root for root in delivered if root not in known]
        lines.append(f"delivered batches ingest never recorded: {len(missing)} {missing[:10]}")
        total = await conn.fetchval("SELECT count(*) FROM run")
        lines.append(f"runs: {total}; delivered batches: {len(delivered)} (runs expected: {len(delivered) + 2}+)")
        if last_request is not None:
            state = await conn.fetchval(
                "SELECT state FROM run WHERE request_id = $1 ORDER BY started_at DESC LIMIT 1", last_request
            )
            lines.append(f"last request {last_request}: run state {state}")
    return "\n".join(lines)


def log_warnings(workdir: Path, names: tuple[str, ...] = ("ingest", "reconcile", "publish"), last: int = 25) -> str:
    """The last warnings and errors of each service's own log lines (JSON lines with a level, and tracebacks' last
    lines), without aiokafka's, which repeat every reconnection attempt while a broker is away."""
    out: list[str] = []
    for name in names:
        path = workdir / f"{name}.log"
        if not path.exists():
            continue
        noted = [
            line.rstrip()[:400]
            for line in path.read_text(errors="replace").splitlines()
            if _NOTED.search(line) and '"logger":"aiokafka' not in line  # the client's reconnection noise
        ]
        out.append(f"{name}: {len(noted)} warnings/errors, the last {min(last, len(noted))}:")
        out += [f"  {line}" for line in noted[-last:]]
    return "\n".join(out)
