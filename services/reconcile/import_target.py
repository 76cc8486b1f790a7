"""What an import writes into, and the SQL plumbing its delta and snapshot paths share.

An import audience feeds one campaign list from one data source: :class:`ImportTarget` says which list,
which ID type and, for declared IDs, which reconciliation key. Both :mod:`~services.reconcile.import_delta`
and :mod:`~services.reconcile.import_snapshot` pick their join by it (from statements prebuilt over the
whitelists, never built from the target).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from shared.errors import PermanentError

Connection = Any  # asyncpg.Connection or a pool's proxy of one


@dataclass(frozen=True, slots=True)
class ImportTarget:
    audience_id: str
    list_id: int
    data_source_id: int
    id_type: str
    reconciliation_key: str | None
    key_transform: str

    @property
    def tracks_ids(self) -> bool:
        """Whether its list records which IDs hold each member (:mod:`services.reconcile.member_ids`): only
        ECIDs, as a recipient may hold several; a data source gives a recipient one declared ID."""
        return self.id_type == "ecid"


TARGET_FIELDS = tuple(f.name for f in fields(ImportTarget))


async def load_target(conn: Connection, audience_id: str) -> ImportTarget:
    row = await conn.fetchrow(
        """SELECT sa.audience_id, sa.list_id, ds.data_source_id, ds.id_type, ds.reconciliation_key, ds.key_transform
             FROM shared_audience sa JOIN data_source ds USING (data_source_id)
            WHERE sa.audience_id = $1 AND sa.direction = 'import'""",
        audience_id,
    )
    if row is None or row["list_id"] is None:
        raise PermanentError("no import audience with this id", audience_id=audience_id)
    return ImportTarget(**dict(row))


def pick_statement(target: ImportTarget, ecid: str, declared: Mapping[tuple[str, str], str]) -> str:
    """The prebuilt statement for the target's ID type and declared key (a look-up: nothing is built)."""
    if target.id_type == "ecid":
        return ecid
    sql = declared.get((target.reconciliation_key or "", target.key_transform))
    if sql is None:
        raise PermanentError(
            "unsupported reconciliation key", key=target.reconciliation_key, transform=target.key_transform
        )
    return sql


def affected(status: str) -> int:
    """Rows affected, from a command tag such as ``INSERT 0 42`` or ``DELETE 7``."""
    return int(status.rsplit(" ", 1)[-1])
