"""Settings of the ingest service (environment variables; see the README's settings table)."""

from __future__ import annotations

from pydantic import Field, field_validator

from services.ingest.realtime_settings import RealtimeSettings
from shared.dropzone.settings import S3Settings
from shared.formats.outbound import BadTemplate, OutboundNames
from shared.platform import PlatformSettings
from shared.settings import DEFAULT_VAR_DIR, DatabaseSettings, KafkaSettings, PageAuthSettings


class IngestSettings(KafkaSettings, DatabaseSettings, PlatformSettings, S3Settings, PageAuthSettings, RealtimeSettings):
    http_port: int = Field(8081, ge=0, le=65535, description="Port of /healthz, /readyz and /metrics.")
    import_dropzone_url: str = Field(
        f"file://{DEFAULT_VAR_DIR / 'dropzones' / 'import'}",
        description="Where the platform delivers outbound segment files (file:///path or s3://bucket/prefix).",
    )
    import_poll_interval_s: float = Field(1.0, gt=0, description="How often the import drop zone is scanned.")
    import_parts_timeout_s: float = Field(
        600.0, gt=0, description="A batch whose .info or parts are still missing after this long is rejected."
    )
    import_max_part_bytes: int = Field(
        8 * 1024**3,
        ge=1024,
        description="A gzip part whose content inflates to more than this many bytes is rejected with its batch "
        "(a gzip bomb): checked as it inflates, so no more than this is ever inflated.",
    )
    import_spool_dir: str = Field(
        "",
        description="Folder where a gzip part's content, inflated once while its batch is checked, waits for the "
        "parse (anonymous files freed when the batch ends, even by a crash; up to IMPORT_MAX_PART_BYTES per gzip "
        "part of the batch in hand). Created 0700; a link or another user's folder stops the service. Empty: "
        "`audience-bridge-ingest-spool-<uid>` in the system temp dir (TMPDIR). Point it at a disk, not a tmpfs.",
    )
    import_quiet_period_s: float = Field(
        30.0,
        ge=0,
        description="A file whose name breaks the outbound grammar is rejected only once its size and modification "
        "time have not changed for this long (a writer may still be uploading it; 0: at once). Hidden and "
        "partial-upload names (.x, *.tmp, *.part, *.filepart, *.partial, *~) are never touched.",
    )
    import_name_templates: dict[str, str] = Field(
        {},
        description="How each platform destination names its outbound files, as JSON: destination id (or * for "
        "the others) -> template of the platform's file-name macros, e.g. "
        '`{"7001": "<SYNC_TYPE>_<ORDER_ID>_<DPID>_<SYNC_MODE>_<TIMESTAMP>SPLITNUM.sync"}` (`<TIMESTAMP>`: '
        '10-digit seconds, `<TIMESTAMP; unit="ms">`: 13-digit milliseconds). Unlisted destinations follow the '
        "documented default `[SYNC_TYPE][_DID][_MASTER_DPID][_PID_ALIAS][_SYNC_MODE][_TIMESTAMP]SPLITNUM.sync[.gz]` "
        "(13-digit milliseconds). A template the bridge cannot read names with stops the service.",
    )
    membership_batch_size: int = Field(5000, ge=1, le=10000, description="IDs per audience-membership message.")
    segment_event_ledger_retention_h: float = Field(
        168.0,
        gt=0,
        description="How long segment events' ids (duplicates ignored) and each ID's latest occurred_at (older "
        "events ignored) are remembered across polls; purged hourly.",
    )
    segment_events_max_poll: int = Field(
        5000, ge=1, description="Segment events coalesced per poll into membership batches."
    )
    segment_events_linger_ms: int = Field(
        50,
        ge=0,
        le=5000,
        description="How long segment events are coalesced after the first of a poll before a membership batch goes "
        "out (a poll of SEGMENT_EVENTS_MAX_POLL goes at once; under load polls grow by themselves, with what "
        "arrived while the last one was handled). Every poll is a run and a transaction in reconcile: 0 sends "
        "each trickle on its own.",
    )
    segment_events_flushes_in_flight: int = Field(
        2,
        ge=0,
        le=100,
        description="Flushes of segment events whose runs reconcile has not ended that the next flush waits behind "
        "(at most SEGMENT_EVENTS_FLUSH_WAIT_MAX_MS); the polls arriving meanwhile join it, so when reconcile falls "
        "behind, runs grow instead of piling up. 0: never waits.",
    )
    segment_events_flush_wait_max_ms: int = Field(
        1000,
        ge=1,
        le=60_000,
        description="The longest a flush of segment events waits for reconcile to end earlier flushes' runs "
        "(reconcile down or far behind: each flush then goes out after this, carrying what arrived meanwhile).",
    )
    segment_events_concurrency: int = Field(
        6,
        ge=1,
        le=64,
        description="Partitions of segment-events handled side by side (each in order, by a worker of its own), "
        "at most: the polls of those waiting while one is handled are handled next as one (one ledger claim, one "
        "run per audience). segment-events is keyed by segment and ID: one segment's events spread over the "
        "partitions (6 by default: as many as the topic's), each ID's in one, in order; a producer keying by the "
        "segment alone keeps that segment in one partition.",
    )
    metadata_refresh_s: float = Field(
        300.0, gt=0, description="How long platform metadata (segments, traits, data sources) is cached."
    )

    @field_validator("import_name_templates")
    @classmethod
    def _readable_templates(cls, templates: dict[str, str]) -> dict[str, str]:
        try:
            OutboundNames(templates)
        except BadTemplate as exc:
            raise ValueError(str(exc)) from None
        return templates
