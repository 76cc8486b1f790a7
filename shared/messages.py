"""The messages on every topic: one pydantic model each, the single source of their JSON Schemas.

Values are JSON (UTF-8). Every model carries ``schema_version``; a consumer rejects (dead-letters) a
major version it does not know rather than guessing. IDs travel in batches (``adds``/``removes``) of a
few thousand, so a message stays far below Kafka's 1 MB limit and the hot path validates one object per
batch, not one per ID.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.errors import PoisonMessage
from shared.formats import cdc
from shared.runs.states import Direction as Direction
from shared.runs.states import RunState as RunState
from shared.segment_event_key import segment_event_key

SCHEMA_VERSION: Literal[1] = 1
MAX_IDS_PER_BATCH = 10_000
MAX_ID_LENGTH = 256

IdType = Literal["ecid", "declared"]
ExportMode = Literal["append", "mirror", "full"]
RequestChannel = Literal["api", "cli", "kafka"]
MembershipMode = Literal["full", "delta"]

# An identifier as it travels: bounded, no whitespace (the platform's formats use TAB, space and comma
# as separators, so an ID containing them could never be written back out).
Identifier = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[^\s,]+$")]
# Names of audiences, lists and data sources: printable, bounded.
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Message(BaseModel):
    """Base of every topic's value."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    topic: ClassVar[str]
    description: ClassVar[str]
    # A record without a value (a tombstone, as a CDC connector writes after a delete for log compaction)
    # is passed over instead of dead-lettered.
    skips_tombstones: ClassVar[bool] = False

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Version of this message's schema.")

    def key(self) -> bytes:
        """The partition key: keeps each audience's (or segment's, list's, run's) messages in order."""
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", exclude_none=False))


class SegmentEvent(Message):
    topic: ClassVar[str] = "segment-events"
    description: ClassVar[str] = "One membership change of one ID in one segment, from an upstream system."

    event_id: Identifier = Field(description="Producer-assigned unique id; duplicates are ignored.")
    segment_id: Identifier = Field(description="The platform segment (or upstream audience) id.")
    id_type: IdType
    data_source: Name = Field(description="Name of the configured data source the ID belongs to.")
    id: Identifier = Field(description="The Visitor ID (ECID, 38 digits) or declared ID (usually hashed).")
    op: Literal["add", "remove"]
    occurred_at: datetime

    def key(self) -> bytes:
        return segment_event_key(self.segment_id, self.id)


class _IdBatch(Message):
    run_id: uuid.UUID = Field(description="The run this batch belongs to.")
    seq: int = Field(ge=0, description="Position of this batch in its run, from 0.")
    last: bool = Field(False, description="True on the run's final batch, which also carries the totals.")
    audience_id: Name
    data_source: Name
    adds: list[Identifier] = Field(default_factory=list, max_length=MAX_IDS_PER_BATCH)
    removes: list[Identifier] = Field(default_factory=list, max_length=MAX_IDS_PER_BATCH)
    totals: dict[str, int] | None = Field(
        None, description="On the last batch: the run's counts (e.g. received, invalid, batches)."
    )

    @model_validator(mode="after")
    def _totals_only_on_last(self) -> _IdBatch:
        if self.totals is not None and not self.last:
            raise ValueError("totals are carried by the last batch only")
        return self

    def key(self) -> bytes:
        return self.audience_id.encode()


class AudienceMembership(_IdBatch):
    topic: ClassVar[str] = "audience-membership"
    description: ClassVar[str] = "A batch of a run's membership changes for one audience (ingest to reconcile)."

    id_type: IdType
    mode: MembershipMode = Field(description="full: the run is the complete snapshot; delta: changes only.")


class AudienceExportRequest(Message):
    topic: ClassVar[str] = "audience-export-requests"
    description: ClassVar[str] = "Share a campaign list as a shared audience (Update shared audience)."

    request_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    list_id: Name = Field(description="The campaign list to export (its id or name).")
    audience_name: Name
    data_source: Name
    mode: ExportMode = "append"
    requested_by: Name = Field(
        "unknown", description="Who asks: the API's authenticated user, the CLI's OS user, or what a producer claims."
    )
    requested_via: RequestChannel = Field(
        "kafka",
        description="Through what the request came: api, cli, or kafka (any other producer). Kafka records carry "
        "no producer principal: who may write the topic is decided by ACLs.",
    )

    def key(self) -> bytes:
        return self.list_id.encode()


class AudienceExportBatch(_IdBatch):
    topic: ClassVar[str] = "audience-export-batches"
    description: ClassVar[str] = "A batch of IDs to share for one audience (reconcile to publish)."

    dpid: int = Field(ge=0, description="The platform data provider id of the data source.")
    mode: ExportMode


class RunCounts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    received: int = Field(0, ge=0)
    matched: int = Field(0, ge=0)
    unmatched: int = Field(0, ge=0)
    invalid: int = Field(0, ge=0)
    added: int = Field(0, ge=0)
    removed: int = Field(0, ge=0)
    excluded: int = Field(0, ge=0)
    opted_out: int = Field(0, ge=0)


class AudienceSyncStatus(Message):
    topic: ClassVar[str] = "audience-sync-status"
    description: ClassVar[str] = "Where a run stands, for monitoring dashboards; every service reports."

    run_id: uuid.UUID
    direction: Direction
    audience_id: str | None = Field(None, max_length=200)
    state: RunState
    counts: RunCounts = Field(default_factory=RunCounts)
    match_rate: dict[str, float] | None = Field(None, description="Share of received IDs matched, per ID type.")
    reason: str | None = Field(None, max_length=2000, description="Why a run failed or is blocked.")
    service: str
    at: datetime = Field(default_factory=utcnow)

    def key(self) -> bytes:
        return str(self.run_id).encode()


# Recipient ids are the campaign's bigint keys.
RecipientId = Annotated[int, Field(ge=0, le=2**63 - 1)]
# Free text from the campaign: Postgres text cannot hold NUL.
_CampaignText = Annotated[str, Field(max_length=1000, pattern=r"^[^\x00]*$")]


class RecipientChange(Message):
    topic: ClassVar[str] = "recipient-changes"
    description: ClassVar[str] = (
        "A campaign recipient upserted (its whole row) or deleted. Debezium's Postgres change events for a "
        "recipient table are accepted too (see the README's column mapping)."
    )
    skips_tombstones: ClassVar[bool] = True

    recipient_id: RecipientId
    op: Literal["upsert", "delete"]
    email: _CampaignText | None = None
    crm_id: _CampaignText | None = None
    first_name: _CampaignText | None = None
    last_name: _CampaignText | None = None
    opted_out: bool = Field(False, description="The recipient refused sharing: never exported, leaves audiences.")
    position: int | None = Field(
        None,
        ge=0,
        le=2**63 - 1,
        description="The change's position at its source (a sequence, or a WAL LSN); per recipient, a change "
        "not after the last applied one is ignored. Without it, changed_at orders the changes.",
    )
    changed_at: datetime | None = Field(None, description="When the change was made at its source.")

    @model_validator(mode="before")
    @classmethod
    def _debezium(cls, data: Any) -> Any:
        return cdc.change_fields(data) if cdc.is_change_event(data) else data

    @model_validator(mode="after")
    def _ordered(self) -> RecipientChange:
        if self.position is None and self.changed_at is None:
            raise ValueError("a change carries its position or changed_at, or it could not be ordered")
        return self

    @property
    def version(self) -> int:
        """What orders this recipient's changes: the position, else changed_at in epoch microseconds."""
        if self.position is not None:
            return self.position
        assert self.changed_at is not None
        at = self.changed_at if self.changed_at.tzinfo else self.changed_at.replace(tzinfo=UTC)
        return int(at.timestamp() * 1_000_000)

    def key(self) -> bytes:
        return str(self.recipient_id).encode()


class VisitorLink(Message):
    topic: ClassVar[str] = "visitor-links"
    description: ClassVar[str] = "A recipient clicked a tracked link: the visitor ID (ECID) seen is theirs."

    ecid: Annotated[str, Field(pattern=r"^[0-9]{38}$")] = Field(description="The Experience Cloud ID (38 digits).")
    recipient_id: RecipientId
    seen_at: datetime = Field(description="When the click was tracked.")

    def key(self) -> bytes:
        return str(self.recipient_id).encode()


TOPIC_MODELS: tuple[type[Message], ...] = (
    SegmentEvent,
    AudienceMembership,
    AudienceExportRequest,
    AudienceExportBatch,
    AudienceSyncStatus,
    RecipientChange,
    VisitorLink,
)
MODEL_BY_TOPIC: dict[str, type[Message]] = {m.topic: m for m in TOPIC_MODELS}

M = TypeVar("M", bound=Message)


def decode(model: type[M], value: bytes | None) -> M:
    """Parse a Kafka value into ``model`` or raise PoisonMessage saying why."""
    if value is None:
        raise PoisonMessage("message has no value", topic=model.topic)
    try:
        data: Any = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise PoisonMessage("value is not JSON", topic=model.topic, error=str(exc)) from None
    if not isinstance(data, dict):
        raise PoisonMessage("value is not a JSON object", topic=model.topic)
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise PoisonMessage("unknown schema_version", topic=model.topic, schema_version=repr(version)[:40])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<value>'}: {e['msg']}" for e in exc.errors()[:10]
        )
        raise PoisonMessage("value fails validation", topic=model.topic, problems=problems) from None
