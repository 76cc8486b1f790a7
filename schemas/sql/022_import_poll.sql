-- Import polling intervals (issue 19): an import audience may be fed no more often than every poll_every_s
-- (catalog `poll_every`); ingest keeps each such audience's polls here (services/ingest/poll_slots.py).

ALTER TABLE shared_audience ADD COLUMN poll_every_s integer CHECK (poll_every_s >= 60);

CREATE TABLE import_poll (
    audience_id     text        PRIMARY KEY REFERENCES shared_audience (audience_id) ON DELETE CASCADE,
    -- The interval the slots below were counted with: a changed interval starts counting afresh.
    every_s         integer     NOT NULL CHECK (every_s >= 60),
    -- Slots are anchor + k * every_s: counted from when the interval was (re)set, so they never drift.
    anchor          timestamptz NOT NULL DEFAULT now(),
    -- The last slot polled: a slot is polled once, whatever restarts or replicas do.
    last_slot       timestamptz,
    last_polled_at  timestamptz
);
