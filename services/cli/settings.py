"""Settings of the CLI: it talks to the same Postgres and Kafka as the services."""

from __future__ import annotations

from pydantic import Field, SecretStr

from shared.settings import DatabaseSettings, KafkaSettings


class CliSettings(KafkaSettings, DatabaseSettings):
    ecsim_sim_token: SecretStr | None = Field(
        None, description="The token ecsim's /sim endpoints require (the demo seeds the platform through them)."
    )
