"""Keeping the IDs an import could not place: ``unmatched_id``, one row per (audience, ID type, ID).

An ID is kept with its reason: ``invalid_format`` (it breaks the ID type's rules, kept as soon as its batch
arrives), ``unknown_ecid`` or ``unknown_declared_id`` (valid, but no recipient has it yet: re-matching,
:mod:`services.reconcile.rematch`, puts it on the list once one does). An ID kept again is refreshed with the
run that last named it; an ID that left the segment, or that a later full snapshot no longer names, goes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from services.reconcile.import_target import Connection, ImportTarget, affected
from shared.errors import TransientError


def storable(invalid_id: str) -> str:
    """An ID as Postgres text can hold it: NUL cannot be stored (a NUL byte in a platform file's user id
    would otherwise fail the whole batch). Only invalid IDs can hold one; they are kept with U+FFFD instead."""
    return invalid_id.replace("\x00", "\ufffd")


def unmatched_reason(id_type: str) -> str:
    return "unknown_ecid" if id_type == "ecid" else "unknown_declared_id"


async def keep_invalid(conn: Connection, audience_id: str, id_type: str, run_id: uuid.UUID, ids: Sequence[str]) -> None:
    """Keep a batch's invalid adds (already :func:`storable`). DISTINCT: an ID twice in one batch would make the
    upsert touch a row twice, which Postgres refuses."""
    await conn.execute(
        """INSERT INTO unmatched_id (audience_id, id_type, id, reason, run_id)
            SELECT DISTINCT $1::text, $2::text, i, 'invalid_format', $3::uuid FROM unnest($4::text[]) AS i
            ON CONFLICT (audience_id, id_type, id)
            DO UPDATE SET reason = EXCLUDED.reason, run_id = EXCLUDED.run_id, last_seen = now()""",
        audience_id,
        id_type,
        run_id,
        list(ids),
    )


async def forget(conn: Connection, audience_id: str, id_type: str, ids: Sequence[str]) -> None:
    """IDs that left the segment are no longer wanted, matched or not (``ids`` already :func:`storable`)."""
    await conn.execute(
        "DELETE FROM unmatched_id WHERE audience_id = $1 AND id_type = $2 AND id = ANY($3::text[])",
        audience_id,
        id_type,
        list(ids),
    )


async def keep_unmatched_of_snapshot(conn: Connection, target: ImportTarget, run_id: uuid.UUID) -> int:
    """Keep a matched snapshot's unmatched IDs (``snapshot_match`` rows without a recipient, see
    :func:`services.reconcile.import_snapshot.match_snapshot`); returns how many.

    Those kept before are refreshed, the others added in the key's order (appended to its index rather than
    landing all over it). Two plain statements: ON CONFLICT's speculative insertion cost half as much again per
    ID. Only this audience's runs, one at a time, add its unmatched IDs; should anything else add one
    meanwhile, the key says so and the whole is retried."""
    args = (target.audience_id, target.id_type, unmatched_reason(target.id_type), run_id)
    refreshed = await conn.execute(
        """UPDATE unmatched_id u SET reason = $3, run_id = $4, last_seen = now()
             FROM snapshot_match s
            WHERE s.recipient_id IS NULL AND u.audience_id = $1 AND u.id_type = $2 AND u.id = s.id""",
        *args,
    )
    try:
        added = await conn.execute(
            """INSERT INTO unmatched_id (audience_id, id_type, id, reason, run_id)
                SELECT $1::text, $2::text, s.id, $3::text, $4::uuid FROM snapshot_match s
                 WHERE s.recipient_id IS NULL
                   AND NOT EXISTS (SELECT 1 FROM unmatched_id u
                                    WHERE u.audience_id = $1 AND u.id_type = $2 AND u.id = s.id)
                 ORDER BY s.id""",
            *args,
        )
    except asyncpg.UniqueViolationError as exc:
        raise TransientError("unmatched IDs were kept concurrently", audience_id=target.audience_id) from exc
    return affected(refreshed) + affected(added)


async def forget_stale(conn: Connection, audience_id: str, run_id: uuid.UUID) -> None:
    """A full snapshot is the whole truth: unmatched IDs it no longer names have left the segment."""
    await conn.execute("DELETE FROM unmatched_id WHERE audience_id = $1 AND run_id <> $2", audience_id, run_id)
