-- Who may export what, and who asked (issue 17).

-- The catalog's export audiences: the only exports reconcile accepts (unless EXPORT_ALLOW_UNDECLARED).
-- One row per (data source, audience name): the list it is shared from, the modes allowed, and who may ask
-- (glob patterns over "<channel>:<requester>", e.g. "api:*", "cli:alice", "kafka:campaign-workflow").
CREATE TABLE IF NOT EXISTS export_audience_declaration (
    data_source_id integer     NOT NULL REFERENCES data_source (data_source_id),
    audience_name  text        NOT NULL,
    list_name      text        NOT NULL,
    modes          text[]      NOT NULL,
    requesters     text[]      NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (data_source_id, audience_name),
    CHECK (cardinality(modes) > 0 AND modes <@ ARRAY['append', 'mirror', 'full']),
    CHECK (cardinality(requesters) > 0)
);

-- The audit trail: who asked for a run and through which channel. Kafka records carry no producer
-- principal, so for a request read from Kafka both are what the producer claimed (ACLs decide who may
-- produce); the API and the CLI set them from the authenticated user and the OS user.
ALTER TABLE run
    ADD COLUMN IF NOT EXISTS requested_by  text,
    ADD COLUMN IF NOT EXISTS requested_via text;
ALTER TABLE export_request
    ADD COLUMN IF NOT EXISTS requested_via text;

-- Governance twice: the platform's verdict on each segment, as ingest last read it (NULL: allowed; else why
-- not). reconcile refuses membership of an audience whose segment carries a refusal here, or whose data
-- source carries the PII restriction, so a producer writing audience-membership directly cannot bypass
-- ingest's check.
CREATE TABLE IF NOT EXISTS segment_governance (
    platform_segment_id bigint      PRIMARY KEY,
    refusal             text,
    checked_at          timestamptz NOT NULL DEFAULT now()
);
