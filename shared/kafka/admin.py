"""Topic creation at start: idempotent, with the partition count from settings."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from shared.errors import TransientError
from shared.kafka.connection import connection_kwargs
from shared.kafka.producer import MAX_REQUEST_BYTES
from shared.logging import get_logger
from shared.settings import KafkaSettings

log = get_logger(__name__)


async def _until_visible(admin: AIOKafkaAdminClient, topics: list[str], timeout_s: float) -> None:
    """Wait until the brokers' metadata shows every new topic with a leader for each partition. The
    controller answers before the brokers know: a consumer subscribing in that gap is assigned no partition
    and, aiokafka refreshing metadata every few minutes only, stays idle that long (seen under load)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        described = await asyncio.wait_for(admin.describe_topics(topics), timeout_s)
        ready = {
            t["topic"]
            for t in described
            if t.get("error_code") == 0
            and t.get("partitions")
            and all(p.get("leader", -1) >= 0 for p in t["partitions"])
        }
        if ready >= set(topics):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TransientError("new topics not visible in the cluster's metadata", topics=sorted(set(topics) - ready))
        await asyncio.sleep(0.1)


async def ensure_topics(settings: KafkaSettings, topics: Iterable[str], *, timeout_s: float = 30.0) -> None:
    """Create the topics that do not exist yet. Existing topics are left as they are."""
    names = sorted(set(topics))
    admin = AIOKafkaAdminClient(**connection_kwargs(settings, "audience-bridge-admin"))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        new = [
            NewTopic(
                name,
                num_partitions=settings.kafka_topic_partitions,
                replication_factor=settings.kafka_replication_factor,
                # A batch of long declared IDs can pass the broker's usual 1 MB default: the topic itself
                # takes what the producer may send, whatever the cluster's default.
                topic_configs={"max.message.bytes": str(MAX_REQUEST_BYTES)},
            )
            for name in names
        ]
        response = await asyncio.wait_for(admin.create_topics(new, timeout_ms=int(timeout_s * 1000)), timeout_s)
        created = []
        for entry in response.topic_errors:
            name, code = entry[0], entry[1]
            if code == 0:
                created.append(name)
            elif for_code(code) is not TopicAlreadyExistsError:
                raise TransientError("topic creation failed", topic=name, error=for_code(code).__name__)
        if created:
            log.info("topics_created", topics=created, partitions=settings.kafka_topic_partitions)
            await _until_visible(admin, created, timeout_s)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise TransientError("Kafka unavailable for topic creation", error=type(exc).__name__) from exc
    finally:
        try:
            await asyncio.wait_for(admin.close(), timeout_s)
        except (KafkaError, OSError, TimeoutError):
            log.warning("admin_close_failed")
