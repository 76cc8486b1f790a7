"""Topic names. A prefix (``TOPIC_PREFIX``) lets several deployments or test runs share one cluster."""

from __future__ import annotations

SEGMENT_EVENTS = "segment-events"
AUDIENCE_MEMBERSHIP = "audience-membership"
AUDIENCE_EXPORT_REQUESTS = "audience-export-requests"
AUDIENCE_EXPORT_BATCHES = "audience-export-batches"
AUDIENCE_SYNC_STATUS = "audience-sync-status"
RECIPIENT_CHANGES = "recipient-changes"
VISITOR_LINKS = "visitor-links"

ALL_TOPICS = (
    SEGMENT_EVENTS,
    AUDIENCE_MEMBERSHIP,
    AUDIENCE_EXPORT_REQUESTS,
    AUDIENCE_EXPORT_BATCHES,
    AUDIENCE_SYNC_STATUS,
    RECIPIENT_CHANGES,
    VISITOR_LINKS,
)
DLQ_SUFFIX = ".dlq"


def topic_name(prefix: str, base: str) -> str:
    return f"{prefix}{base}"


def dlq_name(topic: str) -> str:
    """The dead-letter topic of ``topic`` (already prefixed)."""
    return f"{topic}{DLQ_SUFFIX}"
