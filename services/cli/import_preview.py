"""``audience-bridge import preview FILE…``: what a delivered batch of outbound files would do to each list.

The parts are read with ingest's parser and routed with ingest's rule (:func:`services.ingest.routing.feeds`:
a file feeds the import audiences of its platform segments whose data source is the file's master DPID, and
whose destination, when they name one, is the file's); then, per audience, its IDs are matched as reconcile
matches them (the same join, :func:`~services.reconcile.import_snapshot.snapshot_join`) and compared with the
list, in one read-only snapshot: members it would add and remove, IDs matched and unmatched, and whether a
``full`` snapshot would be held back by the import guards. Nothing is written, emitted or moved.

A ``full`` batch replaces each list with its matched recipients; an ``iter`` batch adds the members it names
and removes those whose removal it carries (``to_remove`` counts them even where another ID of theirs would
keep an ECID member in the list: an upper bound).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from services.cli.common import app, console, err, run_sync, with_db
from services.ingest.audiences import ImportAudience
from services.ingest.routing import feeds, origin_of
from services.ingest.settings import IngestSettings
from services.reconcile.consent import admitted_sql
from services.reconcile.import_snapshot import NO_MATCH, ImportGuards, snapshot_join
from services.reconcile.import_target import load_target
from services.reconcile.settings import ReconcileSettings
from shared.errors import PermanentError
from shared.formats import FormatError
from shared.formats.outbound import OutboundFileName, OutboundParser, OutboundRecord, RecordBlock
from shared.formats.outbound.name_grammar import OutboundNames
from shared.settings import load_settings

Connection = Any  # asyncpg.Connection, or a pool's proxy of one

Verdict = Literal["would_apply", "would_be_held"]


class MixedBatch(PermanentError):
    """The files given are not the parts of one delivered batch."""


@dataclass(slots=True)
class AudienceIds:
    """The IDs a batch gives one import audience."""

    audience: ImportAudience
    adds: set[str] = field(default_factory=set)
    removes: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class BatchRead:
    mode: Literal["full", "delta"]
    audiences: list[AudienceIds]
    records: int
    invalid_lines: int
    unrouted_segments: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ListPreview:
    audience_id: str
    list_name: str | None
    mode: str
    received: int
    matched: int
    unmatched: int
    size_before: int
    to_add: int
    to_remove: int
    verdict: Verdict
    reason: str | None = None

    @property
    def size_after(self) -> int:
        return self.size_before + self.to_add - self.to_remove


def read_batch(parts: Sequence[tuple[OutboundFileName, bytes]], audiences: Iterable[ImportAudience]) -> BatchRead:
    """Parse the parts (gzip or not) and route each user's segments to the import audiences they feed."""
    if not parts:
        raise MixedBatch("no file given")
    roots = {name.batch_root for name, _ in parts}
    if len(roots) != 1:
        raise MixedBatch("the files are parts of different batches", batches=sorted(roots))
    first = parts[0][0]
    mode: Literal["full", "delta"] = "full" if first.mode == "full" else "delta"
    origin = origin_of(first)
    by_segment: dict[int, list[ImportAudience]] = {}
    for audience in audiences:
        if audience.platform_segment_id is not None and feeds(audience, origin):
            by_segment.setdefault(audience.platform_segment_id, []).append(audience)
    found: dict[str, AudienceIds] = {}
    unrouted: set[int] = set()
    records = invalid = 0

    def take(record: OutboundRecord) -> None:
        for segments, is_add in ((record.segments, True), (record.removed, False)):
            for segment in segments:
                targets = by_segment.get(segment)
                if not targets:
                    unrouted.add(segment)
                    continue
                if mode == "full" and not is_add:
                    continue  # in a full snapshot, absence is what removes
                for audience in targets:
                    ids = found.setdefault(audience.audience_id, AudienceIds(audience))
                    (ids.adds if is_add else ids.removes).add(record.user_id)

    for name, data in parts:
        parser = OutboundParser(name)
        for item in [*parser.feed_blocks(data), *parser.close_blocks()]:
            if type(item) is RecordBlock:
                for record in item.records():
                    take(record)
            elif type(item) is OutboundRecord:
                take(item)
        records += parser.counters.records
        invalid += sum(parser.counters.errors_by_reason.values())
    return BatchRead(mode, list(found.values()), records, invalid, tuple(sorted(unrouted)))


# $1: the IDs the batch adds (text[]), $2: the list. The matched recipients are those the importer would admit.
_MATCH = """
WITH snapshot_ids AS (SELECT DISTINCT unnest($1::text[]) AS id),
m AS ({join})
SELECT count(DISTINCT m.id) FILTER (WHERE m.recipient_id IS NOT NULL) AS matched,
       count(DISTINCT m.id) FILTER (WHERE m.recipient_id IS NULL) AS unmatched,
       count(DISTINCT m.recipient_id) FILTER (
           WHERE m.recipient_id IS NOT NULL AND {admitted}
             AND NOT EXISTS (SELECT 1 FROM list_member lm WHERE lm.list_id = $2 AND lm.recipient_id = m.recipient_id)
       ) AS to_add,
       coalesce(array_remove(array_agg(DISTINCT m.recipient_id), NULL), '{{}}') AS recipients
  FROM m"""


async def preview_lists(conn: Connection, batch: BatchRead, guards: ImportGuards) -> list[ListPreview]:
    """Each audience's list as the batch would leave it, counted in one read-only snapshot."""
    previews = []
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        for ids in batch.audiences:
            previews.append(await _preview_one(conn, batch.mode, ids, guards))
    return previews


async def _preview_one(conn: Connection, mode: str, ids: AudienceIds, guards: ImportGuards) -> ListPreview:
    target = await load_target(conn, ids.audience.audience_id)
    join = snapshot_join(target)
    sql = _MATCH.format(join=join, admitted=admitted_sql("m.recipient_id"))
    added = await conn.fetchrow(sql, sorted(ids.adds), target.list_id)
    size = int(await conn.fetchval("SELECT count(*) FROM list_member WHERE list_id = $1", target.list_id))
    if mode == "full":
        to_remove = int(
            await conn.fetchval(
                """SELECT count(*) FROM list_member WHERE list_id = $1 AND NOT recipient_id = ANY($2::bigint[])""",
                target.list_id,
                added["recipients"],
            )
        )
        matched, unmatched = int(added["matched"]), int(added["unmatched"])
    else:
        removed = await conn.fetchrow(sql, sorted(ids.removes), target.list_id)
        to_remove = int(
            await conn.fetchval(
                "SELECT count(*) FROM list_member WHERE list_id = $1 AND recipient_id = ANY($2::bigint[])",
                target.list_id,
                removed["recipients"],
            )
        )
        matched = int(added["matched"]) + int(removed["matched"])
        unmatched = int(added["unmatched"]) + int(removed["unmatched"])
    reason = _held(mode, int(added["matched"]), size, to_remove, guards)
    list_name = await conn.fetchval("SELECT name FROM list WHERE list_id = $1", target.list_id)
    return ListPreview(
        audience_id=target.audience_id,
        list_name=list_name,
        mode=mode,
        received=len(ids.adds) + len(ids.removes),
        matched=matched,
        unmatched=unmatched,
        size_before=size,
        to_add=int(added["to_add"]),
        to_remove=to_remove,
        verdict="would_be_held" if reason else "would_apply",
        reason=reason,
    )


def _held(mode: str, matched: int, size: int, to_remove: int, guards: ImportGuards) -> str | None:
    """The import guards' verdict on a full snapshot (services.reconcile.import_snapshot.guard_reason's rule)."""
    if mode != "full":
        return None
    if matched == 0:
        return NO_MATCH
    if size >= guards.min_list_size and to_remove > guards.max_removal_share * size:
        share = f"{guards.max_removal_share:.0%}"
        return f"full snapshot would remove {to_remove} of {size} list members (more than {share})"
    return None


# The command: `audience-bridge import preview FILE…`.

import_app = typer.Typer(help="Imports (platform segments → campaign lists).", no_args_is_help=True)
app.add_typer(import_app, name="import")


def preview_lines(batch: BatchRead, previews: Sequence[ListPreview]) -> list[str]:
    lines = [
        f"a {'full' if batch.mode == 'full' else 'iter (delta)'} batch: {batch.records} records, "
        f"{batch.invalid_lines} invalid lines"
    ]
    if batch.unrouted_segments:
        shown = ", ".join(map(str, batch.unrouted_segments[:10]))
        lines.append(f"segments no import audience of this file's origin takes: {shown}")
    if not previews:
        lines.append("it feeds no list")
    for p in previews:
        verdict = "would be HELD back" if p.verdict == "would_be_held" else "would apply"
        lines += [
            f"list {p.list_name!r} (audience {p.audience_id}): {verdict}" + (f": {p.reason}" if p.reason else ""),
            f"  IDs {p.received}: {p.matched} matched, {p.unmatched} unmatched",
            f"  members: adds {p.to_add}, removes {p.to_remove}: {p.size_before} -> {p.size_after}",
        ]
    lines.append("nothing was written, emitted or moved")
    return lines


@import_app.command("preview")
def import_preview_cmd(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="The parts of one batch.")],
) -> None:
    """What a delivered batch of outbound files would do to each list (read-only)."""
    names = OutboundNames(load_settings(IngestSettings).import_name_templates)
    parts = []
    for path in files:
        try:
            parts.append((names.parse(path.name), path.read_bytes()))
        except FormatError as exc:
            err.print(f"[red]error:[/red] {path.name}: {exc}")
            raise typer.Exit(2) from None
    settings = load_settings(ReconcileSettings)
    guards = ImportGuards(settings.full_import_max_removal_share, settings.full_import_guard_min_list_size)

    async def preview(conn: Any) -> tuple[BatchRead, list[ListPreview]]:
        batch = read_batch(parts, await _import_audiences(conn))
        return batch, await preview_lists(conn, batch, guards)

    batch, previews = run_sync(with_db(preview))
    for line in preview_lines(batch, previews):
        console.print(line, highlight=False, markup=False)


async def _import_audiences(conn: Any) -> list[ImportAudience]:
    rows = await conn.fetch(
        """SELECT sa.audience_id, sa.platform_segment_id, ds.name AS data_source, ds.id_type, ds.dpid,
                  ds.export_controls, sa.platform_destination_id
             FROM shared_audience sa JOIN data_source ds USING (data_source_id)
            WHERE sa.direction = 'import' AND sa.list_id IS NOT NULL"""
    )
    return [ImportAudience(**{**dict(r), "export_controls": tuple(r["export_controls"])}) for r in rows]
