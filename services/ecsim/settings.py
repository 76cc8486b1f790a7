"""Settings of ecsim (environment variables prefixed ECSIM_ where they are ecsim's own).

| variable | default | meaning |
|---|---|---|
| ``HTTP_PORT`` | 8090 | port of IMS, REST, admin and health endpoints |
| ``ECSIM_CLIENT_ID`` | ``audience-bridge-local`` | the one IMS client (and ``x-api-key``) ecsim knows |
| ``ECSIM_CLIENT_SECRET`` / ``_FILE`` | ``ecsim-local-secret`` | its secret (local default only) |
| ``ECSIM_REQUIRED_SCOPE`` | ``audiencemanager_api`` | a scope a token request must name ("" = any) |
| ``ECSIM_TOKEN_LIFETIME_S`` | 86399 | ``expires_in`` of issued tokens, seconds |
| ``ECSIM_PARTNER_ID`` | 1352 | ``pid`` stamped on every object |
| ``ECSIM_ADMIN_ENABLED`` | false | serve ``/sim/*`` (fault injection, seeding, state) |
| ``ECSIM_SIM_TOKEN`` / ``_FILE`` | unset | bearer token ``/sim/*`` requires (unset: loopback only) |
| ``ECSIM_SIM_PUBLIC`` | false | serve ``/sim/*`` with no token beyond loopback, on purpose |
| ``ECSIM_FAULT_SEED`` | unset | seed of the fault injector's random choices |
| ``ECSIM_SEED_FILE`` | unset | JSON objects to create at start (same shape as ``POST /sim/seed``) |
| ``ECSIM_EXPORT_DROPZONE_URL`` | ``file://<repo>/var/dropzones/export`` | where the bridge puts inbound files |
| ``ECSIM_IMPORT_DROPZONE_URL`` | ``file://<repo>/var/dropzones/import`` | where ecsim delivers outbound batches |
| ``ECSIM_INBOUND_POLL_INTERVAL_S`` | 2.0 | scan period of the export zone (0: only on demand) |
| ``ECSIM_DELIVERY_INTERVAL_S`` | unset | period of scheduled ``iter`` deliveries (unset: on demand) |
| ``ECSIM_DROPZONE_RETRY_MAX_S`` | 30 | how long a delivery retries an unavailable import zone |
| ``ECSIM_S3_ENDPOINT_URL`` / ``ECSIM_S3_REGION`` | unset | for ``s3://`` zones (credentials: AWS chain) |
| ``ECSIM_REALTIME_URL`` | ``""`` | partner endpoint of real-time deliveries (``/sim/realtime/*``) |
| ``ECSIM_REALTIME_SIGNING_KEY`` / ``_FILE`` | unset | key they are signed with |
| ``ECSIM_REALTIME_SIGNATURE_HEADER`` / ``_ALGORITHM`` | ``X-Signature`` / ``sha1`` | header and hash |
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from shared.dropzone import open_dropzone
from shared.errors import ConfigError
from shared.formats.realtime_signature import SignatureAlgorithm
from shared.settings import DEFAULT_VAR_DIR, BaseServiceSettings

DEFAULT_CLIENT_ID = "audience-bridge-local"
DEFAULT_CLIENT_SECRET = "ecsim-local-secret"  # a documented local default, not a credential
# The same folders the bridge uses by default, so `make up` connects both sides with no setting at all.
DEFAULT_EXPORT_DROPZONE = DEFAULT_VAR_DIR / "dropzones" / "export"
DEFAULT_IMPORT_DROPZONE = DEFAULT_VAR_DIR / "dropzones" / "import"


class EcsimSettings(BaseServiceSettings):
    http_port: int = Field(8090, ge=0, le=65535, description="Port of IMS, REST, admin and health endpoints.")
    ecsim_client_id: str = Field(
        DEFAULT_CLIENT_ID,
        min_length=1,
        description="Client id of the one IMS credential ecsim accepts; also the expected x-api-key.",
    )
    ecsim_client_secret: SecretStr = Field(
        SecretStr(DEFAULT_CLIENT_SECRET),
        description="Client secret of that credential (local default; the bridge's default matches it).",
    )
    ecsim_required_scope: str = Field(
        "audiencemanager_api",
        description="A token request's comma-separated scope must contain this one (empty: any scope).",
    )
    ecsim_token_lifetime_s: int = Field(
        86399, ge=1, description="expires_in of issued access tokens, in seconds (tests make it short)."
    )
    ecsim_partner_id: int = Field(1352, ge=1, description="Partner id (pid) stamped on every object.")
    ecsim_admin_enabled: bool = Field(
        False, description="Serve the /sim/ admin endpoints (fault injection, seeding, state); 404 when off."
    )
    ecsim_sim_token: SecretStr | None = Field(
        None,
        description="Bearer token the /sim/ admin endpoints require (16 characters at least). Unset: /sim is served "
        "only on loopback, and ecsim refuses to start with them beyond it.",
    )
    ecsim_sim_public: bool = Field(
        False, description="Serve /sim/ without a token although HTTP_HOST is beyond loopback (on purpose)."
    )
    ecsim_fault_seed: int | None = Field(
        None, description="Seed of the fault injector's random choices, for reproducible runs."
    )
    ecsim_seed_file: Path | None = Field(
        None, description="JSON file of objects to create at start, shaped like the body of POST /sim/seed."
    )
    ecsim_export_dropzone_url: str = Field(
        "",
        description="Drop zone the bridge exports inbound data files to, processed by ecsim (file:///path or "
        "s3://bucket/prefix; empty: file:// + <repo>/var/dropzones/export, the bridge's default).",
    )
    ecsim_import_dropzone_url: str = Field(
        "",
        description="Drop zone ecsim delivers outbound batch files to, read by the bridge (empty: "
        "file:// + <repo>/var/dropzones/import, the bridge's default).",
    )
    ecsim_inbound_poll_interval_s: float = Field(
        2.0, ge=0, description="How often the export drop zone is scanned for inbound files (0: only on request)."
    )
    ecsim_inbound_delay_s: float = Field(
        0.5,
        ge=0,
        le=7 * 86400,
        description="The background poller processes an inbound file no sooner than this after first seeing it "
        "(the platform takes hours; POST /sim/inbound/scan skips it).",
    )
    ecsim_delivery_interval_s: float | None = Field(
        None,
        gt=0,
        description="Deliver an iter batch to every S2S destination with mappings this often (unset: on request).",
    )
    ecsim_dropzone_retry_max_s: float = Field(
        30.0, ge=0, description="How long a delivery keeps retrying an unavailable import drop zone before failing."
    )
    ecsim_s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint for s3:// drop zones (credentials: the AWS default chain)."
    )
    ecsim_s3_region: str | None = Field(None, description="Region of s3:// drop zones.")
    ecsim_realtime_url: str = Field(
        "",
        description="The partner endpoint real-time deliveries are POSTed to, e.g. the bridge's "
        "http://127.0.0.1:8084/platform/realtime (empty: each POST /sim/realtime/* request names it).",
    )
    ecsim_realtime_signing_key: SecretStr | None = Field(
        None, description="Key real-time deliveries are signed with (unset: each request gives it, or unsigned)."
    )
    ecsim_realtime_signature_header: str = Field(
        "X-Signature", min_length=1, description="Header real-time deliveries carry their signature in."
    )
    ecsim_realtime_signature_algorithm: SignatureAlgorithm = Field(
        "sha1", description="Hash of the real-time signature: sha1, sha256 or md5."
    )

    @field_validator("ecsim_export_dropzone_url", "ecsim_import_dropzone_url")
    @classmethod
    def _zone_url(cls, value: str) -> str:
        if value and not value.startswith(("file:///", "s3://")):
            raise ValueError("must be file:///abs/path or s3://bucket/prefix (or empty for the local default)")
        if value:
            try:
                open_dropzone(value)  # no I/O: only the URL's shape is checked, so a typo stops the start
            except ConfigError as exc:
                raise ValueError(exc.message) from None
        return value

    @property
    def export_dropzone_url(self) -> str:
        return self.ecsim_export_dropzone_url or DEFAULT_EXPORT_DROPZONE.as_uri()

    @property
    def import_dropzone_url(self) -> str:
        return self.ecsim_import_dropzone_url or DEFAULT_IMPORT_DROPZONE.as_uri()
