"""Data sources, import and export audiences: validated specs, the YAML catalog file, and their Postgres rows.

Operators declare what the platform provisioned (data sources with their DPIDs, ID types and
reconciliation keys) and which platform segments feed which campaign lists, either in the catalog file
(``CATALOG_FILE``, loaded by reconcile at start) or with the CLI. Loading is an idempotent upsert.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Literal

import asyncpg
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from services.reconcile.declared_keys import STORED_KEYS, declared_key_sql
from shared.errors import ConfigError
from shared.ids import IdType, KeyTransform
from shared.messages import ExportMode, Name
from shared.schedule_slots import BadCadence, parse_every

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
    poll_every: str | None = Field(
        None,
        description="Deliveries feeding the audience are read no more often than this (15m, 6h, 1d; at least "
        "1m): a batch waits in the drop zone for the next slot (unset: at every scan).",
    )

    @field_validator("poll_every")
    @classmethod
    def _poll_every_readable(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_every(value)
            except BadCadence as exc:
                raise ValueError(str(exc).replace("--every", "poll_every")) from None
        return value

    @property
    def poll_every_s(self) -> int | None:
        return parse_every(self.poll_every) if self.poll_every is not None else None


class CatalogExportAudience(BaseModel):
    """An export the bridge accepts: this list, shared into this data source as this audience, in these
    modes, asked for by these requesters (see :mod:`services.reconcile.export_authorisation`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    list: Name = Field(description="The campaign list shared (its name).")
    data_source: Name
    audience_name: Name
    modes: tuple[ExportMode, ...] = Field(("append",), min_length=1)
    requesters: tuple[Name, ...] = Field(
        min_length=1,
        description='Who may ask: glob patterns over "<channel>:<requester>" (channel api, cli or kafka), '
        'e.g. "api:*", "cli:alice", "kafka:campaign-workflow".',
    )


class CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    data_sources: list[CatalogDataSource] = Field(default_factory=list)
    import_audiences: list[CatalogImportAudience] = Field(default_factory=list)
    # None (the key absent): the declarations in the database stay as they are; a list replaces them all,
    # so removing an export audience from the file revokes it.
    export_audiences: list[CatalogExportAudience] | None = None

    @model_validator(mode="after")
    def _export_audiences_unique(self) -> CatalogFile:
        keys = [(a.data_source, a.audience_name) for a in self.export_audiences or ()]
        if len(keys) != len(set(keys)):
            raise ValueError("an export audience (data_source, audience_name) is declared twice")
        return self


# libyaml's parser when PyYAML has it (its wheels do): the same safe constructor, and a deeply nested file is
# refused at once instead of recursing for seconds in the pure-Python parser.
_SAFE_LOADER: Final = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_catalog_file(path: Path) -> CatalogFile:
    try:
        raw: Any = yaml.load(path.read_text(encoding="utf-8"), Loader=_SAFE_LOADER) or {}
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
    if (key, transform) in STORED_KEYS:
        # A stored key's indexes are made only once a data source uses it (schemas/sql/029: each costs every
        # recipient write), as 005 made them: the id included (matching is an index-only probe), and for the
        # hashed e-mail the few recipients without one (what an export counts as excluded).
        await conn.execute(
            f"CREATE INDEX IF NOT EXISTS recipient_key_{key}_{transform} ON recipient ({expression}) "
            "INCLUDE (recipient_id)"
        )
        if (key, transform) == ("email", "sha256"):
            await conn.execute(
                "CREATE INDEX IF NOT EXISTS recipient_without_email_sha256 ON recipient (recipient_id) "
                "WHERE key_email_sha256 IS NULL"
            )
        return
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
                                        platform_destination_id, poll_every_s)
           VALUES ($1, $2, 'import', $3, $4, $5, $6, $7)
           ON CONFLICT (audience_id) DO UPDATE SET name = EXCLUDED.name, data_source_id = EXCLUDED.data_source_id,
               list_id = EXCLUDED.list_id, platform_segment_id = EXCLUDED.platform_segment_id,
               platform_destination_id = EXCLUDED.platform_destination_id, poll_every_s = EXCLUDED.poll_every_s,
               updated_at = now()
           WHERE shared_audience.direction = 'import'""",
        spec.audience_id,
        spec.name,
        data_source_id,
        list_id,
        spec.platform_segment_id,
        spec.platform_destination_id,
        spec.poll_every_s,
    )


async def upsert_export_audience(conn: asyncpg.Connection[Any] | Any, spec: CatalogExportAudience) -> None:
    """Declare (or re-declare) one export audience."""
    status = await conn.execute(
        """INSERT INTO export_audience_declaration (data_source_id, audience_name, list_name, modes, requesters)
           SELECT data_source_id, $2, $3, $4::text[], $5::text[] FROM data_source WHERE name = $1
           ON CONFLICT (data_source_id, audience_name) DO UPDATE SET list_name = EXCLUDED.list_name,
               modes = EXCLUDED.modes, requesters = EXCLUDED.requesters, updated_at = now()""",
        spec.data_source,
        spec.audience_name,
        spec.list,
        list(spec.modes),
        list(spec.requesters),
    )
    if status.endswith(" 0"):
        raise ConfigError(
            "export audience names an unknown data source",
            audience_name=spec.audience_name,
            data_source=spec.data_source,
        )


async def replace_export_audiences(conn: asyncpg.Connection[Any] | Any, audiences: list[CatalogExportAudience]) -> None:
    """The declared export audiences become exactly these (in the caller's transaction): a declaration the
    catalog no longer holds is revoked."""
    await conn.execute("DELETE FROM export_audience_declaration")
    for audience in audiences:
        await upsert_export_audience(conn, audience)


async def apply_catalog(conn: asyncpg.Connection[Any] | Any, catalog: CatalogFile) -> None:
    async with conn.transaction():
        for ds in catalog.data_sources:
            await upsert_data_source(conn, ds)
        for audience in catalog.import_audiences:
            await upsert_import_audience(conn, audience)
        if catalog.export_audiences is not None:
            await replace_export_audiences(conn, catalog.export_audiences)
