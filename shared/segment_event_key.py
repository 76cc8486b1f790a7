"""The Kafka key of a ``segment-events`` record: ``<segment_id>:<id>``.

Order matters only per (segment, ID): an ID's later change in a segment must not be applied before its earlier
one. Keying by that pair keeps each pair's events in one partition, in order, while one segment's events spread
over every partition (one partition moves ~10,000 events/s here: a segment keyed alone could not go faster).
The segment stays in the key, rather than the ID alone, so that one ID in many segments (a busy device) does not
weigh on one partition, and so that the key names exactly the unit of order (the ledger's member,
:mod:`services.ingest.event_ledger`).

Records keyed the old way (the segment id alone) are still consumed correctly: a segment's events then stay in
one partition, in order, only slower. A producer may switch from one key to the other: the ledger orders each
member's changes across partitions by ``occurred_at``.
"""

from __future__ import annotations


def segment_event_key(segment_id: str, member_id: str) -> bytes:
    """The key of a segment event changing ``member_id`` in ``segment_id``."""
    return f"{segment_id}:{member_id}".encode()
