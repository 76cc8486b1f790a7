"""Governance twice: reconcile refuses membership that ingest would have refused.

ingest checks an import audience's data export controls before it emits anything
(:mod:`services.ingest.governance`), but ``audience-membership`` can be written by any producer the ACLs let
in. So reconcile checks every batch again before writing it: an audience whose data source carries the
``PII`` restriction (the catalog's ``export_controls``), or whose platform segment ingest found restricted
(``segment_governance``, the platform's verdict as ingest last read it), is refused. The batch is
dead-lettered (``PolicyRefused``: counted in ``ab_dead_lettered_total``) and its run reported ``blocked``
with the reason; nothing of it is written.
"""

from __future__ import annotations

from typing import Any

from shared.errors import PermanentError
from shared.platform.models import PII

Connection = Any  # asyncpg.Connection, inside the batch's transaction


class PolicyRefused(PermanentError):
    """The audience's data export controls forbid importing it into a campaign list."""


async def import_refusal(conn: Connection, audience_id: str) -> str | None:
    """Why membership of ``audience_id`` may not be written (None: it may)."""
    row = await conn.fetchrow(
        """SELECT ds.name, ds.export_controls, sa.platform_segment_id, g.refusal
             FROM shared_audience sa JOIN data_source ds USING (data_source_id)
             LEFT JOIN segment_governance g ON g.platform_segment_id = sa.platform_segment_id
            WHERE sa.audience_id = $1 AND sa.direction = 'import'""",
        audience_id,
    )
    if row is None:
        return None  # an unknown audience is refused by the import itself, with its own reason
    if PII in (row["export_controls"] or ()):
        return f"policy: data source {row['name']!r} carries the PII export restriction"
    if row["refusal"] is not None:
        return f"policy: {row['refusal']}"
    return None


async def check_import(conn: Connection, audience_id: str) -> None:
    """Raise :class:`PolicyRefused` when the audience's membership may not be written."""
    why = await import_refusal(conn, audience_id)
    if why is not None:
        raise PolicyRefused(why, audience_id=audience_id, reason="policy")
