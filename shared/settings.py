"""Settings from the environment: one pydantic-settings model per service, built from these parts.

Every field maps to the upper-cased environment variable of the same name (``database_url`` ->
``DATABASE_URL``). A secret may instead be given as a file path in ``<NAME>_FILE`` (Docker and
Kubernetes secrets). Invalid or missing settings stop the service at start with the variable's name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shared.errors import ConfigError
from shared.event_loop import EventLoopName

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VAR_DIR = REPO_ROOT / "var"

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class _FileSecretsSource(PydanticBaseSettingsSource):
    """Reads ``<NAME>_FILE`` (a path) for any field whose ``<NAME>`` is not set directly."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        env_name = field_name.upper()
        path = os.environ.get(f"{env_name}_FILE")
        if path is None or env_name in os.environ:
            return None, field_name, False
        try:
            return Path(path).read_text(encoding="utf-8").strip(), field_name, False
        except OSError as exc:
            raise ConfigError(f"{env_name}_FILE cannot be read", path=path, error=exc.strerror) from exc

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                values[key] = value
        return values


class BaseServiceSettings(BaseSettings):
    """What every service has: its HTTP endpoint, logging and shutdown behaviour."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    log_level: LogLevel = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    http_host: str = Field("127.0.0.1", description="Address the health/metrics HTTP server binds to.")
    http_port: int = Field(8080, ge=0, le=65535, description="Port of /healthz, /readyz and /metrics.")
    shutdown_grace_s: float = Field(
        5.0, gt=0, description="On SIGTERM, how long the in-flight batch may take before it is abandoned."
    )
    event_loop: EventLoopName = Field(
        "uvloop",
        description="The asyncio event loop the process runs on: uvloop (less CPU per socket operation) or asyncio "
        "(the standard one). uvloop not installed: refused start, no fallback. /healthz shows the one running.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSecretsSource(settings_cls))


class PageAuthSettings(BaseServiceSettings):
    """Who may read the service's pages and API (shared.http_auth; the probes stay open)."""

    status_page_credentials: SecretStr | None = Field(
        None,
        description="Who may open the status page and /api/* (every route but /healthz, /readyz, /metrics): lines "
        "token:NAME:TOKEN and user:NAME:HASH (scrypt, from python -m shared.passwords). Unset: open on loopback, "
        "refused start beyond it (README, Security).",
    )
    status_page_public: bool = Field(
        False,
        description="Serve the pages and API without a credential although HTTP_HOST is beyond loopback (on purpose).",
    )


class KafkaSettings(BaseServiceSettings):
    """Kafka connection and consumer/producer tuning."""

    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list.")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How to reach the brokers (TLS and SASL pass through to aiokafka)."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism when the protocol is SASL_*."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password.")
    kafka_ssl_cafile: str | None = Field(None, description="CA bundle for SSL/SASL_SSL (system CAs if unset).")
    topic_prefix: str = Field("", pattern=r"^[A-Za-z0-9._-]*$", description="Prefix of every topic name.")
    kafka_topic_partitions: int = Field(6, ge=1, description="Partitions of the topics a service creates.")
    kafka_replication_factor: int = Field(1, ge=1, description="Replication factor of topics a service creates.")
    kafka_max_poll_records: int = Field(50, ge=1, description="Messages handed to a handler at most at once.")
    kafka_send_timeout_s: float = Field(30.0, gt=0, description="Bound on every produce, flush and stop.")
    kafka_compression_type: Literal["none", "snappy", "lz4", "zstd", "gzip"] = Field(
        "none",
        description="Compression of produced batches. zstd (level 3) halves hashed IDs on the wire but costs a core "
        "0.8 s per million IDs; lz4 and gzip compress at slow levels in aiokafka; snappy hardly shrinks hex IDs.",
    )
    kafka_consumer_group: str = Field(
        "", description="Consumer group prefix (default <TOPIC_PREFIX>audience-bridge-<service>); one group per topic."
    )
    consumer_stuck_after_s: float = Field(
        120.0, gt=0, description="/readyz fails when a consumer has lag but made no progress for this long."
    )
    kafka_session_timeout_s: float = Field(
        10.0,
        ge=6,
        le=1800,
        description="How long the group waits for a silent consumer (a crashed process) before its partitions go to "
        "the others; heartbeats every third of it. 6-1800: the broker's default group.min/max.session.timeout.ms.",
    )
    retry_backoff_initial_s: float = Field(0.2, gt=0, description="First delay before retrying a failed batch.")
    retry_backoff_max_s: float = Field(
        10.0,
        gt=0,
        description="Cap of the (exponential, jittered) retry delay; reconcile's export queue also waits up to this "
        "much longer than EXPORT_WAIT_POLL_S after a failed look.",
    )
    handler_max_attempts: int = Field(
        3,
        ge=1,
        description="Tries of a batch that fails unexpectedly or exceeds DB_COMMAND_TIMEOUT_S; then its failing "
        "message is dead-lettered with its stack trace and its run fails. Dependency failures retry without bound.",
    )


class DatabaseSettings(BaseServiceSettings):
    """The Postgres DSN and pool size."""

    database_url: SecretStr = Field(
        SecretStr("postgresql://audience_bridge:audience_bridge@127.0.0.1:5432/audience_bridge"),
        description="libpq URL of the database (TLS through ?sslmode=...).",
    )
    db_pool_min_size: int = Field(1, ge=0, description="Connections kept open.")
    db_pool_max_size: int = Field(8, ge=1, description="Connections at most.")
    db_command_timeout_s: float = Field(
        300.0,
        gt=0,
        description="Bound on one SQL statement; a batch exceeding it HANDLER_MAX_ATTEMPTS times fails its run.",
    )
    db_acquire_timeout_s: float = Field(
        30.0, gt=0, description="Bound on waiting for a pooled connection (then retried as Postgres unavailable)."
    )

    @field_validator("database_url")
    @classmethod
    def _postgres_scheme(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql:// (a libpq URL)")
        return value


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build ``cls`` from the environment; validation errors become one ConfigError naming the variables."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]).upper() or "<settings>"
            problems.append(f"{name}: {err['msg']}")
        raise ConfigError(
            "invalid settings: " + "; ".join(problems), variables=[p.split(":")[0] for p in problems]
        ) from None


__all__ = [
    "DEFAULT_VAR_DIR",
    "REPO_ROOT",
    "BaseServiceSettings",
    "DatabaseSettings",
    "KafkaSettings",
    "PageAuthSettings",
    "load_settings",
]
