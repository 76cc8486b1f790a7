"""Who may export what: the catalog's export audiences.

An export request shares personal data (hashed e-mails, visitor IDs) with the platform, so reconcile
accepts only the exports the catalog declares (``export_audiences``: the list, the data source, the
audience name, the modes allowed and who may ask). Anything else is refused with the reason (a ``failed``
run), unless ``EXPORT_ALLOW_UNDECLARED`` opens undeclared audiences for development; a declared audience
keeps its rules even then.

Who asked is ``<channel>:<requester>``: the API sets the authenticated user, the CLI the OS user; a request
any other producer writes to Kafka is ``kafka:`` and what it claims. Kafka records carry no producer
principal, so a claim read from Kafka is only as good as the topic's ACLs (README "Security").
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from shared.messages import AudienceExportRequest

Connection = Any  # asyncpg.Connection, or a pool's proxy of one


@dataclass(frozen=True, slots=True)
class Declaration:
    """A declared export audience, as stored by the catalog."""

    list_name: str
    list_id: int | None  # None: the declared list does not exist (yet)
    modes: tuple[str, ...]
    requesters: tuple[str, ...]


def requester_of(request: AudienceExportRequest) -> str:
    return f"{request.requested_via}:{request.requested_by}"


def may_ask(requester: str, patterns: tuple[str, ...]) -> bool:
    # Case-sensitive: "cli:Alice" and "cli:alice" are different OS users.
    return any(fnmatchcase(requester, pattern) for pattern in patterns)


def refusal(
    declaration: Declaration | None,
    request: AudienceExportRequest,
    list_id: int,
    *,
    allow_undeclared: bool,
) -> str | None:
    """Why the catalog refuses the request for the list ``list_id`` (None: it may go ahead)."""
    audience = f"{request.audience_name!r} of data source {request.data_source!r}"
    if declaration is None:
        if allow_undeclared:
            return None
        return (
            f"no export audience {audience} is declared in the catalog (export_audiences); "
            "EXPORT_ALLOW_UNDECLARED=true accepts undeclared audiences, for development only"
        )
    if declaration.list_id != list_id:
        declared = declaration.list_name
        return f"the catalog declares export audience {audience} for list {declared!r}, not {request.list_id!r}"
    if request.mode not in declaration.modes:
        allowed = ", ".join(declaration.modes)
        return f"the catalog allows export audience {audience} in mode {allowed}, not {request.mode!r}"
    requester = requester_of(request)
    if not may_ask(requester, declaration.requesters):
        return f"{requester!r} may not ask for export audience {audience} (the catalog's requesters)"
    return None


async def declaration_of(conn: Connection, data_source_id: int, audience_name: str) -> Declaration | None:
    row = await conn.fetchrow(
        """SELECT d.list_name, l.list_id, d.modes, d.requesters
             FROM export_audience_declaration d LEFT JOIN list l ON l.name = d.list_name
            WHERE d.data_source_id = $1 AND d.audience_name = $2""",
        data_source_id,
        audience_name,
    )
    if row is None:
        return None
    return Declaration(row["list_name"], row["list_id"], tuple(row["modes"]), tuple(row["requesters"]))
