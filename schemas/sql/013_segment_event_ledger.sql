-- Segment events exactly once over time (ingest, services/ingest/event_ledger.py).
--
-- segment_event_seen: every event_id ingest turned into membership, so that a producer's retry arriving in a
-- later poll (or after a restart) is ignored, as the message's documentation promises. Kept for
-- SEGMENT_EVENT_LEDGER_RETENTION_H, then purged in batches by seen_at.
CREATE TABLE segment_event_seen (
    event_id text        PRIMARY KEY,
    seen_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX segment_event_seen_at_idx ON segment_event_seen (seen_at);

-- segment_member_latest: per (segment, data source, ID), the occurred_at of the change last applied. An event
-- older than it, arriving late and out of order in a later poll, is stale: it cannot undo the newer change.
-- Purged with the same retention (by seen_at: when the change was last applied).
CREATE TABLE segment_member_latest (
    segment_id  text        NOT NULL,
    data_source text        NOT NULL,
    id          text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    op          text        NOT NULL CHECK (op IN ('add', 'remove')),
    seen_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (segment_id, data_source, id)
);
CREATE INDEX segment_member_latest_seen_at_idx ON segment_member_latest (seen_at);
