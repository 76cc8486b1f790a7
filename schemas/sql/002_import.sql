-- Import (platform segment -> campaign list): declared-key derivation, full-run staging, run progress,
-- and ingest's ledger of processed drop-zone batches.

-- The declared ID of a recipient field under a data source's transform. IMMUTABLE (the database encoding
-- is fixed) so it can back expression indexes: a join on it never hashes the whole recipient table.
-- Mirrors shared/ids.py declared_key(): trim whitespace; sha256 = hex SHA-256 of the lower-cased value.
CREATE FUNCTION ab_declared_key(value text, transform text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN nullif(btrim(value, E' \t\n\r\f\v'), '') IS NULL THEN NULL
        WHEN transform = 'none' THEN btrim(value, E' \t\n\r\f\v')
        WHEN transform = 'sha256'
            THEN encode(sha256(convert_to(lower(btrim(value, E' \t\n\r\f\v')), 'UTF8')), 'hex')
    END
$$;

-- The keys used by the usual reconciliation keys; reconcile creates any other combination on demand.
CREATE INDEX recipient_key_email_sha256 ON recipient (ab_declared_key(email, 'sha256'));
CREATE INDEX recipient_key_crm_id_none ON recipient (ab_declared_key(crm_id, 'none'));

ALTER TABLE run
    ADD COLUMN data_source_id  integer REFERENCES data_source (data_source_id),
    ADD COLUMN list_id         bigint REFERENCES list (list_id),
    ADD COLUMN id_type         text CHECK (id_type IN ('ecid', 'declared')),
    ADD COLUMN batches_applied integer NOT NULL DEFAULT 0,
    ADD COLUMN last_seq        integer,
    ADD COLUMN released_by     text;

-- Recipients matched by a full snapshot still arriving; applied atomically when its last batch is in.
CREATE TABLE import_stage (
    run_id       uuid   NOT NULL REFERENCES run (run_id) ON DELETE CASCADE,
    recipient_id bigint NOT NULL,
    PRIMARY KEY (run_id, recipient_id)
);

-- ingest: each outbound batch (its .info root name) is turned into runs once.
CREATE TABLE processed_file (
    batch_root   text        PRIMARY KEY,
    state        text        NOT NULL CHECK (state IN ('processing', 'processed', 'rejected')),
    reason       text,
    run_ids      uuid[]      NOT NULL DEFAULT '{}',
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
