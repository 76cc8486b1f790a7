"""The bodies ecsim's store accepts (the platform's objects as created or updated through the API),
validated with the platform's rules, and the JSON objects made from them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from services.ecsim import rules
from services.ecsim.store_errors import InvalidInput, Json


class _Input(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    @field_validator("integration_code", mode="before", check_fields=False)
    @classmethod
    def _blank_code_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


class DataSourceInput(_Input):
    name: str = Field(min_length=1, max_length=255)
    description: str | None = None
    integration_code: str | None = Field(None, max_length=255)
    data_export_restrictions: list[str] = Field(default_factory=list)
    id_type: Literal["COOKIE", "DEVICE_ADVERTISING_ID", "CROSS_DEVICE"] = "CROSS_DEVICE"
    inbound_s2s: bool = Field(True, alias="inboundS2S")
    outbound_s2s: bool = Field(True, alias="outboundS2S")
    unique_trait_integration_codes: bool = False
    unique_segment_integration_codes: bool = False
    status: Literal["ACTIVE", "INACTIVE"] = "ACTIVE"
    type: str = "GENERAL"

    @field_validator("data_export_restrictions")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        for label in value:
            if not label or not label.replace("_", "").isalnum():
                raise ValueError("labels are non-empty words like PII")
        return list(dict.fromkeys(value))


TraitType = Literal["RULE_BASED_TRAIT", "ON_BOARDED_TRAIT", "ALGO_TRAIT"]


class TraitInput(_Input):
    name: str = Field(min_length=1, max_length=255)
    trait_type: TraitType
    data_source_id: int = Field(ge=0)
    folder_id: int = Field(ge=0)
    trait_rule: str | None = Field(None, max_length=rules.MAX_RULE_LENGTH)
    ttl: int = Field(120, ge=0)
    integration_code: str | None = Field(None, max_length=255)
    description: str | None = None
    comments: str | None = None
    status: Literal["ACTIVE", "INACTIVE"] = "ACTIVE"


class SegmentInput(_Input):
    name: str = Field(min_length=1, max_length=255)
    segment_rule: str = Field(min_length=1)
    folder_id: int = Field(ge=0)
    data_source_id: int = Field(ge=0)
    merge_rule_data_source_id: int | None = Field(None, ge=0)
    integration_code: str | None = Field(None, max_length=255)
    description: str | None = None
    status: Literal["ACTIVE", "INACTIVE"] = "ACTIVE"


class DestinationInput(_Input):
    # Server-to-server destinations carry provisioning details the API does not describe: keep them.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: str = Field(min_length=1, max_length=255)
    description: str | None = None
    destination_type: Literal["PUSH", "ADS", "S2S"]
    data_source_id: int | None = Field(None, ge=0)
    status: str = "ACTIVE"
    start_date: str | None = None
    end_date: str | None = None
    url_format_string: str | None = None
    secure_url_format_string: str | None = None
    delimiter: str | None = None
    serialization_enabled: bool = False
    mappings: list[Json] = Field(default_factory=list)

    @field_validator("mappings")
    @classmethod
    def _mappings_name_segments(cls, value: list[Json]) -> list[Json]:
        for mapping in value:
            if not isinstance(mapping.get("sid"), int):
                raise ValueError("every mapping needs an integer sid")
        return value


def _validate(model: type[_Input], body: Any, what: str) -> Any:
    if not isinstance(body, Mapping):
        raise InvalidInput(f"the {what} must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(p) for p in err["loc"]) or "<body>", "message": err["msg"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        raise InvalidInput(f"invalid {what}", details=details) from None


# Set by the store, never taken from a request body (a destination keeps unknown fields).
_SERVER_FIELDS: Final = frozenset({"sid", "destinationId", "pid", "createTime", "updateTime", "crUID", "upUID"})


def _new(id_field: str, obj_id: int, data: BaseModel, **extra: Any) -> Json:
    fields = data.model_dump(by_alias=True)
    obj: Json = {id_field: obj_id}
    obj.update((k, v) for k, v in fields.items() if k not in _SERVER_FIELDS and k != id_field)
    obj.update(extra)
    return obj


def _copy(obj: Json) -> Json:
    # Values are JSON: only lists and dicts need copying; cheaper than deepcopy on big lists.
    out: Json = {}
    for key, value in obj.items():
        if isinstance(value, list):
            out[key] = [dict(v) if isinstance(v, dict) else v for v in value]
        elif isinstance(value, dict):
            out[key] = dict(value)
        else:
            out[key] = value
    return out
