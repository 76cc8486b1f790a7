"""Debezium's Postgres change events for a campaign recipient table, read as the bridge's recipient changes.

Pure: a decoded JSON value in, the fields of a ``recipient-changes`` message out (validated afterwards by
:class:`shared.messages.RecipientChange`), or :class:`CdcError` saying why the event cannot be applied.

Debezium's value (``JsonConverter``, with ``schemas.enable`` true it is wrapped as ``{"schema": …,
"payload": …}``): ``op`` is ``c`` (insert), ``u`` (update), ``r`` (snapshot read), ``d`` (delete), ``t``
(truncate) or ``m`` (logical decoding message); ``before``/``after`` are the row before and after the change
(``before`` of a delete holds at least the primary key, whatever the table's REPLICA IDENTITY); ``source.lsn`` is
the change's position in the WAL, and ``source.ts_ms`` the commit time. Changes to one row are serialised by
its lock, so their LSNs grow with their commit order: the LSN is the change's position, which the bridge
compares per recipient so that a replayed or reordered event never undoes a newer one.

Column mapping (the README's "Recipient changes" section documents it): ``recipient_id`` (or ``id``) ->
recipient id; ``email``, ``crm_id``, ``first_name``, ``last_name`` as named; ``opted_out`` (boolean, or 0/1)
-> consent. Other columns are ignored; a missing mapped column is NULL (``opted_out``: false).
"""

from __future__ import annotations

from typing import Any, Final

ID_COLUMNS: Final = ("recipient_id", "id")
TEXT_COLUMNS: Final = ("email", "crm_id", "first_name", "last_name")
CONSENT_COLUMN: Final = "opted_out"
_UPSERT_OPS: Final = {"c": "insert", "u": "update", "r": "snapshot read"}
_REFUSED_OPS: Final = {
    "t": "a truncate is not applied (it would forget every recipient): delete the rows instead",
    "m": "a logical decoding message carries no row",
}


class CdcError(ValueError):
    """The change event cannot be read as a recipient change (a ValueError: the message model reports it)."""


def is_change_event(data: Any) -> bool:
    """Whether a decoded value is a Debezium change event (wrapped or not) rather than a native change."""
    if not isinstance(data, dict):
        return False
    if "payload" in data and "schema" in data:
        return True
    return "op" in data and ("after" in data or "before" in data or "source" in data)


def unwrap(data: dict[str, Any]) -> dict[str, Any]:
    """The event itself: ``payload`` when the converter wrapped it with its schema."""
    if "payload" in data and "schema" in data:
        payload = data["payload"]
        if not isinstance(payload, dict):
            raise CdcError("the schema wrapper's payload is not an object (a tombstone has no value to apply)")
        return payload
    return data


def recipient_id_of(row: dict[str, Any]) -> int:
    for column in ID_COLUMNS:
        value = row.get(column)
        if value is None:
            continue
        if isinstance(value, bool):
            break
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
            return int(value)
        raise CdcError(f"column {column!r} is not an integer recipient id: {str(value)[:40]!r}")
    raise CdcError(f"the row has no recipient id (a column named one of {', '.join(ID_COLUMNS)})")


def consent_of(value: Any) -> bool:
    """``opted_out`` as Debezium renders a boolean (true/false) or a smallint/int flag (0/1); NULL: not opted out."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise CdcError(f"column {CONSENT_COLUMN!r} is not a boolean: {str(value)[:40]!r}")


def position_of(source: Any) -> tuple[int, int | None]:
    """(position, commit time in epoch ms) from ``source``: the LSN, else (other connectors) the time in µs."""
    if not isinstance(source, dict):
        raise CdcError("the event has no source block (its position is needed to order changes)")
    ts_ms = source.get("ts_ms")
    if ts_ms is not None and (isinstance(ts_ms, bool) or not isinstance(ts_ms, int)):
        raise CdcError("source.ts_ms is not an integer")
    lsn = source.get("lsn")
    if isinstance(lsn, int) and not isinstance(lsn, bool) and lsn >= 0:
        return lsn, ts_ms
    if lsn is not None:
        raise CdcError(f"source.lsn is not a non-negative integer: {str(lsn)[:40]!r}")
    ts_us = source.get("ts_us")
    if isinstance(ts_us, int) and not isinstance(ts_us, bool) and ts_us >= 0:
        return ts_us, ts_ms
    if isinstance(ts_ms, int) and ts_ms >= 0:
        return ts_ms * 1000, ts_ms
    raise CdcError("the event's source has neither lsn nor a timestamp: it cannot be ordered")


def change_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The fields of a native recipient change for a Debezium change event (wrapped or not)."""
    event = unwrap(data)
    op = event.get("op")
    if op in _REFUSED_OPS:
        raise CdcError(f"op {op!r}: {_REFUSED_OPS[op]}")
    position, ts_ms = position_of(event.get("source"))
    fields: dict[str, Any] = {"position": position}
    if ts_ms is not None:
        fields["changed_at"] = ts_ms / 1000
    if op == "d":
        before = event.get("before")
        if not isinstance(before, dict):
            raise CdcError("a delete without its before row (the table's primary key is needed)")
        return {**fields, "op": "delete", "recipient_id": recipient_id_of(before)}
    if op not in _UPSERT_OPS:
        raise CdcError(f"unknown op {str(op)[:20]!r} (expected c, u, r or d)")
    after = event.get("after")
    if not isinstance(after, dict):
        raise CdcError(f"an {_UPSERT_OPS[op]} without its after row")
    fields |= {column: after.get(column) for column in TEXT_COLUMNS}
    return {
        **fields,
        "op": "upsert",
        "recipient_id": recipient_id_of(after),
        "opted_out": consent_of(after.get(CONSENT_COLUMN)),
    }
