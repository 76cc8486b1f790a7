-- Audience Bridge core schema. Owned by reconcile; applied by shared/migrations.py.

-- The campaign's recipients (in production: the campaign's own table, or a view of it).
CREATE TABLE recipient (
    recipient_id bigint      PRIMARY KEY,
    email        text,
    crm_id       text,
    first_name   text,
    last_name    text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX recipient_crm_id_idx ON recipient (crm_id);

-- ECID -> recipient, learned when a recipient clicks a tracked link. One recipient may have many ECIDs;
-- a shared device may (rarely) link one ECID to several recipients.
CREATE TABLE visitor_link (
    ecid         text        NOT NULL CHECK (ecid ~ '^[0-9]{38}$'),
    recipient_id bigint      NOT NULL REFERENCES recipient (recipient_id) ON DELETE CASCADE,
    first_seen   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ecid, recipient_id)
);
CREATE INDEX visitor_link_recipient_idx ON visitor_link (recipient_id);

-- A data source: which ID type its IDs are, and for declared IDs which recipient column they derive from.
CREATE TABLE data_source (
    data_source_id     serial      PRIMARY KEY,
    name               text        NOT NULL UNIQUE,
    dpid               bigint      NOT NULL UNIQUE,
    id_type            text        NOT NULL CHECK (id_type IN ('ecid', 'declared')),
    reconciliation_key text        CHECK (reconciliation_key IN ('recipient_id', 'email', 'crm_id')),
    key_transform      text        NOT NULL DEFAULT 'none' CHECK (key_transform IN ('none', 'sha256')),
    export_controls    text[]      NOT NULL DEFAULT '{}',
    created_at         timestamptz NOT NULL DEFAULT now(),
    CHECK ((id_type = 'declared') = (reconciliation_key IS NOT NULL))
);

-- Campaign lists and their members.
CREATE TABLE list (
    list_id    bigserial   PRIMARY KEY,
    name       text        NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE list_member (
    list_id      bigint      NOT NULL REFERENCES list (list_id) ON DELETE CASCADE,
    recipient_id bigint      NOT NULL REFERENCES recipient (recipient_id) ON DELETE CASCADE,
    added_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (list_id, recipient_id)
);
CREATE INDEX list_member_recipient_idx ON list_member (recipient_id);

-- A shared audience: a platform segment imported into a list, or a list exported as a platform segment.
CREATE TABLE shared_audience (
    audience_id          text        PRIMARY KEY,
    name                 text        NOT NULL,
    direction            text        NOT NULL CHECK (direction IN ('import', 'export')),
    data_source_id       integer     NOT NULL REFERENCES data_source (data_source_id),
    list_id              bigint      REFERENCES list (list_id),
    platform_segment_id  bigint,
    platform_trait_id    bigint,
    integration_code     text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX shared_audience_list_idx ON shared_audience (list_id);

-- One row per import or export run.
CREATE TABLE run (
    run_id       uuid        PRIMARY KEY,
    direction    text        NOT NULL CHECK (direction IN ('import', 'export')),
    audience_id  text        NOT NULL,
    mode         text        NOT NULL,
    state        text        NOT NULL CHECK (state IN ('started', 'progress', 'succeeded', 'failed', 'blocked')),
    counts       jsonb       NOT NULL DEFAULT '{}',
    match_rate   jsonb,
    reason       text,
    started_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX run_audience_idx ON run (audience_id, started_at DESC);
CREATE INDEX run_state_idx ON run (state) WHERE state IN ('started', 'progress', 'blocked');

-- The idempotency ledger: a batch's effects and its row commit together, so a redelivery is a no-op.
CREATE TABLE applied_batch (
    run_id     uuid        NOT NULL,
    seq        integer     NOT NULL CHECK (seq >= 0),
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq)
);

-- IDs that matched no recipient (or were malformed), kept to be re-matched when recipients or links change.
CREATE TABLE unmatched_id (
    audience_id text        NOT NULL,
    id_type     text        NOT NULL CHECK (id_type IN ('ecid', 'declared')),
    id          text        NOT NULL,
    reason      text        NOT NULL CHECK (reason IN ('unknown_ecid', 'unknown_declared_id', 'invalid_format')),
    run_id      uuid        NOT NULL,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (audience_id, id_type, id)
);
CREATE INDEX unmatched_id_reason_idx ON unmatched_id (reason);

-- What the bridge last shared per exported audience: the base for diffs and the only IDs it may remove.
CREATE TABLE exported_member (
    audience_id text        NOT NULL,
    id          text        NOT NULL,
    run_id      uuid        NOT NULL,
    exported_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (audience_id, id)
);
