-- Export (campaign list -> shared audience on the platform).

-- One row per export request: a redelivered request is recognised, and each attempt gets its own run.
CREATE TABLE export_request (
    request_id   uuid        PRIMARY KEY,
    audience_id  text        NOT NULL,
    attempts     integer     NOT NULL DEFAULT 0,
    emitted_run  uuid,
    requested_by text,
    received_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE run
    ADD COLUMN request_id uuid,
    ADD COLUMN dpid       bigint;

ALTER TABLE shared_audience
    ADD COLUMN export_mode text CHECK (export_mode IN ('append', 'mirror', 'full'));

-- Recipients of an export run that have no ID for its data source (Campaign's "could not be mapped").
CREATE TABLE export_excluded (
    run_id       uuid   NOT NULL REFERENCES run (run_id) ON DELETE CASCADE,
    recipient_id bigint NOT NULL,
    PRIMARY KEY (run_id, recipient_id)
);

-- publish: a run's IDs as they arrive, until its last batch is in and its files can be written.
CREATE TABLE publish_stage (
    run_id uuid    NOT NULL,
    seq    integer NOT NULL,
    id     text    NOT NULL,
    is_add boolean NOT NULL
);
CREATE INDEX publish_stage_run_idx ON publish_stage (run_id, is_add, id);

-- publish: batches already staged (its idempotency ledger, like applied_batch is reconcile's).
CREATE TABLE published_batch (
    run_id    uuid        NOT NULL,
    seq       integer     NOT NULL,
    staged_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq)
);

-- publish: the inbound files a run wrote (deterministic names: a retried run replaces its own files).
CREATE TABLE published_file (
    run_id     uuid        NOT NULL,
    name       text        NOT NULL,
    lines      integer     NOT NULL,
    bytes      bigint      NOT NULL,
    md5        text        NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, name)
);
