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

from collections.abc import Sequence
from typing import Any

from services.reconcile.import_target import TARGET_FIELDS, ImportTarget
from shared.errors import PermanentError
from shared.platform.models import PII

Connection = Any  # asyncpg.Connection, inside the batch's transaction


class PolicyRefused(PermanentError):
    """The audience's data export controls forbid importing it into a campaign list."""


# The import audience's target and what governance needs to judge it, in one look-up: a streaming run is
# small, and each round trip to Postgres is much of its cost.
_TARGET_AND_CONTROLS = """
SELECT sa.audience_id, sa.list_id, ds.data_source_id, ds.id_type, ds.reconciliation_key, ds.key_transform,
       ds.name AS data_source_name, ds.export_controls, g.refusal
  FROM shared_audience sa JOIN data_source ds USING (data_source_id)
  LEFT JOIN segment_governance g ON g.platform_segment_id = sa.platform_segment_id
 WHERE sa.audience_id = $1 AND sa.direction = 'import'"""


def import_refusal(data_source_name: str, export_controls: Sequence[str] | None, refusal: str | None) -> str | None:
    """Why membership of an audience of this data source, and of a segment ingest found ``refusal`` for (None:
    none found), may not be written; None: it may."""
    if PII in (export_controls or ()):
        return f"policy: data source {data_source_name!r} carries the PII export restriction"
    if refusal is not None:
        return f"policy: {refusal}"
    return None


async def load_governed_target(conn: Connection, audience_id: str) -> ImportTarget:
    """The import audience's target; raises :class:`PolicyRefused` when its membership may not be written, and
    PermanentError when there is no such import audience (or it has no list)."""
    row = await conn.fetchrow(_TARGET_AND_CONTROLS, audience_id)
    if row is None or row["list_id"] is None:
        raise PermanentError("no import audience with this id", audience_id=audience_id)
    why = import_refusal(row["data_source_name"], row["export_controls"], row["refusal"])
    if why is not None:
        raise PolicyRefused(why, audience_id=audience_id, reason="policy")
    return ImportTarget(**{field: row[field] for field in TARGET_FIELDS})
