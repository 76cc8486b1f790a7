"""Governance twice: reconcile refuses membership that ingest would have refused.

ingest checks an import audience's data export controls before it emits anything
(:mod:`services.ingest.governance`), but ``audience-membership`` can be written by any producer the ACLs let
in. So reconcile checks every batch again before writing it: an audience whose data source carries the
``PII`` restriction (the catalog's ``export_controls``), or whose platform segment ingest found restricted
(``segment_governance``, the platform's verdict as ingest last read it), is refused. The batch is
dead-lettered (``PolicyRefused``: counted in ``ab_dead_lettered_total``) and its run reported ``blocked``
with the reason; nothing of it is written. The importer reads what it judges by with the batch's claim, in one
statement (:mod:`services.reconcile.importing`): the verdict here is a plain function of that row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from services.reconcile.import_target import TARGET_FIELDS, ImportTarget
from shared.errors import PermanentError
from shared.platform.models import PII


class PolicyRefused(PermanentError):
    """The audience's data export controls forbid importing it into a campaign list."""


def import_refusal(data_source_name: str, export_controls: Sequence[str] | None, refusal: str | None) -> str | None:
    """Why membership of an audience of this data source, and of a segment ingest found ``refusal`` for (None:
    none found), may not be written; None: it may."""
    if PII in (export_controls or ()):
        return f"policy: data source {data_source_name!r} carries the PII export restriction"
    if refusal is not None:
        return f"policy: {refusal}"
    return None


def governed_target(row: Mapping[str, Any] | None, audience_id: str) -> ImportTarget:
    """The import audience's target from a row of its look-up (the target's fields, ``data_source_name``,
    ``export_controls`` and the segment's ``refusal``; None: no such import audience). Raises PermanentError when
    there is no such import audience (or it has no list), :class:`PolicyRefused` when its membership may not be
    written."""
    if row is None or row["list_id"] is None:
        raise PermanentError("no import audience with this id", audience_id=audience_id)
    why = import_refusal(row["data_source_name"], row["export_controls"], row["refusal"])
    if why is not None:
        raise PolicyRefused(why, audience_id=audience_id, reason="policy")
    return ImportTarget(**{field: row[field] for field in TARGET_FIELDS})
