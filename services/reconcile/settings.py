"""Settings of the reconcile service (environment variables; see the README's settings table)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from shared.settings import DatabaseSettings, KafkaSettings, PageAuthSettings


class ReconcileSettings(KafkaSettings, DatabaseSettings, PageAuthSettings):
    http_port: int = Field(8082, ge=0, le=65535, description="Port of /healthz, /readyz and /metrics.")
    catalog_file: Path | None = Field(
        None,
        description="YAML file of data sources, import audiences and export audiences, loaded at start (upserted; "
        "its export_audiences replace the declared ones).",
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
        description=(
            "Postgres work_mem (MB) of an export's diff: room to de-duplicate and sort a large list's IDs in memory."
        ),
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
    import_max_poll_batches: int = Field(
        10,
        ge=1,
        le=1000,
        description="audience-membership messages (up to 10,000 IDs each) a partition hands to the importer at "
        "once, and queues at most: bounds the IDs held in memory per busy partition (KAFKA_MAX_POLL_RECORDS "
        "still bounds the other topics).",
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
    schedule_poll_s: float = Field(
        5.0, gt=0, le=60, description="How often export schedules are looked at for a slot that is due."
    )
    dry_run_sample_size: int = Field(
        10, ge=0, le=1000, description="IDs (and recipients) shown of each part of a dry run's result."
    )
    export_concurrency: int = Field(
        2,
        ge=1,
        le=64,
        description="Export requests of different audiences handled side by side (each takes a database connection).",
    )
    export_allow_undeclared: bool = Field(
        False,
        description="Accept export requests the catalog's export_audiences do not declare (for development only: "
        "anyone who can write audience-export-requests could then export any list).",
    )
    import_opted_out: bool = Field(
        True,
        description="Opted-out recipients may still join campaign lists by import (consent covers sharing: they are "
        "never exported). false: imports and re-matching leave them out, and opting out leaves the import lists.",
    )
    unmatched_retention_days: int = Field(
        90, ge=1, le=3650, description="Unmatched IDs no import named for this many days are purged."
    )
    run_retention_days: int = Field(
        180,
        ge=1,
        le=3650,
        description="Finished runs (succeeded, partial, failed, cancelled) are purged with their details this many "
        "days after they ended (blocked runs are kept).",
    )
    staging_retention_hours: int = Field(
        168,
        ge=1,
        le=87600,
        description="Staged IDs and batches of ended runs are purged this many hours after the run ended (a failed "
        "export can be retried from them until then).",
    )
    retention_interval_s: float = Field(3600.0, gt=0, description="How often the retention job purges.")
    stream_max_batch: int = Field(
        10_000,
        ge=1,
        le=100_000,
        description="recipient-changes and visitor-links messages applied at most at once (one transaction); a busy "
        "partition queues as many more, so memory grows with it (reconcile peaked at ~230 MB with 10,000 in the "
        "recipient_changes benchmark, ~180 MB with 5,000).",
    )
    stream_concurrency: int = Field(
        4,
        ge=1,
        le=64,
        description="Partitions of recipient-changes, and of visitor-links, applied side by side (each takes a "
        "database connection while it applies; one decodes while the others' statements run).",
    )
    import_run_stall_s: float = Field(
        3600.0,
        gt=0,
        description="An import run none of whose batches arrived for this long ends failed, its staged IDs "
        "deleted (a full snapshot that lost a batch never completes otherwise). Looked at every tenth of it.",
    )

    status_page_pool_size: int = Field(
        2, ge=1, le=16, description="Connections of the status page's own pool (besides DB_POOL_MAX_SIZE's)."
    )
    status_page_acquire_timeout_s: float = Field(
        5.0, gt=0, description="A page view waiting longer for one of those connections gets a 503."
    )
    status_page_statement_timeout_s: float = Field(
        10.0, gt=0, description="Postgres statement_timeout of the page's connections (read-only sessions)."
    )
    status_page_cache_s: float = Field(
        1.0, ge=0, description="How long one read of the page's data serves every viewer (0: each view reads)."
    )
    status_page_list_sizes_refresh_s: float = Field(
        60.0, ge=0, description="List sizes on the page are counted at most this often (the page's costly part)."
    )
    audience_gauges_refresh_s: float = Field(
        60.0,
        gt=0,
        description="How often the per-audience gauges (ab_audience_size, ab_audience_match_rate...) are read anew.",
    )
    status_dead_letters_refresh_s: float = Field(
        15.0, ge=0, description="The page's dead-letter figures are read from the .dlq topics at most this often."
    )
    status_dead_letters_scan: int = Field(
        1000, ge=1, description="The page counts dead letters by error over at most this many per .dlq partition."
    )
    status_dead_letters_timeout_s: float = Field(
        5.0, gt=0, description="Bound on one read of the .dlq topics for the page (then the last figures show)."
    )

    @model_validator(mode="after")
    def _connections_left_for_the_rest(self) -> ReconcileSettings:
        # Each audience applied side by side holds a connection: exports and re-matching need some too, or
        # they would wait for the imports (the status page has its own pool: STATUS_PAGE_POOL_SIZE).
        if self.import_concurrency >= self.db_pool_max_size:
            raise ValueError(
                f"IMPORT_CONCURRENCY ({self.import_concurrency}) must be below DB_POOL_MAX_SIZE "
                f"({self.db_pool_max_size}): exports and re-matching need connections too"
            )
        return self
