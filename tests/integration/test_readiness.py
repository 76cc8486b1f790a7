"""/readyz of a Kafka+Postgres service: a consumer whose batch hangs stays alive but stops being ready."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from pydantic import SecretStr

from shared.kafka import Delivery, OutgoingMessage
from shared.kafka.consumer import Handler
from shared.messages import Message, SegmentEvent
from shared.service import KafkaPostgresApp
from shared.settings import DatabaseSettings, KafkaSettings
from shared.topics import SEGMENT_EVENTS
from tests.helpers import eventually, segment_event

pytestmark = pytest.mark.integration


class _Settings(KafkaSettings, DatabaseSettings):
    pass


class _HangingApp(KafkaPostgresApp):
    name = "hanging"

    def __init__(self, settings: _Settings) -> None:
        super().__init__(settings)
        self.release = asyncio.Event()
        self.handled = 0

    def subscriptions(self) -> Mapping[str, tuple[type[Message], Handler]]:
        async def handler(deliveries: Sequence[Delivery[Any]]) -> None:
            await self.release.wait()  # a handler stuck on something that never answers
            self.handled += len(deliveries)

        return {SEGMENT_EVENTS: (SegmentEvent, handler)}


async def test_a_hung_batch_makes_the_service_unready_until_it_moves(
    kafka_bootstrap: str, topic_prefix: str, database_url: str
) -> None:
    settings = _Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        database_url=SecretStr(database_url),
        consumer_stuck_after_s=0.5,
        shutdown_grace_s=0.5,
    )
    app = _HangingApp(settings)
    await app.start()
    try:
        await eventually(app.readiness, until=lambda checks: all(checks.values()))
        await app.producer.send([OutgoingMessage.of(f"{topic_prefix}{SEGMENT_EVENTS}", segment_event(1))])
        checks = await eventually(app.readiness, until=lambda c: not c["consumers"], timeout=30)
        assert checks["kafka"]
        assert checks["postgres"]  # alive and connected, yet not ready: it makes no progress
        app.release.set()
        await eventually(app.readiness, until=lambda c: all(c.values()), timeout=30)
        assert app.handled == 1
    finally:
        await app.stop()
