"""The platform's outbound segment files become membership runs: watch, verify, parse, emit, file away.

A batch is its ``.info`` control file plus the parts it lists. Per scan of the import drop zone:

1. group names by batch root; a name that breaks the grammar is moved to ``rejected/`` with the reason;
2. a batch is ready when its ``.info`` and every part it lists are present (the ``.info`` may come
   first); one still incomplete after ``parts_timeout_s`` is rejected;
3. every part is verified against the ``.info`` (size, line count, md5) before anything is emitted,
   so a lying or damaged batch is rejected whole and never half-imported;
4. parts are parsed as streams (constant memory), each line's segments mapped to import audiences, and
   each audience's IDs emitted as ``audience-membership`` batches (``full`` files -> ``mode=full``,
   ``iter`` -> ``delta``), the run's last batch carrying ``last=true`` and totals;
5. the batch is recorded as processed in Postgres and its files moved to ``processed/``.

Run ids and batch boundaries are derived from the batch's name and content, so a restart in the middle
re-emits exactly the same batches, which reconcile's ``applied_batch`` ledger recognises: nothing lost,
nothing applied twice.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from itertools import compress
from typing import Any

import asyncpg

from services.ingest.audiences import AudienceDirectory, ImportAudience
from shared.dropzone import DropZone, ObjectInfo, UnsafeName, safe_name
from shared.errors import PermanentError
from shared.formats import BadFileName, FormatError
from shared.formats.lines import GzipDecoder
from shared.formats.outbound import (
    InfoFile,
    OutboundFileName,
    OutboundParser,
    OutboundRecord,
    RecordBlock,
    batch_root_of,
    is_info_name,
    parse_info,
    parse_outbound_name,
)
from shared.kafka import OutgoingMessage, Producer
from shared.logging import get_logger
from shared.messages import MAX_IDS_PER_BATCH, AudienceMembership
from shared.retry import is_transient
from shared.status import StatusReporter

log = get_logger(__name__)

RUN_NAMESPACE = uuid.UUID("0b6f3f2e-52a8-4f0e-8d0c-6a1f4b2d9e71")
_PLAN_CACHE_SIZE = 4096  # distinct (segments, removed) of a batch's lines remembered
SEND_WINDOW = 8  # membership messages in flight per send: pipelining without unbounded memory
SCAN_LOCK_KEY = 0x41_42_53_43_4E  # "ABSCN": one scanner of the import zone at a time

GovernanceCheck = Callable[[ImportAudience], Awaitable[str | None]]


class BatchRejected(PermanentError):
    """The batch cannot be imported as delivered (it lies, is damaged, or is incomplete for too long)."""


def run_id_for(batch_root: str, audience_id: str) -> uuid.UUID:
    return uuid.uuid5(RUN_NAMESPACE, f"{batch_root}\n{audience_id}")


def file_run_id(batch_root: str) -> uuid.UUID:
    return uuid.uuid5(RUN_NAMESPACE, batch_root)


@dataclass
class _Batch:
    root: str
    info: ObjectInfo | None = None
    parts: dict[str, ObjectInfo] = field(default_factory=dict)

    def files(self) -> list[str]:
        return ([self.info.name] if self.info else []) + sorted(self.parts)

    def oldest(self) -> float:
        times = [o.mtime.timestamp() for o in ([self.info] if self.info else []) + list(self.parts.values())]
        return min(times) if times else time.time()


@dataclass
class _AudienceRun:
    audience: ImportAudience
    run_id: uuid.UUID
    mode: str
    seq: int = 0
    adds: list[str] = field(default_factory=list)
    removes: list[str] = field(default_factory=list)
    received: int = 0


# The runs a line's user joins and the runs they leave.
_Plan = tuple[list[_AudienceRun], list[_AudienceRun]]


def group_names(objects: list[ObjectInfo]) -> tuple[dict[str, _Batch], list[tuple[ObjectInfo, str]]]:
    """Group a listing into batches by root; names that break the grammar come back with the reason."""
    batches: dict[str, _Batch] = {}
    bad: list[tuple[ObjectInfo, str]] = []
    for obj in objects:
        base = obj.name.rsplit("/", 1)[-1]
        try:
            root = batch_root_of(base)
            if not is_info_name(base):
                parse_outbound_name(base)
        except BadFileName as exc:
            bad.append((obj, str(exc)))
            continue
        prefix = obj.name[: len(obj.name) - len(base)]
        batch = batches.setdefault(prefix + root, _Batch(root=prefix + root))
        if is_info_name(base):
            batch.info = obj
        else:
            batch.parts[base] = obj
    return batches, bad


class FileImporter:
    def __init__(
        self,
        *,
        zone: DropZone,
        pool: asyncpg.Pool,
        producer: Producer,
        membership_topic: str,
        directory: AudienceDirectory,
        governance: GovernanceCheck,
        status: StatusReporter,
        batch_size: int = 5000,
        parts_timeout_s: float = 600.0,
        on_file: Callable[[str, str], None] | None = None,
    ) -> None:
        self._zone = zone
        self._pool = pool
        self._producer = producer
        self._topic = membership_topic
        self._directory = directory
        self._governance = governance
        self._status = status
        self._batch_size = min(batch_size, MAX_IDS_PER_BATCH)
        self._parts_timeout_s = parts_timeout_s
        self._on_file = on_file or (lambda _name, _outcome: None)

    async def scan(self) -> int:
        """Handle every ready batch once; returns how many batches were processed or rejected.

        Several ingest replicas may watch the same zone: a Postgres advisory lock lets one of them scan at a
        time (it is released with the session, so a crashed scanner never blocks the others).
        """
        async with self._pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", SCAN_LOCK_KEY):
                return 0
            try:
                return await self._scan()
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", SCAN_LOCK_KEY)

    async def _scan(self) -> int:
        listing = await self._zone.list()
        batches, bad = group_names(listing)
        for obj, reason in bad:
            await self._zone.move(obj.name, "rejected", reason=f"file name breaks the outbound grammar: {reason}")
            self._on_file(obj.name, "rejected")
            log.warning("file_rejected", file=obj.name, reason=reason)
        done = 0
        for root in sorted(batches):
            try:
                if await self._handle_batch(batches[root]):
                    done += 1
            except Exception as exc:
                if is_transient(exc):
                    raise  # the zone or a dependency is down: the whole scan waits and tries again
                # One batch's surprise (a part that vanished while it was read, ...) must not hold up the
                # batches after it. The batch is tried again at the next scan: its runs and batches derive
                # from its files, and reconcile applies a batch once whatever is emitted twice.
                log.error("batch_scan_failed", batch=root, error=type(exc).__name__, detail=str(exc)[:500])
        return done

    async def _handle_batch(self, batch: _Batch) -> bool:
        ledger = await self._pool.fetchval("SELECT state FROM processed_file WHERE batch_root = $1", batch.root)
        if ledger in ("processed", "rejected"):
            # Left over by a crash between the ledger commit and the move: file them where they belong.
            for name in batch.files():
                await self._zone.move(
                    name,
                    "processed" if ledger == "processed" else "rejected",
                    reason=None if ledger == "processed" else "batch was rejected earlier",
                )
            return False
        try:
            ready = await self._ready(batch)
            if ready is None:
                return False
            info, parts = ready
            await self._verify(batch, info, parts)
        except (BatchRejected, FormatError) as exc:
            await self._reject(batch, str(exc))
            return True
        await self._pool.execute(
            """INSERT INTO processed_file (batch_root, state) VALUES ($1, 'processing')
               ON CONFLICT (batch_root) DO UPDATE SET started_at = now()""",
            batch.root,
        )
        try:
            run_ids = await self._emit(batch, parts)
        except (BatchRejected, FormatError) as exc:
            await self._reject(batch, str(exc))
            return True
        await self._pool.execute(
            """UPDATE processed_file SET state = 'processed', run_ids = $2, finished_at = now()
                WHERE batch_root = $1""",
            batch.root,
            run_ids,
        )
        for name in batch.files():
            await self._zone.move(name, "processed")
            self._on_file(name, "processed")
        log.info("batch_processed", batch=batch.root, runs=len(run_ids))
        return True

    async def _ready(self, batch: _Batch) -> tuple[InfoFile, list[tuple[ObjectInfo, OutboundFileName]]] | None:
        overdue = time.time() - batch.oldest() > self._parts_timeout_s
        if batch.info is None:
            if overdue:
                raise BatchRejected("no .info control file arrived for these parts", batch=batch.root)
            return None
        info = parse_info(await self._zone.read_bytes(batch.info.name), file_name=batch.info.name)
        problems = info.inconsistencies()
        if problems:
            raise BatchRejected("the .info file does not add up: " + "; ".join(problems), batch=batch.root)
        parts: list[tuple[ObjectInfo, OutboundFileName]] = []
        missing = []
        for entry in sorted(info.files, key=lambda e: e.sequence_number):
            # Checked before looking for the part: a name that cannot be one of this batch's parts (a path
            # out of the zone, another batch's part, no part name at all) will never arrive.
            try:
                safe_name(entry.file_name)
            except UnsafeName:
                raise BatchRejected(
                    "the .info names a file outside the drop zone", file_name=entry.file_name[:200]
                ) from None
            name = entry.file_name.rsplit("/", 1)[-1]
            parsed = parse_outbound_name(name)
            if batch_root_of(name) != batch.root.rsplit("/", 1)[-1]:
                raise BatchRejected("the .info lists a part of another batch", part=name)
            obj = batch.parts.get(name)
            if obj is None:
                missing.append(name)
                continue
            parts.append((obj, parsed))
        if missing:
            if overdue:
                raise BatchRejected("parts listed in the .info never arrived", missing=missing[:10])
            return None
        extra = sorted(set(batch.parts) - {p.name.rsplit("/", 1)[-1] for p, _ in parts})
        if extra:
            raise BatchRejected("parts not listed in the .info", extra=extra[:10])
        return info, parts

    async def _verify(self, batch: _Batch, info: InfoFile, parts: list[tuple[ObjectInfo, OutboundFileName]]) -> None:
        for obj, parsed in parts:
            entry = info.entry(parsed.name) or next(e for e in info.files if e.file_name.endswith(parsed.name))
            if obj.size != entry.byte_size:
                raise BatchRejected(
                    "part size differs from the .info", part=parsed.name, size=obj.size, expected=entry.byte_size
                )
            md5 = hashlib.md5(usedforsecurity=False)
            lines = 0
            last = b"\n"
            stored = _Tee(self._zone.read(obj.name), md5)
            async for piece in _decoded(stored, gzip=parsed.gzip):
                lines += piece.count(b"\n")
                if piece:
                    last = piece[-1:]
            if last != b"\n":
                lines += 1
            if md5.hexdigest() != entry.md5.lower():
                raise BatchRejected("part md5 differs from the .info", part=parsed.name)
            if lines != entry.line_count:
                raise BatchRejected(
                    "part line count differs from the .info", part=parsed.name, lines=lines, expected=entry.line_count
                )

    async def _emit(self, batch: _Batch, parts: list[tuple[ObjectInfo, OutboundFileName]]) -> list[uuid.UUID]:
        mode = "full" if parts and parts[0][1].mode == "full" else "delta"
        runs: dict[str, _AudienceRun] = {}
        segment_audiences: dict[int, list[ImportAudience]] = {}
        blocked: dict[str, str] = {}
        pending: list[OutgoingMessage] = []
        invalid_lines = 0
        unmapped_segments: set[int] = set()
        # Per distinct (segments, removed) of the lines: the runs a line's user joins and leaves, in the order
        # of a line-by-line walk (a run appears once per segment mapping to it).
        plans: dict[tuple[tuple[int, ...], tuple[int, ...]], _Plan] = {}

        async def audiences_for(segment: int) -> list[ImportAudience]:
            if segment not in segment_audiences:
                audiences = await self._directory.lookup(str(segment))
                for audience in audiences:
                    if audience.audience_id not in blocked:
                        reason = await self._governance(audience)
                        if reason is not None:
                            blocked[audience.audience_id] = reason
                            plans.clear()  # they may send users to its run: no more
                segment_audiences[segment] = audiences
            return segment_audiences[segment]

        async def flush(run: _AudienceRun, *, last: bool) -> None:
            totals = None
            if last:
                totals = {"received": run.received, "batches": run.seq + 1, "invalid_lines": invalid_lines}
            message = AudienceMembership(
                run_id=run.run_id,
                seq=run.seq,
                last=last,
                audience_id=run.audience.audience_id,
                data_source=run.audience.data_source,
                id_type=run.audience.id_type,
                mode=mode,
                adds=run.adds,
                removes=run.removes,
                totals=totals,
            )
            pending.append(OutgoingMessage.of(self._topic, message))
            run.seq += 1
            run.adds, run.removes = [], []
            if len(pending) >= SEND_WINDOW or last:
                await self._producer.send(pending)
                pending.clear()

        async def plan_for(segments: tuple[int, ...], removed: tuple[int, ...]) -> _Plan:
            joins: list[_AudienceRun] = []
            leaves: list[_AudienceRun] = []
            for ids, into, is_add in ((segments, joins, True), (removed, leaves, False)):
                for segment in ids:
                    audiences = segment_audiences.get(segment)
                    if audiences is None:
                        audiences = await audiences_for(segment)
                    if not audiences:
                        unmapped_segments.add(segment)
                        continue
                    if mode == "full" and not is_add:
                        continue  # in a full snapshot, absence is what removes
                    for audience in audiences:
                        if audience.audience_id not in blocked:
                            into.append(await run_of(audience))
            if len(plans) >= _PLAN_CACHE_SIZE:
                plans.clear()
            plans[segments, removed] = (joins, leaves)
            return joins, leaves

        async def run_of(audience: ImportAudience) -> _AudienceRun:
            run = runs.get(audience.audience_id)
            if run is None:
                run = runs[audience.audience_id] = _AudienceRun(
                    audience=audience, run_id=run_id_for(batch.root, audience.audience_id), mode=mode
                )
                await self._status.report(
                    run.run_id, direction="import", state="started", audience_id=audience.audience_id
                )
            return run

        async def take(record: OutboundRecord) -> None:
            plan = plans.get((record.segments, record.removed))
            if plan is None:
                plan = await plan_for(record.segments, record.removed)
            for runs_of, is_add in ((plan[0], True), (plan[1], False)):
                for run in runs_of:
                    # Flushing before adding (not after) keeps the run's last batch non-empty.
                    if len(run.adds) + len(run.removes) >= self._batch_size:
                        await flush(run, last=False)
                    (run.adds if is_add else run.removes).append(record.user_id)
                    run.received += 1

        async def take_block(block: RecordBlock) -> None:
            """A block's users, run by run, in the batches a line-by-line walk makes, without a step per line
            (a million-line file is otherwise mostly that walk). Line by line when some of its lines leave a
            run or join one twice: only then does the order across a run's adds and removes matter."""
            keys = list(zip(block.segments, block.removed, strict=True))
            distinct = dict.fromkeys(keys)
            members: dict[str, tuple[_AudienceRun, set[tuple[tuple[int, ...], tuple[int, ...]]]]] = {}
            for key in distinct:
                joins, leaves = plans.get(key) or await plan_for(*key)
                if leaves or len({id(run) for run in joins}) != len(joins):
                    for record in block.records():
                        await take(record)
                    return
                for run in joins:
                    members.setdefault(run.audience.audience_id, (run, set()))[1].add(key)
            for run, run_keys in members.values():
                if len(run_keys) == len(distinct):
                    user_ids = block.user_ids
                else:
                    user_ids = list(compress(block.user_ids, map(run_keys.__contains__, keys)))
                start = 0
                while start < len(user_ids):
                    if len(run.adds) + len(run.removes) >= self._batch_size:
                        await flush(run, last=False)
                    room = self._batch_size - len(run.adds) - len(run.removes)
                    taken = user_ids[start : start + room]
                    run.adds.extend(taken)
                    run.received += len(taken)
                    start += len(taken)

        valid_lines = 0
        line_errors: dict[str, int] = {}
        for obj, parsed in parts:
            parser = OutboundParser(parsed)
            async for chunk in self._zone.read(obj.name):
                for item in parser.feed_blocks(chunk):
                    if type(item) is RecordBlock:
                        await take_block(item)
                    elif type(item) is OutboundRecord:
                        await take(item)
                    else:
                        invalid_lines += 1
            for item in parser.close_blocks():
                if type(item) is RecordBlock:
                    await take_block(item)
                elif type(item) is OutboundRecord:
                    await take(item)
                else:
                    invalid_lines += 1
            valid_lines += parser.counters.records
            for reason, n in parser.counters.errors_by_reason.items():
                line_errors[reason] = line_errors.get(reason, 0) + n
        if invalid_lines:
            log.warning("batch_line_errors", batch=batch.root, invalid_lines=invalid_lines, reasons=line_errors)
            if not valid_lines:
                # Not one readable line (e.g. TAB-separated): no run would carry the count, so the batch
                # would vanish as "processed" with nothing said. Nothing was emitted yet.
                summary = ", ".join(f"{reason}: {n}" for reason, n in sorted(line_errors.items()))
                raise BatchRejected(f"no valid line in the batch: {invalid_lines} lines rejected ({summary})")
        for run in runs.values():
            await flush(run, last=True)
            await self._status.report(
                run.run_id,
                direction="import",
                state="progress",
                audience_id=run.audience.audience_id,
                counts={"received": run.received, "invalid": invalid_lines},
            )
        for audience_id, reason in blocked.items():
            await self._status.report(
                run_id_for(batch.root, audience_id),
                direction="import",
                state="blocked",
                audience_id=audience_id,
                reason=reason,
            )
        if unmapped_segments:
            log.info("segments_without_import_audience", batch=batch.root, segments=sorted(unmapped_segments)[:20])
        return [r.run_id for r in runs.values()]

    async def _reject(self, batch: _Batch, reason: str) -> None:
        for name in batch.files():
            await self._zone.move(name, "rejected", reason=reason)
            self._on_file(name, "rejected")
        await self._pool.execute(
            """INSERT INTO processed_file (batch_root, state, reason, finished_at) VALUES ($1, 'rejected', $2, now())
               ON CONFLICT (batch_root) DO UPDATE SET state = 'rejected', reason = $2, finished_at = now()""",
            batch.root,
            reason,
        )
        await self._status.report(file_run_id(batch.root), direction="import", state="failed", reason=reason)
        log.warning("batch_rejected", batch=batch.root, reason=reason)


class _Tee:
    """Passes a stream's chunks through while feeding them to a hash."""

    def __init__(self, source: Any, digest: Any) -> None:
        self._source = source
        self._digest = digest

    def __aiter__(self) -> _Tee:
        return self

    async def __anext__(self) -> bytes:
        chunk: bytes = await self._source.__anext__()
        self._digest.update(chunk)
        return chunk


async def _decoded(chunks: _Tee, *, gzip: bool) -> Any:
    """Async version of decode_chunks: stored chunks in, content chunks out."""
    if not gzip:
        async for chunk in chunks:
            yield chunk
        return
    decoder = GzipDecoder()
    async for chunk in chunks:
        for piece in decoder.feed(chunk):
            yield piece
    for piece in decoder.close():
        yield piece
