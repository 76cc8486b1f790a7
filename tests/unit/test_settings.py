"""Settings: a missing or invalid variable stops the service with its name; *_FILE secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from services.ingest.settings import IngestSettings
from services.publish.settings import PublishSettings
from services.reconcile.settings import ReconcileSettings
from shared.errors import ConfigError
from shared.settings import BaseServiceSettings, KafkaSettings, load_settings


class NeedsSecret(BaseServiceSettings):
    platform_client_secret: SecretStr


def test_missing_setting_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLATFORM_CLIENT_SECRET", raising=False)
    with pytest.raises(ConfigError) as err:
        load_settings(NeedsSecret)
    assert "PLATFORM_CLIENT_SECRET" in str(err.value)
    assert "Field required" in str(err.value)


def test_invalid_setting_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_TOPIC_PARTITIONS", "zero")
    monkeypatch.setenv("HTTP_PORT", "70000")
    with pytest.raises(ConfigError) as err:
        load_settings(IngestSettings)
    message = str(err.value)
    assert "KAFKA_TOPIC_PARTITIONS" in message
    assert "HTTP_PORT" in message


def test_database_url_must_be_a_postgres_url_and_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://root:hunter2@db/x")
    with pytest.raises(ConfigError) as err:
        load_settings(PublishSettings)
    assert "DATABASE_URL" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_defaults_match_the_design(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "HTTP_PORT", "TOPIC_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(IngestSettings)
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.database_url.get_secret_value().endswith("/audience_bridge")
    assert settings.http_port == 8081
    assert settings.topic_prefix == ""
    assert load_settings(PublishSettings).http_port == 8083


def test_secret_from_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t\n")
    monkeypatch.delenv("PLATFORM_CLIENT_SECRET", raising=False)
    monkeypatch.setenv("PLATFORM_CLIENT_SECRET_FILE", str(secret))
    assert load_settings(NeedsSecret).platform_client_secret.get_secret_value() == "s3cr3t"


def test_unreadable_secret_file_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PLATFORM_CLIENT_SECRET", raising=False)
    monkeypatch.setenv("PLATFORM_CLIENT_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError) as err:
        load_settings(NeedsSecret)
    assert "PLATFORM_CLIENT_SECRET_FILE" in str(err.value)


def test_direct_value_wins_over_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "direct")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "missing"))
    settings = load_settings(KafkaSettings)
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == "direct"


def test_import_concurrency_must_leave_connections_for_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMPORT_CONCURRENCY", "8")
    monkeypatch.setenv("DB_POOL_MAX_SIZE", "8")
    with pytest.raises(ConfigError, match=r"IMPORT_CONCURRENCY \(8\) must be below DB_POOL_MAX_SIZE \(8\)"):
        load_settings(ReconcileSettings)
    monkeypatch.setenv("DB_POOL_MAX_SIZE", "9")
    assert load_settings(ReconcileSettings).import_concurrency == 8
