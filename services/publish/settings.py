"""Settings of the publish service (environment variables; see the README's settings table)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import DatabaseSettings, KafkaSettings


class PublishSettings(KafkaSettings, DatabaseSettings):
    http_port: int = Field(8083, ge=0, le=65535, description="Port of /healthz, /readyz and /metrics.")
