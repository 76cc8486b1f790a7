"""What an export run sends: a list's IDs in a data source, diffed against what the bridge shared.

The queries are built once, from fixed whitelists (ID types, reconciliation keys, transforms): no input
reaches SQL text. Each takes the list id as $1 and, where it reads ``exported_member``, the audience id as $2.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from services.reconcile.declared_keys import (
    RECONCILIATION_KEYS,
    declared_key_sql,
    exportable_key_sql,
    unexportable_key_sql,
)
from shared.errors import PermanentError
from shared.ids import KEY_TRANSFORMS

AUDIENCE_NAMESPACE = uuid.UUID("8d7c1c8e-4b1f-4f55-9d5e-2f2a9e3c6b01")
RUN_NAMESPACE = uuid.UUID("c0b8a1d2-6e3f-4a7b-8c9d-0e1f2a3b4c5d")

# The ID expression per data source kind. Built once from fixed whitelists: no input reaches SQL text.
# The IDs compare byte-wise (COLLATE "C", as exported_member's do), so a run's adds can be read in the order
# publish records them in (diff_sql): de-duplicating by that sort costs less than by a hash (0.6 against 0.9 s
# for 1M hashed e-mails), and the recorded set's build then finds its input sorted. Counting queries still
# de-duplicate by a hash, as the planner likes.
# Opted-out recipients are never exported (consent): an anti-join with the few of them (a partial index), so
# a mirror/full run removes what was shared for them; they are counted apart (OPTED_OUT), not as excluded.
_CONSENTING = "NOT EXISTS (SELECT 1 FROM recipient o WHERE o.recipient_id = lm.recipient_id AND o.opted_out)"
OPTED_OUT = (
    "SELECT count(*) FROM list_member lm JOIN recipient r USING (recipient_id) WHERE lm.list_id = $1 AND r.opted_out"
)
CURRENT_IDS: dict[tuple[str, str | None, str], str] = {
    ("ecid", None, "none"): (
        'SELECT DISTINCT v.ecid COLLATE "C" AS id FROM list_member lm JOIN visitor_link v USING (recipient_id) '  # noqa: S608
        f"WHERE lm.list_id = $1 AND {_CONSENTING}"
    ),
    **{
        ("declared", key, transform): (
            f'SELECT DISTINCT {declared_key_sql(key, transform)} COLLATE "C" AS id '  # noqa: S608
            "FROM list_member lm JOIN recipient r USING (recipient_id) "
            f"WHERE lm.list_id = $1 AND NOT r.opted_out AND {exportable_key_sql(key, transform)}"
        )
        for key in RECONCILIATION_KEYS
        for transform in KEY_TRANSFORMS
    },
}
EXCLUDED: dict[tuple[str, str | None, str], str] = {
    ("ecid", None, "none"): (
        "SELECT lm.recipient_id FROM list_member lm WHERE lm.list_id = $1 "  # noqa: S608
        f"AND NOT EXISTS (SELECT 1 FROM visitor_link v WHERE v.recipient_id = lm.recipient_id) AND {_CONSENTING}"
    ),
    **{
        ("declared", key, transform): (
            "SELECT lm.recipient_id FROM list_member lm JOIN recipient r USING (recipient_id) "  # noqa: S608
            f"WHERE lm.list_id = $1 AND NOT r.opted_out AND {unexportable_key_sql(key, transform)}"
        )
        for key in RECONCILIATION_KEYS
        for transform in KEY_TRANSFORMS
    },
}


@dataclass(frozen=True, slots=True)
class DiffQuery:
    """One one-column query of a run's diff: its IDs are all adds or all removes."""

    sql: str
    is_add: bool
    by_audience: bool  # takes the audience id as $2 (the list id is always $1)


def diff_sql(current_ids: str, mode: str) -> tuple[DiffQuery, ...]:
    """What to add to the audience and (mirror/full) what the bridge must remove, read one after the
    other in one snapshot."""
    # The adds in exported_member's key order: the run's batches are then sorted end to end, and the recorded
    # set's build and the row-by-row recording (services/publish, schemas/sql/031) only check that they are.
    if mode == "full":
        adds = DiffQuery(f"SELECT c.id FROM ({current_ids}) c ORDER BY c.id", is_add=True, by_audience=False)  # noqa: S608
    else:
        adds = DiffQuery(
            f"SELECT c.id FROM ({current_ids}) c "  # noqa: S608
            "WHERE NOT EXISTS (SELECT 1 FROM exported_member e WHERE e.audience_id = $2 AND e.id = c.id "
            # An add the platform's receipt left unconfirmed (publish, export_rejected_id) is sent again.
            "AND NOT EXISTS (SELECT 1 FROM export_rejected_id x "
            "WHERE x.audience_id = $2 AND x.id = e.id AND x.is_add)) ORDER BY c.id",
            is_add=True,
            by_audience=True,
        )
    if mode == "append":
        # Append removes nothing, except what was shared for recipients since deleted or forgotten (erasure).
        # The withdrawn IDs first (usually none: then the list's IDs are never read).
        withdrawn = DiffQuery(
            "WITH w AS MATERIALIZED (SELECT DISTINCT e.id FROM withdrawn_id w JOIN exported_member e "  # noqa: S608
            "ON e.audience_id = w.audience_id AND e.id = w.id WHERE w.audience_id = $2) "
            f"SELECT w.id FROM w WHERE NOT EXISTS (SELECT 1 FROM ({current_ids}) c WHERE c.id = w.id)",
            is_add=False,
            by_audience=True,
        )
        return (adds, withdrawn)
    removes = DiffQuery(
        "SELECT e.id FROM exported_member e WHERE e.audience_id = $2 "  # noqa: S608
        f"AND NOT EXISTS (SELECT 1 FROM ({current_ids}) c WHERE c.id = e.id)",
        is_add=False,
        by_audience=True,
    )
    return (adds, removes)


def export_audience_id(data_source: str, audience_name: str) -> str:
    """A stable id for (data source, audience name), safe as a platform integration code."""
    return "ab-" + uuid.uuid5(AUDIENCE_NAMESPACE, f"{data_source}\n{audience_name}").hex[:20]


def export_run_id(request_id: uuid.UUID, attempt: int) -> uuid.UUID:
    """The run of an export request's ``attempt`` (from 1; 0: the id a refused or failed request is reported by)."""
    return uuid.uuid5(RUN_NAMESPACE, f"{request_id}\n{attempt}")


@dataclass(frozen=True, slots=True)
class Source:
    """An export's data source, as the catalog configured it."""

    data_source_id: int
    name: str
    dpid: int
    id_type: str
    reconciliation_key: str | None
    key_transform: str
    export_controls: tuple[str, ...]

    @property
    def kind(self) -> tuple[str, str | None, str]:
        return (self.id_type, self.reconciliation_key, self.key_transform)


async def load_source(conn: Any, name: str) -> Source:
    row = await conn.fetchrow(
        """SELECT data_source_id, name, dpid, id_type, reconciliation_key, key_transform, export_controls
             FROM data_source WHERE name = $1""",
        name,
    )
    if row is None:
        raise PermanentError("unknown data source", data_source=name)
    values = dict(row)
    values["export_controls"] = tuple(values["export_controls"])
    return Source(**values)


async def list_id_of(conn: Any, list_ref: str) -> int:
    """A list by name, or by id when the reference is a number."""
    # CASE, not AND: SQL does not order an AND, and a generic plan (a statement's 6th run) cast any name.
    row = await conn.fetchval(
        "SELECT list_id FROM list WHERE name = $1 OR list_id = CASE WHEN $1 ~ '^[0-9]{1,18}$' THEN $1::bigint END",
        list_ref,
    )
    if row is None:
        raise PermanentError("unknown list", list=list_ref)
    return int(row)
