"""Settings of the ingest service (environment variables; see the README's settings table)."""

from __future__ import annotations

from pydantic import Field

from shared.dropzone.settings import S3Settings
from shared.platform import PlatformSettings
from shared.settings import DEFAULT_VAR_DIR, DatabaseSettings, KafkaSettings


class IngestSettings(KafkaSettings, DatabaseSettings, PlatformSettings, S3Settings):
    http_port: int = Field(8081, ge=0, le=65535, description="Port of /healthz, /readyz and /metrics.")
    import_dropzone_url: str = Field(
        f"file://{DEFAULT_VAR_DIR / 'dropzones' / 'import'}",
        description="Where the platform delivers outbound segment files (file:///path or s3://bucket/prefix).",
    )
    import_poll_interval_s: float = Field(1.0, gt=0, description="How often the import drop zone is scanned.")
    import_parts_timeout_s: float = Field(
        600.0, gt=0, description="A batch whose .info or parts are still missing after this long is rejected."
    )
    membership_batch_size: int = Field(5000, ge=1, le=10000, description="IDs per audience-membership message.")
    segment_events_max_poll: int = Field(
        5000, ge=1, description="Segment events coalesced per poll into membership batches."
    )
    segment_events_linger_ms: int = Field(
        200, ge=0, le=5000, description="How long segment events are coalesced before a membership batch goes out."
    )
    metadata_refresh_s: float = Field(
        300.0, gt=0, description="How long platform metadata (segments, traits, data sources) is cached."
    )
