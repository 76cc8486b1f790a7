"""Bulk loads of recipients and visitor links from CSV: COPY into a staging table, then one upsert.

Rows that break the rules (an ECID that is not 38 digits, a link to an unknown recipient) are counted
and skipped, not allowed to abort the whole load.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import PermanentError

CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class LoadResult:
    rows: int
    loaded: int
    skipped: int


async def _chunks(path: Path, progress: Callable[[int], None]) -> AsyncIterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            progress(len(chunk))
            yield chunk


def _header(path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return next(csv.reader(handle), [])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise PermanentError("CSV header is unreadable", path=str(path), error=str(exc)[:200]) from None


RECIPIENT_COLUMNS = ("recipient_id", "email", "crm_id", "first_name", "last_name", "opted_out")
# Consent as a CSV cell: these spellings (any case); an empty cell is false. A row with another value is skipped.
_CONSENT = "lower(btrim(coalesce(opted_out, '')))"
_CONSENT_VALUES = "('', 'false', 'f', '0', 'no', 'n', 'true', 't', '1', 'yes', 'y')"
_OPTED_OUT = f"{_CONSENT} IN ('true', 't', '1', 'yes', 'y')"

_UPSERT = """INSERT INTO recipient (recipient_id, email, crm_id, first_name, last_name{consent_column})
               SELECT DISTINCT ON (recipient_id::bigint) recipient_id::bigint, email, crm_id, first_name, last_name
                      {consent_value}
                 FROM load_recipient WHERE recipient_id ~ '^[0-9]{{1,18}}$' {consent_check}
               ON CONFLICT (recipient_id) DO UPDATE SET email = EXCLUDED.email, crm_id = EXCLUDED.crm_id,
                   first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name, updated_at = now()
                   {consent_update}"""
# A file without the column leaves every recipient's consent as it was.
UPSERT_KEEPING_CONSENT = _UPSERT.format(consent_column="", consent_value="", consent_check="", consent_update="")
UPSERT_WITH_CONSENT = _UPSERT.format(
    consent_column=", opted_out",
    consent_value=f", {_OPTED_OUT}",
    consent_check=f"AND {_CONSENT} IN {_CONSENT_VALUES}",
    consent_update=", opted_out = EXCLUDED.opted_out",
)


async def load_recipients(conn: Any, path: Path, progress: Callable[[int], None]) -> LoadResult:
    header = _header(path)
    unknown = [c for c in header if c not in RECIPIENT_COLUMNS]
    if "recipient_id" not in header or unknown:
        raise PermanentError(
            "recipients CSV needs a header with recipient_id and only known columns",
            known=list(RECIPIENT_COLUMNS),
            unknown=unknown,
        )
    async with conn.transaction():
        await conn.execute(
            "CREATE TEMP TABLE load_recipient (recipient_id text, email text, crm_id text, first_name text, "
            "last_name text, opted_out text) ON COMMIT DROP"
        )
        await conn.copy_to_table(
            "load_recipient", source=_chunks(path, progress), columns=header, format="csv", header=True
        )
        rows = await conn.fetchval("SELECT count(*) FROM load_recipient")
        status = await conn.execute(UPSERT_WITH_CONSENT if "opted_out" in header else UPSERT_KEEPING_CONSENT)
    loaded = int(status.rsplit(" ", 1)[-1])
    return LoadResult(rows=rows, loaded=loaded, skipped=rows - loaded)


async def load_visitor_links(conn: Any, path: Path, progress: Callable[[int], None]) -> LoadResult:
    header = _header(path)
    if sorted(header) != ["ecid", "recipient_id"]:
        raise PermanentError("visitor links CSV needs the header ecid,recipient_id", header=header)
    async with conn.transaction():
        await conn.execute("CREATE TEMP TABLE load_link (ecid text, recipient_id text) ON COMMIT DROP")
        await conn.copy_to_table("load_link", source=_chunks(path, progress), columns=header, format="csv", header=True)
        rows = await conn.fetchval("SELECT count(*) FROM load_link")
        status = await conn.execute(
            """INSERT INTO visitor_link (ecid, recipient_id)
               SELECT DISTINCT l.ecid, r.recipient_id
                 FROM load_link l JOIN recipient r
                      ON r.recipient_id = CASE WHEN l.recipient_id ~ '^[0-9]{1,18}$' THEN l.recipient_id::bigint END
                WHERE l.ecid ~ '^[0-9]{38}$'
               ON CONFLICT DO NOTHING"""
        )
    loaded = int(status.rsplit(" ", 1)[-1])
    return LoadResult(rows=rows, loaded=loaded, skipped=rows - loaded)
