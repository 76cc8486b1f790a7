"""A segment event of the usual shape read without pydantic: what the model would build, for a fraction of the time.

``segment-events`` carries the upstream systems' changes and the platform's real-time feed (20,000 user changes
a second): validating each through the model (its ``Identifier`` patterns, its datetime parser) was a large part of
ingest's time per event. An event whose every field is plain ASCII of the expected type, and whose ``occurred_at``
is an ISO 8601 timestamp of the strict form below, is checked here as the model's constraints say and built
without validating. Anything else (a Unicode ID, a timestamp as a number, a field missing or extra, a value the
model would refuse) answers None: the model then decides, and names the dead-letter reason as it always did.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, TypeVar

from shared.messages import MAX_ID_LENGTH, SCHEMA_VERSION, Message, SegmentEvent

M = TypeVar("M", bound=Message)

# ASCII only, where Python's and pydantic's regex engines agree: an Identifier is printable, without space or
# comma (``^[^\s,]+$``); a Name is printable (``^[^\x00-\x1f\x7f]+$``), up to 200 characters.
_IDENTIFIER = re.compile(rf"[!-+\--~]{{1,{MAX_ID_LENGTH}}}")
_NAME = re.compile(r"[ -~]{1,200}")
# The form both parsers read the same way: date, "T", time with up to 6 fractional digits, "Z" or ±hh:mm or none.
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})?")
_FIELDS = frozenset(SegmentEvent.model_fields)
_REQUIRED = frozenset(name for name, f in SegmentEvent.model_fields.items() if f.is_required())
_IDENTIFIERS = ("event_id", "segment_id", "id")
_new = object.__new__
_set = object.__setattr__


def _identifier(value: Any) -> bool:
    return type(value) is str and _IDENTIFIER.fullmatch(value) is not None


def _timestamp(value: Any) -> datetime | None:
    if type(value) is not str or _TIMESTAMP.fullmatch(value) is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:  # no such date or time (February 30th, 25 o'clock): the model names the problem
        return None


def native_event(data: dict[str, Any]) -> SegmentEvent | None:
    """The SegmentEvent pydantic would validate from ``data`` when it has the usual shape; None otherwise."""
    keys = data.keys()
    if not (_REQUIRED <= keys <= _FIELDS):
        return None
    version = data.get("schema_version", SCHEMA_VERSION)
    if type(version) is not int or version != SCHEMA_VERSION:
        return None
    id_type, op, data_source = data["id_type"], data["op"], data["data_source"]
    if (id_type != "ecid" and id_type != "declared") or (op != "add" and op != "remove"):
        return None
    if type(data_source) is not str or _NAME.fullmatch(data_source) is None:
        return None
    if not all(_identifier(data[name]) for name in _IDENTIFIERS):
        return None
    occurred_at = _timestamp(data["occurred_at"])
    if occurred_at is None:
        return None
    fields = {
        "schema_version": SCHEMA_VERSION,
        "event_id": data["event_id"],
        "segment_id": data["segment_id"],
        "id_type": id_type,
        "data_source": data_source,
        "id": data["id"],
        "op": op,
        "occurred_at": occurred_at,
    }
    return built(SegmentEvent, fields, set(keys))


def built(model: type[M], fields: dict[str, Any], fields_set: set[str]) -> M:
    """A ``model`` holding ``fields`` (already checked), as BaseModel.model_construct would set it, without its
    per-field walk (slower than validating)."""
    message = _new(model)
    _set(message, "__dict__", fields)
    _set(message, "__pydantic_fields_set__", fields_set)
    _set(message, "__pydantic_extra__", None)
    _set(message, "__pydantic_private__", None)
    return message
