"""Kafka for the services: safe producer defaults, a consumer loop with DLQ and retries, topic creation."""

from shared.kafka.admin import ensure_topics
from shared.kafka.consumer import ConsumerLoop, Delivery, Rejected
from shared.kafka.producer import OutgoingMessage, Producer

__all__ = ["ConsumerLoop", "Delivery", "OutgoingMessage", "Producer", "Rejected", "ensure_topics"]
