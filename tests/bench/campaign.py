"""Synthetic campaign data for benchmarks: recipients with e-mails and one ECID each, loaded with COPY."""

from __future__ import annotations

from typing import Any

from services.reconcile.catalog import (
    CatalogDataSource,
    CatalogImportAudience,
    upsert_data_source,
    upsert_import_audience,
)
from shared.ids import declared_key

VISITORS = CatalogDataSource(name="visitors", dpid=1001, id_type="ecid")
HASHED_EMAILS = CatalogDataSource(
    name="hashed-emails", dpid=1002, id_type="declared", reconciliation_key="email", key_transform="sha256"
)
PLATFORM_SEED = {
    "datasources": [
        {"dataSourceId": 1001, "name": "Adobe Campaign (MID)", "integrationCode": "ac-mid"},
        {"dataSourceId": 1002, "name": "Adobe Campaign (DeclaredId)", "integrationCode": "ac-declared"},
    ],
    "traits": [
        {"sid": 9001, "name": "visitors", "traitType": "ON_BOARDED_TRAIT", "dataSourceId": 1001, "folderId": 0},
        {"sid": 9002, "name": "emails", "traitType": "ON_BOARDED_TRAIT", "dataSourceId": 1002, "folderId": 0},
    ],
    "segments": [
        {"sid": 5001, "name": "Visitors", "segmentRule": "9001T", "dataSourceId": 1001, "folderId": 0},
        {"sid": 5002, "name": "Emails", "segmentRule": "9002T", "dataSourceId": 1002, "folderId": 0},
    ],
}


def ecid(i: int) -> str:
    return f"{i:038d}"


def email(i: int) -> str:
    return f"person{i}@example.com"


def hashed_email(i: int) -> str:
    return declared_key(email(i), "sha256")


async def load_recipients(pool: Any, count: int, chunk: int = 200_000) -> None:
    async with pool.acquire() as conn:
        for start in range(1, count + 1, chunk):
            stop = min(start + chunk, count + 1)
            await conn.copy_records_to_table(
                "recipient",
                records=((i, email(i), f"CRM{i}") for i in range(start, stop)),
                columns=("recipient_id", "email", "crm_id"),
            )
            await conn.copy_records_to_table(
                "visitor_link", records=((ecid(i), i) for i in range(start, stop)), columns=("ecid", "recipient_id")
            )
        await conn.execute("VACUUM (ANALYZE) recipient, visitor_link")
        for spec in (VISITORS, HASHED_EMAILS):
            await upsert_data_source(conn, spec)
        for audience_id, segment, source in (
            ("visitors-5001", 5001, "visitors"),
            ("emails-5002", 5002, "hashed-emails"),
        ):
            await upsert_import_audience(
                conn,
                CatalogImportAudience(
                    audience_id=audience_id,
                    name=audience_id,
                    platform_segment_id=segment,
                    data_source=source,
                    list=f"List {audience_id}",
                ),
            )
