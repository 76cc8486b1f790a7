"""Settings of ingest's real-time receiver (``POST /platform/realtime``), a part of ``IngestSettings``."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, model_validator

from shared.formats.realtime_signature import SignatureAlgorithm
from shared.settings import BaseServiceSettings


class RealtimeSettings(BaseServiceSettings):
    realtime_enabled: bool = Field(
        False,
        description="Serve POST /platform/realtime, the platform's real-time deliveries, on REALTIME_PORT "
        "(needs REALTIME_SIGNING_KEYS_FILE: without a key the service refuses to start).",
    )
    realtime_host: str = Field(
        "127.0.0.1",
        description="Address the real-time receiver binds to (0.0.0.0 behind the TLS proxy the platform reaches).",
    )
    realtime_port: int = Field(
        8084, ge=0, le=65535, description="Port of POST /platform/realtime (apart from the probes and pages)."
    )
    realtime_workers: int = Field(
        1,
        ge=0,
        le=64,
        description="Processes of their own that serve REALTIME_PORT (sharing its socket), so that receiving does "
        "not compete with ingest's consumers for one interpreter; each has its Kafka producer and Postgres "
        "connection, ends with ingest, and its metrics are summed into ingest's /metrics (0: served in ingest's "
        "own process).",
    )
    realtime_signature_header: str = Field(
        "X-Signature",
        min_length=1,
        pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
        description="Header the platform puts a delivery's signature in (as agreed with the platform).",
    )
    realtime_signature_algorithm: SignatureAlgorithm = Field(
        "sha1", description="Hash of the HMAC signature: sha1 (the platform's example), sha256 or md5."
    )
    realtime_signing_keys_file: Path | None = Field(
        None,
        description="File of the keys deliveries may be signed with, one a line (# comments): during a rotation, "
        "both keys. Re-read when it changes, no restart needed.",
    )
    realtime_oauth_introspection_url: str = Field(
        "",
        description="The platform's alternative to signatures: deliveries with an OAuth 2.0 bearer token are "
        "checked by token introspection (RFC 7662) at this URL of the issuer the platform gets tokens from "
        "(empty: bearer tokens are not taken).",
    )
    realtime_oauth_client_id: str = Field("", description="Client id ingest introspects tokens as.")
    realtime_oauth_client_secret: SecretStr | None = Field(None, description="Its secret.")
    realtime_response_timeout_s: float = Field(
        2.5,
        gt=0,
        le=30,
        description="A delivery whose changes are not on Kafka within this long is answered 503 (the platform "
        "gives up after 3 s and retries once).",
    )

    @model_validator(mode="after")
    def _key_when_enabled(self) -> Self:
        if self.realtime_oauth_introspection_url and not (
            self.realtime_oauth_client_id and self.realtime_oauth_client_secret is not None
        ):
            raise ValueError(
                "REALTIME_OAUTH_INTROSPECTION_URL needs REALTIME_OAUTH_CLIENT_ID and REALTIME_OAUTH_CLIENT_SECRET"
            )
        if self.realtime_oauth_introspection_url and not self.realtime_oauth_introspection_url.startswith(
            ("http://", "https://")
        ):
            raise ValueError("REALTIME_OAUTH_INTROSPECTION_URL must be an http(s):// URL")
        if (
            self.realtime_enabled
            and self.realtime_signing_keys_file is None
            and not self.realtime_oauth_introspection_url
        ):
            raise ValueError(
                "REALTIME_ENABLED=true needs REALTIME_SIGNING_KEYS_FILE (the platform's signing keys), or an OAuth "
                "issuer (REALTIME_OAUTH_INTROSPECTION_URL)"
            )
        return self
