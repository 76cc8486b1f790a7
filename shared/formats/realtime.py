"""The platform's real-time outbound deliveries: one JSON POST of 1-10 users and their segment changes.

A delivery carries ``ProcessTime``, ``User_DPID`` (the data source of ``DataPartner_UUID``), ``Client_ID``,
``AAM_Destination_ID``, ``User_count`` and ``Users[]``; a user carries ``AAM_UUID``, ``DataPartner_UUID``,
``AAM_Regions`` and ``Segments[]`` of ``Segment_ID``, ``Status`` (1 active, 0 inactive / opted out /
unsegmented) and ``DateTime``.

:func:`parse_delivery` is liberal in what the documentation shows: numbers written as strings (its sample
does), ``AAM_Destination_Id`` as well as ``AAM_Destination_ID``, dates as ``Wed Jul 27 16:17:42 UTC 2016``
(also ISO 8601, or epoch seconds or milliseconds). What breaks the shape raises :class:`MalformedDelivery`
with the reason and the place (``Users[1].Segments[0].Status``). IDs are not judged here: whether an ID is
valid depends on the data source of the list it feeds. :func:`delivery_body` writes one, as ecsim sends it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

import orjson

from shared.errors import PermanentError

MAX_USERS: Final = 1000  # the platform sends 1-10 by default; far more is not a delivery but an attack
MAX_SEGMENTS_PER_USER: Final = 10_000
MAX_FIELD_LENGTH: Final = 1024
DOC_DATE_FORMAT: Final = "%a %b %d %H:%M:%S UTC %Y"  # Wed Jul 27 16:17:42 UTC 2016
DESTINATION_KEYS: Final = ("AAM_Destination_ID", "AAM_Destination_Id")
_EPOCH_MS_ABOVE: Final = 10**11  # a larger epoch number is in milliseconds (10**11 s is the year 5138)
_INTEGER: Final = re.compile(r"-?[0-9]{1,19}")
_DIGITS: Final = re.compile(r"[0-9]{1,19}")
MAX_SEGMENT_ID_LENGTH: Final = 256  # what a segment event's segment_id takes
_SEGMENT_ID: Final = re.compile(rf"[^\s,]{{1,{MAX_SEGMENT_ID_LENGTH}}}")


class MalformedDelivery(PermanentError):
    """A delivery that is not JSON or breaks the documented shape; ``reason`` says what and where."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SegmentChange:
    segment_id: str  # an integer in most cases; a customer-defined identifier where the destination allows
    active: bool
    at: datetime


class RealtimeUser(NamedTuple):  # immutable; built for every user of every delivery, faster than a dataclass
    aam_uuid: str | None
    partner_uuid: str | None
    regions: tuple[str, ...]
    segments: tuple[SegmentChange, ...]


@dataclass(frozen=True, slots=True)
class RealtimeDelivery:
    process_time: datetime | None
    user_dpid: int
    client_id: str | None
    destination_id: int
    users: tuple[RealtimeUser, ...]


def parse_delivery(body: bytes, *, received_at: datetime | None = None) -> RealtimeDelivery:
    """The delivery ``body`` holds. A segment without ``DateTime`` is dated by ``ProcessTime``, else by
    ``received_at`` (else now)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedDelivery(f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MalformedDelivery(f"the delivery must be a JSON object, not {_kind(doc)}")
    process_time = _optional_date(doc.get("ProcessTime"), "ProcessTime")
    fallback = process_time or received_at or datetime.now(UTC)
    destination_key = next((k for k in DESTINATION_KEYS if k in doc), None)
    if destination_key is None:
        raise MalformedDelivery("AAM_Destination_ID is missing")
    users = doc.get("Users")
    if not isinstance(users, list):
        raise MalformedDelivery("Users must be an array" if "Users" in doc else "Users is missing")
    if len(users) > MAX_USERS:
        raise MalformedDelivery(f"Users holds {len(users)} users, more than {MAX_USERS}")
    if "User_count" in doc:
        _integer(doc["User_count"], "User_count")  # informative only: the users are counted, not believed
    client = doc.get("Client_ID")
    return RealtimeDelivery(
        process_time=process_time,
        user_dpid=_integer(doc.get("User_DPID"), "User_DPID"),
        client_id=None if client is None else _text(client, "Client_ID"),
        destination_id=_integer(doc[destination_key], destination_key),
        users=tuple([_plain_user(u, fallback) or _user(u, f"Users[{i}]", fallback) for i, u in enumerate(users)]),
    )


def _user(raw: Any, where: str, fallback: datetime) -> RealtimeUser:
    if not isinstance(raw, dict):
        raise MalformedDelivery(f"{where} must be an object, not {_kind(raw)}")
    segments = raw.get("Segments")
    if not isinstance(segments, list):
        raise MalformedDelivery(
            f"{where}.Segments must be an array" if "Segments" in raw else f"{where}.Segments is missing"
        )
    if len(segments) > MAX_SEGMENTS_PER_USER:
        raise MalformedDelivery(f"{where}.Segments holds more than {MAX_SEGMENTS_PER_USER} segments")
    regions = raw.get("AAM_Regions", [])
    if not isinstance(regions, list):
        raise MalformedDelivery(f"{where}.AAM_Regions must be an array")
    aam, partner = raw.get("AAM_UUID"), raw.get("DataPartner_UUID")
    return RealtimeUser(
        aam_uuid=None if aam is None else _text(aam, f"{where}.AAM_UUID"),
        partner_uuid=None if partner is None else _text(partner, f"{where}.DataPartner_UUID"),
        regions=tuple([_text(r, f"{where}.AAM_Regions[{k}]") for k, r in enumerate(regions)]),
        segments=tuple(
            [
                _plain_segment(s, fallback) or _segment(s, f"{where}.Segments[{k}]", fallback)
                for k, s in enumerate(segments)
            ]
        ),
    )


def _plain_user(raw: Any, fallback: datetime) -> RealtimeUser | None:
    """The user as the platform writes them (IDs and regions as strings, every segment plain), read in one go;
    None for anything else, which :func:`_user` then reads or refuses with the reason. The receiver's hot
    path: the two give the same user."""
    if type(raw) is not dict:
        return None
    segments, regions = raw.get("Segments"), raw.get("AAM_Regions", [])
    if type(segments) is not list or len(segments) > MAX_SEGMENTS_PER_USER or type(regions) is not list:
        return None
    aam, partner = raw.get("AAM_UUID"), raw.get("DataPartner_UUID")
    if aam is not None and (type(aam) is not str or len(aam := aam.strip()) > MAX_FIELD_LENGTH):
        return None
    if partner is not None and (type(partner) is not str or len(partner := partner.strip()) > MAX_FIELD_LENGTH):
        return None
    for region in regions:
        if type(region) is not str or len(region) > MAX_FIELD_LENGTH:
            return None
    changes = [_plain_segment(s, fallback) for s in segments]
    if None in changes:
        return None
    return RealtimeUser(
        aam_uuid=aam,
        partner_uuid=partner,
        regions=tuple([r.strip() for r in regions]),
        segments=tuple(changes),  # type: ignore[arg-type]  # no None: checked above
    )


def _plain_segment(raw: Any, fallback: datetime) -> SegmentChange | None:
    """The segment as the platform writes it (an identifier, ``Status`` 0 or 1, a textual ``DateTime``), read
    without building a place for each field; None for anything else, which :func:`_segment` then reads or
    refuses with the reason. It is the receiver's hot path: the two give the same change."""
    if type(raw) is not dict or "Segment_ID" not in raw:
        return None
    segment_id, status, when = raw["Segment_ID"], raw.get("Status", 1), raw.get("DateTime")
    if type(segment_id) is str:
        if len(segment_id) > MAX_FIELD_LENGTH:
            return None
    elif type(segment_id) is not int or not -(10**19) < segment_id < 10**19:
        return None
    if type(status) is not int or status not in (0, 1):
        return None
    if when is None or when == "":
        return _plain_change(segment_id, status, None, fallback)
    if type(when) is not str or len(when) > MAX_FIELD_LENGTH:
        return None
    return _plain_change(segment_id, status, when, None)


@functools.lru_cache(maxsize=1024)
def _plain_change(
    segment_id: int | str, status: int, when: str | None, fallback: datetime | None
) -> SegmentChange | None:
    # Cached (the arguments are bounded in size by the caller): a delivery's users mostly share their segments
    # and times, and consecutive deliveries too; a SegmentChange is immutable, so one can serve them all.
    if when is None:
        at = fallback
    elif _DIGITS.fullmatch(when.strip()):
        return None  # epoch digits: the checked reading takes them
    else:
        at = _text_date(when)
    text = str(segment_id).strip()
    if at is None or not _SEGMENT_ID.fullmatch(text):
        return None
    return SegmentChange(segment_id=text, active=status == 1, at=at)


def _segment(raw: Any, where: str, fallback: datetime) -> SegmentChange:
    if not isinstance(raw, dict):
        raise MalformedDelivery(f"{where} must be an object, not {_kind(raw)}")
    if "Segment_ID" not in raw:
        raise MalformedDelivery(f"{where}.Segment_ID is missing")
    segment_id = _text(raw["Segment_ID"], f"{where}.Segment_ID")
    if not _SEGMENT_ID.fullmatch(segment_id):
        raise MalformedDelivery(
            f"{where}.Segment_ID must be an identifier of 1-{MAX_SEGMENT_ID_LENGTH} characters without whitespace "
            "or commas"
        )
    status = _integer(raw.get("Status", 1), f"{where}.Status")  # the documentation: 1 active (default)
    if status not in (0, 1):
        raise MalformedDelivery(f"{where}.Status must be 1 (active) or 0 (inactive), not {status}")
    at = _optional_date(raw.get("DateTime"), f"{where}.DateTime") or fallback
    return SegmentChange(segment_id=segment_id, active=status == 1, at=at)


def _integer(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise MalformedDelivery(f"{where} must be an integer, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    if value is None:
        raise MalformedDelivery(f"{where} is missing")
    raise MalformedDelivery(f"{where} must be an integer (or its digits as a string), not {_show(value)}")


def _text(value: Any, where: str) -> str:
    if isinstance(value, str):
        text = value.strip()
    elif isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    else:
        raise MalformedDelivery(f"{where} must be a string, not {_kind(value)}")
    if len(text) > MAX_FIELD_LENGTH:
        raise MalformedDelivery(f"{where} is longer than {MAX_FIELD_LENGTH} characters")
    return text


def _optional_date(value: Any, where: str) -> datetime | None:
    if value is None or value == "":
        return None
    return parse_date(value, where)


def parse_date(value: Any, where: str = "DateTime") -> datetime:
    """The documentation's ``Wed Jul 27 16:17:42 UTC 2016``, ISO 8601 (UTC when no offset), or epoch seconds or
    milliseconds (a number or its digits)."""
    if isinstance(value, int | str) and not isinstance(value, bool) and _DIGITS.fullmatch(str(value).strip()):
        number = int(str(value).strip())
        try:
            return datetime.fromtimestamp(number / 1000 if number >= _EPOCH_MS_ABOVE else number, UTC)
        except (OverflowError, OSError, ValueError):
            raise MalformedDelivery(f"{where} is not a time: {_show(value)}") from None
    if isinstance(value, str):
        when = _text_date(value) if len(value) <= MAX_FIELD_LENGTH else None
        if when is None:
            raise MalformedDelivery(
                f"{where} is not a time: {_show(value)} (expected e.g. 'Wed Jul 27 16:17:42 UTC 2016')"
            )
        return when
    raise MalformedDelivery(f"{where} must be a date string, not {_kind(value)}")


@functools.lru_cache(maxsize=4096)
def _text_date(value: str) -> datetime | None:
    # Cached: a delivery's segments, and consecutive deliveries, mostly carry the same few times, and strptime
    # is the costliest step of reading a delivery.
    text = " ".join(value.split())
    try:
        return datetime.strptime(text, DOC_DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def format_date(when: datetime) -> str:
    """``when`` in the documentation's format (UTC)."""
    return when.astimezone(UTC).strftime(DOC_DATE_FORMAT)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _show(value: Any) -> str:
    return repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."


@dataclass(frozen=True, slots=True)
class UserChanges:
    """What ecsim sends for one user: their IDs and segment statuses (segment id -> active)."""

    aam_uuid: str
    partner_uuid: str
    segments: Mapping[int | str, bool]


def delivery_body(
    *,
    user_dpid: int,
    destination_id: int,
    client_id: str,
    users: Sequence[UserChanges],
    at: datetime,
    regions: Sequence[str] = ("9",),
) -> bytes:
    """A delivery as the platform writes it (numbers as JSON numbers, the ``_ID`` spelling)."""
    stamp = format_date(at)
    doc = {
        "ProcessTime": stamp,
        "User_DPID": user_dpid,
        "Client_ID": client_id,
        "AAM_Destination_ID": destination_id,
        "User_count": len(users),
        "Users": [
            {
                "AAM_UUID": user.aam_uuid,
                "DataPartner_UUID": user.partner_uuid,
                "AAM_Regions": list(regions),
                "Segments": [
                    {"Segment_ID": sid, "Status": 1 if active else 0, "DateTime": stamp}
                    for sid, active in user.segments.items()
                ],
            }
            for user in users
        ],
    }
    return orjson.dumps(doc)
