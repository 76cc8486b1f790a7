"""What ingest decides before any receiver process starts: in processes or in its own (REALTIME_WORKERS), a bad
key file stopping ingest itself, a port in use being one clear error."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from services.ingest.realtime import RealtimeServer
from services.ingest.realtime_settings import RealtimeSettings
from services.ingest.realtime_workers import RealtimeWorkers, build_realtime_server, listen
from shared.errors import ConfigError
from shared.kafka import Producer
from shared.settings import KafkaSettings


def _build(tmp_path: Path, workers: int, keys: str = "a-key\n") -> RealtimeServer | RealtimeWorkers | None:
    (tmp_path / "keys").write_text(keys)
    settings = RealtimeSettings(
        realtime_enabled=True, realtime_workers=workers, realtime_signing_keys_file=tmp_path / "keys"
    )
    producer = Producer(KafkaSettings(), "test")
    return build_realtime_server(settings, producer=producer, registry=CollectorRegistry(), topic_prefix="t.")


def test_receiver_processes_by_default_or_none() -> None:
    assert RealtimeSettings().realtime_workers == 1
    with pytest.raises(ValueError, match="realtime_workers"):
        RealtimeSettings(realtime_workers=-1)


def test_processes_or_ingest_s_own(tmp_path: Path) -> None:
    assert isinstance(_build(tmp_path, 2), RealtimeWorkers)
    assert isinstance(_build(tmp_path, 0), RealtimeServer)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_key_file_without_a_key_stops_ingest_itself(tmp_path: Path, workers: int) -> None:
    with pytest.raises(ConfigError, match="holds no key"):
        _build(tmp_path, workers, keys="# nothing yet\n")


def test_the_metrics_are_registered_before_any_process_reports(tmp_path: Path) -> None:
    (tmp_path / "keys").write_text("k\n")
    settings = RealtimeSettings(realtime_enabled=True, realtime_workers=2, realtime_signing_keys_file=tmp_path / "keys")
    registry = CollectorRegistry()
    build_realtime_server(settings, producer=Producer(KafkaSettings(), "test"), registry=registry, topic_prefix="")
    assert registry.get_sample_value("ab_realtime_deliveries_total", {"outcome": "accepted"}) == 0


def test_a_port_in_use_is_a_config_error() -> None:
    taken = listen("127.0.0.1", 0)
    try:
        with pytest.raises(ConfigError, match="REALTIME_PORT cannot be bound"):
            listen("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()


def test_the_listening_socket_is_handed_down() -> None:
    sock = listen("127.0.0.1", 0)
    try:
        assert sock.get_inheritable()
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    finally:
        sock.close()
