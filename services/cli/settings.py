"""Settings of the CLI: it talks to the same Postgres and Kafka as the services."""

from __future__ import annotations

from shared.settings import DatabaseSettings, KafkaSettings


class CliSettings(KafkaSettings, DatabaseSettings):
    pass
