"""Data sources and import audiences: validated specs, the YAML catalog file, and their Postgres rows.

Operators declare what the platform provisioned (data sources with their DPIDs, ID types and
reconciliation keys) and which platform segments feed which campaign lists, either in the catalog file
(``CATALOG_FILE``, loaded by reconcile at start) or with the CLI. Loading is an idempotent upsert.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import asyncpg
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.reconcile.declared_keys import declared_key_sql
from shared.errors import ConfigError
from shared.ids import IdType, KeyTransform
from shared.messages import Name

ReconciliationKey = Literal["recipient_id", "email", "crm_id"]


class CatalogDataSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    dpid: int = Field(ge=1, description="The platform's data provider id of this data source.")
    id_type: IdType
    reconciliation_key: ReconciliationKey | None = None
    key_transform: KeyTransform = "none"
    export_controls: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _declared_needs_key(self) -> CatalogDataSource:
        if self.id_type == "declared" and self.reconciliation_key is None:
            raise ValueError("a declared-ID data source needs a reconciliation_key")
        if self.id_type == "ecid" and self.reconciliation_key is not None:
            raise ValueError("an ECID data source reconciles through visitor links, not a recipient field")
        if self.reconciliation_key == "email" and self.key_transform != "sha256":
            raise ValueError("e-mail addresses are PII: use key_transform sha256")
        return self


class CatalogImportAudience(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    audience_id: Name = Field(description="Stable id of the audience in the bridge (used as the Kafka key).")
    name: Name
    platform_segment_id: int = Field(ge=1)
    data_source: Name
    list: Name = Field(description="The campaign list the segment feeds (created if missing).")
    platform_destination_id: int | None = Field(
        None,
        ge=1,
        description="Only outbound files of this platform destination feed the audience (unset: any destination "
        "delivering files of the data source).",
    )


class CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    data_sources: list[CatalogDataSource] = Field(default_factory=list)
    import_audiences: list[CatalogImportAudience] = Field(default_factory=list)


def load_catalog_file(path: Path) -> CatalogFile:
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError("catalog file cannot be read", path=str(path), error=exc.strerror) from None
    except UnicodeDecodeError as exc:
        raise ConfigError("catalog file is not UTF-8", path=str(path), offset=exc.start) from None
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        # PyYAML raises ValueError for an impossible date (2024-13-01) and recurses once per nesting level.
        raise ConfigError("catalog file is not valid YAML", path=str(path), error=str(exc)[:300]) from None
    try:
        return CatalogFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:10])
        raise ConfigError("catalog file is invalid", path=str(path), problems=problems) from None


async def ensure_declared_key_index(conn: asyncpg.Connection[Any] | Any, key: str, transform: str) -> None:
    """An expression index so matching by this key never hashes the recipient table."""
    expression = declared_key_sql(key, transform, alias=None)  # raises for anything off the whitelists
    await conn.execute(f"CREATE INDEX IF NOT EXISTS recipient_key_{key}_{transform} ON recipient ({expression})")


async def upsert_data_source(conn: asyncpg.Connection[Any] | Any, spec: CatalogDataSource) -> int:
    if spec.reconciliation_key is not None:
        await ensure_declared_key_index(conn, spec.reconciliation_key, spec.key_transform)
    data_source_id: int = await conn.fetchval(
        """INSERT INTO data_source (name, dpid, id_type, reconciliation_key, key_transform, export_controls)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (name) DO UPDATE SET dpid = EXCLUDED.dpid, id_type = EXCLUDED.id_type,
               reconciliation_key = EXCLUDED.reconciliation_key, key_transform = EXCLUDED.key_transform,
               export_controls = EXCLUDED.export_controls
           RETURNING data_source_id""",
        spec.name,
        spec.dpid,
        spec.id_type,
        spec.reconciliation_key,
        spec.key_transform,
        list(spec.export_controls),
    )
    return data_source_id


async def ensure_list(conn: asyncpg.Connection[Any] | Any, name: str) -> int:
    list_id: int = await conn.fetchval(
        """INSERT INTO list (name) VALUES ($1)
           ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING list_id""",
        name,
    )
    return list_id


async def upsert_import_audience(conn: asyncpg.Connection[Any] | Any, spec: CatalogImportAudience) -> None:
    data_source_id = await conn.fetchval("SELECT data_source_id FROM data_source WHERE name = $1", spec.data_source)
    if data_source_id is None:
        raise ConfigError(
            "import audience names an unknown data source",
            audience_id=spec.audience_id,
            data_source=spec.data_source,
        )
    list_id = await ensure_list(conn, spec.list)
    await conn.execute(
        """INSERT INTO shared_audience (audience_id, name, direction, data_source_id, list_id, platform_segment_id,
                                        platform_destination_id)
           VALUES ($1, $2, 'import', $3, $4, $5, $6)
           ON CONFLICT (audience_id) DO UPDATE SET name = EXCLUDED.name, data_source_id = EXCLUDED.data_source_id,
               list_id = EXCLUDED.list_id, platform_segment_id = EXCLUDED.platform_segment_id,
               platform_destination_id = EXCLUDED.platform_destination_id, updated_at = now()
           WHERE shared_audience.direction = 'import'""",
        spec.audience_id,
        spec.name,
        data_source_id,
        list_id,
        spec.platform_segment_id,
        spec.platform_destination_id,
    )


async def apply_catalog(conn: asyncpg.Connection[Any] | Any, catalog: CatalogFile) -> None:
    async with conn.transaction():
        for ds in catalog.data_sources:
            await upsert_data_source(conn, ds)
        for audience in catalog.import_audiences:
            await upsert_import_audience(conn, audience)
