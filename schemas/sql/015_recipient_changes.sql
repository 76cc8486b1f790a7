-- The campaign side as a stream (issue 18): recipient changes in order, clicks, consent and erasure.
-- reconcile applies them: services/reconcile/recipient_changes.py, visitor_links.py, recipient_erasure.py.

-- Consent: an opted-out recipient is never exported and leaves every shared audience on its next mirror/full
-- run. A constant default: adding the column rewrites nothing. The partial index is the few opted-out
-- recipients, what an export's anti-join reads instead of the whole list.
ALTER TABLE recipient ADD COLUMN opted_out boolean NOT NULL DEFAULT false;
CREATE INDEX recipient_opted_out_idx ON recipient (recipient_id) WHERE opted_out;

-- The last change applied per recipient (its source position: a sequence, a WAL LSN or epoch µs), kept after
-- a delete (deleted = true) so that a replayed or late upsert cannot bring a deleted recipient back. No
-- foreign key: it outlives the recipient on purpose.
CREATE TABLE recipient_version (
    recipient_id bigint      PRIMARY KEY,
    position     bigint      NOT NULL,
    deleted      boolean     NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now()
);

-- A click for a recipient the bridge does not know yet (the two topics are not ordered with each other):
-- linked as soon as the recipient arrives, dropped if it is deleted.
CREATE TABLE visitor_link_pending (
    ecid         text        NOT NULL CHECK (ecid ~ '^[0-9]{38}$'),
    recipient_id bigint      NOT NULL,
    seen_at      timestamptz NOT NULL,
    PRIMARY KEY (recipient_id, ecid)
);

-- IDs the bridge shared for a recipient since deleted or forgotten: the next export of the audience removes
-- them, whatever its mode (mirror and full would anyway; append removes nothing else). Gone once the
-- audience no longer holds them (retention).
CREATE TABLE withdrawn_id (
    audience_id  text        NOT NULL,
    id           text        NOT NULL,
    recipient_id bigint      NOT NULL,
    withdrawn_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (audience_id, id, recipient_id)
);
