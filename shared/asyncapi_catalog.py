"""What the message models cannot say about the topics, declared for schemas/asyncapi.yaml
(:mod:`shared.asyncapi_export`): who produces and consumes each topic, which field is its key, an example of
each message, and the headers every dead letter carries. tests/unit/test_asyncapi.py compares these
declarations with the services and the consumer loop.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.messages import (
    AudienceExportBatch,
    AudienceExportRequest,
    AudienceMembership,
    AudienceSyncStatus,
    Message,
    RecipientChange,
    RunCounts,
    SegmentEvent,
    VisitorLink,
)

# The bridge's own services; any other producer or consumer is outside the repository.
SERVICES = ("ingest", "reconcile", "publish")
ACTORS: dict[str, str] = {
    "ingest": "ingest, the platform's inbound edge (services/ingest).",
    "reconcile": "reconcile, which matches IDs and keeps the campaign lists (services/reconcile); it also puts "
    "export requests of schedules and of its HTTP API on audience-export-requests.",
    "publish": "publish, the platform's outbound edge (services/publish).",
    "upstream": "Upstream systems that stream segment membership changes.",
    "campaign": "Campaign workflows (the Update shared audience activity).",
    "cli": "The audience-bridge CLI (services/cli): export requests, and run status of `retry`.",
    "dashboards": "Monitoring dashboards and other readers of run status.",
    "campaign-db": "The campaign's recipient table: its own producer, or Debezium's Postgres connector (CDC).",
    "campaign-tracking": "The campaign's tracking logs: a recipient clicked a tracked link.",
}


@dataclass(frozen=True)
class Topic:
    model: type[Message]
    key_field: str
    key: str
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    example: Message

    @property
    def name(self) -> str:
        return self.model.topic


RUN = uuid.UUID("5f0c2a4e-1d2b-5c3a-9e8f-0a1b2c3d4e5f")
AT = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
ECID = "12345678901234567890123456789012345678"
HASHED = "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514"

TOPICS: tuple[Topic, ...] = (
    Topic(
        SegmentEvent,
        "segment_id:id",
        "The segment id and the ID, joined by a colon: each ID's events in a segment stay in order, and a "
        "segment's events spread over the partitions (a producer keying by the segment id alone still works, "
        "one partition per segment).",
        producers=("upstream",),
        consumers=("ingest",),
        example=SegmentEvent(
            event_id="evt-000001",
            segment_id="5001",
            id_type="ecid",
            data_source="visitors",
            id=ECID,
            op="add",
            occurred_at=AT,
        ),
    ),
    Topic(
        AudienceMembership,
        "audience_id",
        "The audience id: a run's batches stay in order on one partition.",
        producers=("ingest",),
        consumers=("reconcile",),
        example=AudienceMembership(
            run_id=RUN,
            seq=0,
            last=True,
            audience_id="engaged-visitors",
            data_source="visitors",
            id_type="ecid",
            mode="delta",
            adds=[ECID],
            removes=[],
            totals={"received": 1, "batches": 1, "invalid_lines": 0},
        ),
    ),
    Topic(
        AudienceExportRequest,
        "list_id",
        "The list id: requests for one list stay in order.",
        producers=("campaign", "cli", "reconcile"),
        consumers=("reconcile",),
        example=AudienceExportRequest(
            request_id=uuid.UUID("0d9e8f7a-6b5c-4d3e-8f1a-2b3c4d5e6f70"),
            list_id="spring-sale-targets",
            audience_name="Spring sale",
            data_source="hashed-emails",
            mode="mirror",
            requested_by="campaign-workflow",
        ),
    ),
    Topic(
        AudienceExportBatch,
        "audience_id",
        "The audience id: a run's batches stay in order on one partition.",
        producers=("reconcile",),
        consumers=("publish",),
        example=AudienceExportBatch(
            run_id=RUN,
            seq=0,
            last=True,
            audience_id="spring-sale",
            data_source="hashed-emails",
            dpid=1002,
            mode="mirror",
            adds=[HASHED],
            removes=[],
            totals={"received": 1, "batches": 1},
        ),
    ),
    Topic(
        AudienceSyncStatus,
        "run_id",
        "The run id: a run's status events stay in order.",
        producers=(*SERVICES, "cli"),
        consumers=("dashboards",),
        example=AudienceSyncStatus(
            run_id=RUN,
            direction="import",
            audience_id="engaged-visitors",
            state="succeeded",
            counts=RunCounts(received=1000, matched=800, unmatched=190, invalid=10, added=800),
            match_rate={"ecid": 0.8},
            service="reconcile",
            at=AT,
        ),
    ),
    Topic(
        RecipientChange,
        "recipient_id",
        "The recipient id: each recipient's changes stay in order (Debezium keys by the row's primary key).",
        producers=("campaign-db",),
        consumers=("reconcile",),
        example=RecipientChange(
            recipient_id=4242,
            op="upsert",
            email="ada@example.com",
            crm_id="CRM004242",
            opted_out=False,
            position=27_264_936,
            changed_at=AT,
        ),
    ),
    Topic(
        VisitorLink,
        "recipient_id",
        "The recipient id.",
        producers=("campaign-tracking",),
        consumers=("reconcile",),
        example=VisitorLink(ecid=ECID, recipient_id=4242, seen_at=AT),
    ),
)

# The headers every dead letter carries (shared/kafka/dead_letters.py writes them): name -> (meaning, required).
DLQ_HEADERS: dict[str, tuple[str, bool]] = {
    "dlq.error": ("Class name of the error (PoisonMessage: undecodable or invalid value).", True),
    "dlq.error_class": (
        "What kind of failure it was (shared/failures.py): `content` (the message itself is wrong), `unexpected` "
        "(kept failing HANDLER_MAX_ATTEMPTS times, a bug for all we know) or `statement_timeout` (kept exceeding "
        "DB_COMMAND_TIMEOUT_S). Dependency failures are never dead-lettered.",
        True,
    ),
    "dlq.attempts": ("How many times the message was tried before it was dead-lettered, in decimal.", True),
    "dlq.run_id": ("The run the message belongs to (membership and export batches), when it could be read.", False),
    "dlq.reason": ("Why the message was rejected (at most 2,000 characters, secrets redacted).", True),
    "dlq.service": ("The service whose consumer dead-lettered the message.", True),
    "dlq.original.topic": ("The topic the message was read from (prefix included).", True),
    "dlq.original.partition": ("Its partition, in decimal.", True),
    "dlq.original.offset": ("Its offset, in decimal.", True),
    "dlq.failed_at": ("When it was dead-lettered: Unix time in milliseconds, in decimal.", True),
    "dlq.stacktrace": (
        "The end of the traceback (4,000 characters, secrets redacted), for errors other than PoisonMessage.",
        False,
    ),
    "dlq.value_omitted": (
        "Only when the original and these headers were too large for Kafka: the dead letter then has an empty "
        "value (and no key, if the key was over 1 KiB); this gives the original's sizes, `value=N key=M bytes`. "
        "The original stays at dlq.original.topic/partition/offset while the topic retains it.",
        False,
    ),
}
