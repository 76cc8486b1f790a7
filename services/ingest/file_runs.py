"""A verified batch's parts read as streams and turned into its runs' membership batches.

Lines are parsed as they are read (constant memory). A piece whose lines are all ordinary records comes as
a :class:`~shared.formats.outbound.RecordBlock` (columns of user IDs and segment lists) and is handed to
its runs without a Python step per line; any other line goes one record at a time. Either way each run's
IDs are cut by :class:`~shared.id_batches.RunBatches` exactly where a line-by-line walk cuts them, so a
restart in the middle re-emits the same batches.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import compress

from services.ingest.audiences import AudienceDirectory, ImportAudience
from services.ingest.governance import GovernanceCheck
from services.ingest.membership import membership_batches
from services.ingest.routing import AudienceRun, RunPlanner, SegmentKey, origin_of
from services.ingest.run_ids import file_run_id
from shared.errors import PermanentError
from shared.formats.outbound import (
    OutboundFileName,
    OutboundItem,
    OutboundParser,
    OutboundRecord,
    RecordBlock,
)
from shared.id_batches import RunBatches
from shared.kafka import Producer
from shared.kafka.window import WindowSender
from shared.logging import get_logger
from shared.messages import MembershipMode
from shared.runs.outcome import RunOutcome
from shared.runs.reporter import RunReporter

log = get_logger(__name__)


class NoValidLine(PermanentError):
    """Not one line of the batch could be read: it is rejected rather than filed away as processed."""


@dataclass(frozen=True, slots=True)
class FileRunsContext:
    """What emitting a batch's runs needs from the service."""

    producer: Producer
    topic: str
    directory: AudienceDirectory
    governance: GovernanceCheck
    reporter: RunReporter
    batch_size: int


@dataclass(slots=True)
class _LineCounts:
    invalid: int = 0
    valid: int = 0
    errors: dict[str, int] = field(default_factory=dict)


async def emit_file_runs(
    ctx: FileRunsContext,
    batch_root: str,
    parts: Sequence[tuple[OutboundFileName, AsyncIterator[bytes]]],
) -> list[uuid.UUID]:
    """Emit every run the parts feed, each ending with its ``last`` batch; returns the run ids. Each part
    comes with its content (a gzip part's already inflated). Raises :class:`NoValidLine` (before anything
    is emitted) when no line of the batch could be read."""
    mode: MembershipMode = "full" if parts and parts[0][0].mode == "full" else "delta"
    sender = WindowSender(ctx.producer)

    def batches(audience: ImportAudience, run_id: uuid.UUID) -> RunBatches:
        return RunBatches(ctx.batch_size, membership_batches(ctx.topic, audience, run_id, mode), sender)

    if not parts:
        return []
    planner = RunPlanner(
        mode=mode,
        origin=origin_of(parts[0][0]),  # the parts of a batch share its root, hence its origin
        directory=ctx.directory,
        governance=ctx.governance,
        reporter=ctx.reporter,
        run_id=lambda audience_id: file_run_id(batch_root, audience_id),
        batches=batches,
    )
    try:
        lines = _LineCounts()
        for parsed, chunks in parts:
            await _read_part(planner, parsed, chunks, lines)
        if lines.invalid:
            log.warning("batch_line_errors", batch=batch_root, invalid_lines=lines.invalid, reasons=lines.errors)
            if not lines.valid:
                # Not one readable line (e.g. TAB-separated): no run would carry the count, so the batch
                # would vanish as "processed" with nothing said. Nothing was emitted yet.
                summary = ", ".join(f"{reason}: {n}" for reason, n in sorted(lines.errors.items()))
                raise NoValidLine(f"no valid line in the batch: {lines.invalid} lines rejected ({summary})")
        for run in planner.runs.values():
            await run.batches.close({"received": run.batches.taken, "invalid_lines": lines.invalid})
        await sender.flush()
    finally:
        await sender.close()
    await _report_runs(ctx.reporter, planner, lines.invalid)
    if planner.unmapped_segments:
        log.info("segments_without_import_audience", batch=batch_root, segments=sorted(planner.unmapped_segments)[:20])
    return [r.run_id for r in planner.runs.values()]


async def _report_runs(reporter: RunReporter, planner: RunPlanner, invalid_lines: int) -> None:
    for run in planner.runs.values():
        counts = {"received": run.batches.taken, "invalid": invalid_lines}
        await reporter.report(RunOutcome(run.run_id, "import", "progress", run.audience.audience_id, counts))
    for audience_id, reason in planner.blocked.items():
        run_id = planner.run_id_of(audience_id)
        await reporter.report(RunOutcome(run_id, "import", "blocked", audience_id, reason=reason))


async def _read_part(
    planner: RunPlanner, parsed: OutboundFileName, chunks: AsyncIterator[bytes], lines: _LineCounts
) -> None:
    # The chunks are the part's content: a gzip part's was inflated once, when the batch was checked
    # (services.ingest.part_spool), so the parser does not inflate it again.
    parser = OutboundParser(parsed, gzip=False)

    async def take_all(items: Iterable[OutboundItem | RecordBlock]) -> None:
        for item in items:
            if type(item) is RecordBlock:
                await _take_block(planner, item)
            elif type(item) is OutboundRecord:
                await _take(planner, item)
            else:
                lines.invalid += 1

    async for chunk in chunks:
        await take_all(parser.feed_blocks(chunk))
    await take_all(parser.close_blocks())
    lines.valid += parser.counters.records
    for reason, n in parser.counters.errors_by_reason.items():
        lines.errors[reason] = lines.errors.get(reason, 0) + n


async def _take(planner: RunPlanner, record: OutboundRecord) -> None:
    joins, leaves = await planner.plan((record.segments, record.removed))
    for run in joins:
        await run.batches.add(record.user_id)
    for run in leaves:
        await run.batches.remove(record.user_id)


async def _take_block(planner: RunPlanner, block: RecordBlock) -> None:
    """A block's users, run by run, in the batches a line-by-line walk makes, without a step per line (a
    million-line file is otherwise mostly that walk). Line by line when some of its lines leave a run or
    join one twice: only then does the order across a run's adds and removes matter."""
    # A full file's lines name no removals: its keys are then the segment lists alone, and no (segments, removed)
    # pair is built per line (that took a third of this function over a million-line file).
    plain = not any(block.removed)
    keys: list[SegmentKey] = [] if plain else list(zip(block.segments, block.removed, strict=True))
    distinct = {(segments, ()): None for segments in dict.fromkeys(block.segments)} if plain else dict.fromkeys(keys)
    members: dict[str, tuple[AudienceRun, set[SegmentKey]]] = {}
    for key in distinct:
        joins, leaves = await planner.plan(key)
        if leaves or len({id(run) for run in joins}) != len(joins):
            for record in block.records():
                await _take(planner, record)
            return
        for run in joins:
            members.setdefault(run.audience.audience_id, (run, set()))[1].add(key)
    for run, run_keys in members.values():
        if len(run_keys) == len(distinct):
            await run.batches.extend(block.user_ids)
        elif plain:
            wanted = {segments for segments, _ in run_keys}
            await run.batches.extend(list(compress(block.user_ids, map(wanted.__contains__, block.segments))))
        else:
            await run.batches.extend(list(compress(block.user_ids, map(run_keys.__contains__, keys))))
