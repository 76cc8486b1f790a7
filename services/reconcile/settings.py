"""Settings of the reconcile service (environment variables; see the README's settings table)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from shared.settings import DatabaseSettings, KafkaSettings


class ReconcileSettings(KafkaSettings, DatabaseSettings):
    http_port: int = Field(8082, ge=0, le=65535, description="Port of /healthz, /readyz and /metrics.")
    catalog_file: Path | None = Field(
        None, description="YAML file of data sources and import audiences, loaded (upserted) at start."
    )
    full_import_max_removal_share: float = Field(
        0.5, ge=0, le=1, description="A full snapshot removing more than this share of a list is held back."
    )
    rematch_interval_s: float = Field(
        300.0, gt=0, description="How often unmatched IDs are matched again against recipients and visitor links."
    )
    export_batch_size: int = Field(5000, ge=1, le=10000, description="IDs per audience-export-batches message.")
    export_work_mem_mb: int = Field(
        256,
        ge=4,
        le=65536,
        description="Postgres work_mem (MB) of an export's diff: room to de-duplicate a large list in memory.",
    )
    import_work_mem_mb: int = Field(
        256,
        ge=4,
        le=65536,
        description="Postgres work_mem (MB) of matching a full snapshot when its run ends: room to hash its IDs.",
    )
    import_temp_buffers_mb: int = Field(
        128,
        ge=1,
        le=65536,
        description="Postgres temp_buffers (MB) of each connection: a full snapshot's matches (a temporary "
        "table, read several times) stay in memory instead of going through temporary files.",
    )
    import_concurrency: int = Field(
        4,
        ge=1,
        le=64,
        description="Audiences whose membership batches are applied side by side (each takes a database "
        "connection: keep it below DB_POOL_MAX_SIZE).",
    )
    full_import_guard_min_list_size: int = Field(
        100, ge=0, description="Lists smaller than this are not protected by the removal-share guard."
    )
    export_max_removal_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="A mirror or full export removing more than this share of a shared audience is held back "
        "(blocked) until audience-bridge release RUN.",
    )
    export_guard_min_size: int = Field(
        100, ge=0, description="Shared audiences smaller than this are not protected by the export removal guard."
    )
    export_run_timeout_s: float = Field(
        1800.0,
        gt=0,
        description="An export run whose batches or files have not moved for this long is ended failed (its "
        "audience's next request then goes ahead). Runs waiting for the platform's receipts are not concerned.",
    )
    export_wait_poll_s: float = Field(
        1.0,
        gt=0,
        description="How often requests waiting for an earlier run of their audience, and stuck runs, are looked at.",
    )
    export_concurrency: int = Field(
        2,
        ge=1,
        le=64,
        description="Export requests of different audiences handled side by side (each takes a database connection).",
    )

    @model_validator(mode="after")
    def _connections_left_for_the_rest(self) -> ReconcileSettings:
        # Each audience applied side by side holds a connection: exports, re-matching and the status page
        # need some too, or they would wait for the imports.
        if self.import_concurrency >= self.db_pool_max_size:
            raise ValueError(
                f"IMPORT_CONCURRENCY ({self.import_concurrency}) must be below DB_POOL_MAX_SIZE "
                f"({self.db_pool_max_size}): exports and re-matching need connections too"
            )
        return self
