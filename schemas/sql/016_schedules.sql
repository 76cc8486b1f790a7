-- Export schedules (issue 19): an audience exported on a fixed interval or a cron expression, fired by
-- reconcile (services/reconcile/scheduler.py) as ordinary export requests.

CREATE TABLE export_schedule (
    schedule_id      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    list_ref         text        NOT NULL,
    audience_name    text        NOT NULL,
    data_source      text        NOT NULL,
    mode             text        NOT NULL CHECK (mode IN ('append', 'mirror', 'full')),
    every_s          integer     CHECK (every_s >= 60),
    cron             text,
    paused           boolean     NOT NULL DEFAULT false,
    -- Who created it and through what (cli, api): its requests ask on their behalf (export authorisation).
    created_by       text        NOT NULL,
    created_via      text        NOT NULL CHECK (created_via IN ('api', 'cli', 'kafka')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- Interval slots are counted from here (creation, or the last resume), so they do not drift.
    anchor           timestamptz NOT NULL DEFAULT now(),
    -- The last slot fired and its request: a slot is fired once, whatever restarts or replicas do.
    last_slot        timestamptz,
    last_fired_at    timestamptz,
    last_request_id  uuid,
    CHECK ((every_s IS NULL) <> (cron IS NULL)),
    -- One schedule per audience: two would race each other's runs of the same audience.
    UNIQUE (data_source, audience_name)
);
