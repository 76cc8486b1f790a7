"""The platform's JSON objects as typed models (field names as the AAM REST API spells them).

``*Spec`` models are what a create (POST) or update (PUT) sends; the models named after the object are
what the platform answers: the spec plus ids, partner, times (epoch milliseconds) and audit user ids.
Unknown fields are kept (``extra="allow"``): the platform answers with more than the contract lists,
and an update built from a fetched object must not drop them.
"""

from __future__ import annotations

from typing import Any, Final, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

ON_BOARDED_TRAIT: Final = "ON_BOARDED_TRAIT"
RULE_BASED_TRAIT: Final = "RULE_BASED_TRAIT"
ALGO_TRAIT: Final = "ALGO_TRAIT"

#: Data export control meaning "cannot be tied to personally identifiable information".
PII: Final = "PII"

# Set by the platform: never sent back in a create or update body.
SERVER_FIELDS: Final = frozenset({"pid", "createTime", "updateTime", "crUID", "upUID", "traitRuleVersion"})


class PlatformModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    def request_body(self, id_field: str | None = None) -> dict[str, Any]:
        """The JSON a POST/PUT sends: set fields only, without server-managed ones."""
        body = self.model_dump(by_alias=True, exclude_none=True)
        for key in (*SERVER_FIELDS, *((id_field,) if id_field else ())):
            body.pop(key, None)
        return body


class _Audited(PlatformModel):
    pid: int | None = None
    create_time: int | None = Field(None, description="Epoch milliseconds.")
    update_time: int | None = Field(None, description="Epoch milliseconds.")
    cr_uid: int | None = Field(None, alias="crUID")
    up_uid: int | None = Field(None, alias="upUID")


# --- data sources --------------------------------------------------------------------------------------


class DataSourceSpec(PlatformModel):
    name: str
    description: str | None = None
    integration_code: str | None = None
    data_export_restrictions: list[str] = Field(default_factory=list, description='Data export controls, e.g. ["PII"].')
    id_type: str | None = None
    inbound_s2s: bool | None = Field(None, alias="inboundS2S")
    outbound_s2s: bool | None = Field(None, alias="outboundS2S")
    unique_trait_integration_codes: bool | None = None
    unique_segment_integration_codes: bool | None = None
    status: str | None = None
    type: str | None = None


class DataSource(DataSourceSpec, _Audited):
    data_source_id: int

    @property
    def forbids_pii(self) -> bool:
        """True when the data "cannot be tied to personally identifiable information"."""
        return PII in self.data_export_restrictions


# --- traits ----------------------------------------------------------------------------------------------


class TraitSpec(PlatformModel):
    name: str
    trait_type: str = Field(description="ON_BOARDED_TRAIT, RULE_BASED_TRAIT or ALGO_TRAIT.")
    data_source_id: int
    folder_id: int = 0
    trait_rule: str | None = None
    ttl: int | None = Field(None, description="Days; the platform's default is 120, 0 = never expires.")
    integration_code: str | None = None
    description: str | None = None
    comments: str | None = None
    status: str | None = None


class Trait(TraitSpec, _Audited):
    sid: int
    trait_rule_version: int | None = None


# --- segments --------------------------------------------------------------------------------------------


class SegmentSpec(PlatformModel):
    name: str
    segment_rule: str = Field(description="Trait ids suffixed with T and AND/OR/NOT, e.g. '123T'.")
    data_source_id: int
    folder_id: int = 0
    merge_rule_data_source_id: int | None = None
    integration_code: str | None = None
    description: str | None = None
    status: str | None = None


class Segment(SegmentSpec, _Audited):
    sid: int


def one_trait_rule(trait_sid: int) -> str:
    """The rule of a segment that is exactly the members of one trait."""
    return f"{trait_sid}T"


# --- destinations ----------------------------------------------------------------------------------------


class DestinationSpec(PlatformModel):
    name: str
    destination_type: str = Field(description="PUSH (URL) or ADS (cookie); S2S ones are read-only.")
    description: str | None = None
    data_source_id: int | None = None
    status: str | None = None
    start_date: str | None = None
    end_date: str | None = None
    url_format_string: str | None = None
    secure_url_format_string: str | None = None
    delimiter: str | None = None
    serialization_enabled: bool | None = None
    mappings: list[dict[str, Any]] | None = None


class Destination(DestinationSpec, _Audited):
    destination_id: int

    @property
    def segment_ids(self) -> list[int]:
        return [m["sid"] for m in self.mappings or () if isinstance(m.get("sid"), int)]


# --- inbound processing history -------------------------------------------------------------------------


class InboundReceipt(PlatformModel):
    """One processing receipt of inbound data files (counters as the platform's receipt names them:
    "Records received", "Format Errors", "Invalid AAM ID", "No Matching AAM ID", "No Trait Realized",
    "Records processed", "Stored Records"; error samples as the onboarding report's, at most 10 per type)."""

    data_file_name: str | None = None
    data_source_id: int | None = None
    records_received: int | None = None
    records_processed: int | None = None
    stored_records: int | None = None
    format_errors: int | None = None
    invalid_aam_ids: int | None = None
    no_matching_aam_id: int | None = None
    no_trait_realized: int | None = None
    success: bool | None = None
    status: str | None = None
    reason: str | None = None
    error_samples: list[dict[str, Any]] | None = None
    start_time: int | None = None
    end_time: int | None = None


# --- paging ------------------------------------------------------------------------------------------------

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """A wrapped list answer: ``{"total", "page", "pageSize", "list"}``."""

    model_config = ConfigDict(populate_by_name=True)

    total: int = Field(ge=0)
    page: int = Field(ge=0)
    page_size: int = Field(alias="pageSize", ge=1)
    items: list[T] = Field(alias="list")
