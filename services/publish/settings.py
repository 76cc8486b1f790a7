"""Settings of the publish service (environment variables; see the README's settings table)."""

from __future__ import annotations

from pydantic import Field

from shared.dropzone.settings import S3Settings
from shared.formats.inbound.writer import DEFAULT_MAX_PART_BYTES
from shared.platform import PlatformSettings
from shared.settings import DEFAULT_VAR_DIR, DatabaseSettings, KafkaSettings, PageAuthSettings

# The folder ecsim watches by default (services/ecsim/settings.py), so `make up` connects both sides.
DEFAULT_EXPORT_DROPZONE_URL = (DEFAULT_VAR_DIR / "dropzones" / "export").as_uri()
# The `<partner>` folder of `<partner>/date=YYYY-MM-DD/`: on the real platform the partner name Adobe set
# up for the bucket. Locally ecsim's partner (ECSIM_PARTNER_ID's default); ecsim accepts any one segment.
DEFAULT_EXPORT_PARTNER = "1352"


class PublishSettings(KafkaSettings, DatabaseSettings, PlatformSettings, S3Settings, PageAuthSettings):
    http_port: int = Field(8083, ge=0, le=65535, description="Port of /healthz, /readyz and /metrics.")
    export_dropzone_url: str = Field(
        DEFAULT_EXPORT_DROPZONE_URL,
        description="Where inbound data files for the platform are written (file:///path or s3://bucket/prefix).",
    )
    export_partner_folder: str = Field(
        DEFAULT_EXPORT_PARTNER,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="The <partner> folder of <partner>/date=YYYY-MM-DD/ in the export drop zone (the partner "
        "name the platform set up; locally ecsim's partner id).",
    )
    export_max_part_bytes: int = Field(
        DEFAULT_MAX_PART_BYTES,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="Uncompressed bytes per inbound file part at most; larger runs are split into numbered parts.",
    )
    export_gzip: bool = Field(True, description="gzip-compress inbound data files (.gz).")
    export_gzip_level: int = Field(
        1,
        ge=0,
        le=3,
        description="gzip level of ISA-L's deflate (0 fastest, 3 smallest): IDs (hashes, digits) compress "
        "about as well at 1 as at 3, faster.",
    )
    export_write_attempts: int = Field(
        3, ge=1, le=20, description="Attempts to write a run's files while the export drop zone is unavailable."
    )
    export_await_receipts: bool = Field(
        True,
        description="An export run ends only once the platform's processing receipts of its files are in "
        "(`uploaded` until then); false: `succeeded` as soon as its files are uploaded (the former behaviour).",
    )
    export_receipt_poll_s: float = Field(
        1.0,
        gt=0,
        le=3600,
        description="How often the receipts of uploaded runs are polled while they come (one call per data "
        "source, whatever the number of files).",
    )
    export_receipt_poll_max_s: float = Field(
        300.0,
        gt=0,
        le=86400,
        description="Polls back off (doubling) up to this while no receipt comes; a receipt resets them.",
    )
    export_receipt_poll_fast_s: float = Field(
        60.0,
        ge=0,
        le=86400,
        description="For this long after the latest upload still awaiting its receipt, polls stay at "
        "EXPORT_RECEIPT_POLL_S (a platform may answer within seconds); the backoff starts after.",
    )
    export_record_work_mem_mb: int = Field(
        256,
        ge=4,
        le=65536,
        description="Postgres work_mem (MB) of recording a run the platform applied in `exported_member`: room "
        "to sort a large run's IDs in memory (and maintenance_work_mem of indexing a set built apart).",
    )
    export_receipt_timeout_s: float = Field(
        172800.0,
        gt=0,
        description="A file with no receipt this long after its upload ends its run `failed` (the platform "
        "processes inbound files within 48 h; make it short against ecsim).",
    )
