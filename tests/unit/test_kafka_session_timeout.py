"""KAFKA_SESSION_TIMEOUT_S: how long a group waits for a crashed consumer, bounded as the broker bounds it."""

from __future__ import annotations

from typing import Any

import pytest

from shared.errors import ConfigError, TransientError
from shared.kafka import consumer as consumer_module
from shared.kafka.consumer import ConsumerLoop
from shared.messages import AudienceMembership
from shared.metrics import RuntimeMetrics
from shared.settings import KafkaSettings, load_settings


class _Refused(OSError):
    pass


class _RecordingConsumer:
    """Stands in for AIOKafkaConsumer: keeps what it was built with, and cannot reach a broker."""

    built: list[dict[str, Any]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.built.append(kwargs)

    async def start(self) -> None:
        raise _Refused("no broker here")

    async def stop(self) -> None:
        return None


async def _never_called(*_: Any) -> None:
    raise AssertionError("no batch without a broker")


@pytest.mark.parametrize(("value", "expected_ms"), [(None, (10_000, 3_333)), ("6", (6_000, 2_000))])
async def test_the_consumer_joins_its_group_with_the_session_timeout_set(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected_ms: tuple[int, int]
) -> None:
    if value is None:
        monkeypatch.delenv("KAFKA_SESSION_TIMEOUT_S", raising=False)
    else:
        monkeypatch.setenv("KAFKA_SESSION_TIMEOUT_S", value)
    monkeypatch.setattr(consumer_module, "AIOKafkaConsumer", _RecordingConsumer)
    _RecordingConsumer.built.clear()
    loop = ConsumerLoop(
        settings=load_settings(KafkaSettings),
        service="test",
        models={"t.audience-membership": AudienceMembership},
        handler=_never_called,
        producer=None,  # type: ignore[arg-type]  # never reached: the consumer does not start
        metrics=RuntimeMetrics("test"),
    )
    with pytest.raises(TransientError):
        await loop.start()
    (built,) = _RecordingConsumer.built
    assert (built["session_timeout_ms"], built["heartbeat_interval_ms"]) == expected_ms


@pytest.mark.parametrize("value", ["5", "1801", "soon"])
def test_a_session_timeout_the_broker_would_refuse_stops_the_service_naming_it(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("KAFKA_SESSION_TIMEOUT_S", value)
    with pytest.raises(ConfigError, match="KAFKA_SESSION_TIMEOUT_S"):
        load_settings(KafkaSettings)
