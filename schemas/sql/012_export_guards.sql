-- Export guards and runs that always end (issue 15, reconcile's side).

-- `cancelled`: a run an operator gave up on (audience-bridge cancel). The list is every state of
-- shared/runs/states.py (`uploaded` and `partial` come with the platform's receipts).
ALTER TABLE run DROP CONSTRAINT IF EXISTS run_state_check;
ALTER TABLE run ADD CONSTRAINT run_state_check CHECK (
    state IN ('started', 'progress', 'uploaded', 'succeeded', 'partial', 'failed', 'blocked', 'cancelled'));

-- A request whose audience has an earlier run still under way waits here, not in the consumer: the
-- request itself (to be handled again once that run ends) and since when it waits.
ALTER TABLE export_request
    ADD COLUMN request       jsonb,
    ADD COLUMN waiting_since timestamptz;
CREATE INDEX export_request_waiting_idx ON export_request (audience_id, waiting_since)
    WHERE waiting_since IS NOT NULL AND emitted_run IS NULL;

-- Stuck runs are looked for by state and age.
CREATE INDEX run_export_live_idx ON run (updated_at) WHERE direction = 'export' AND state IN ('started', 'progress');

-- Every change of the list a shared audience is bound to (audience-bridge audience rebind), for the audit.
CREATE TABLE audience_rebind (
    audience_id  text        NOT NULL,
    from_list_id bigint,
    to_list_id   bigint      NOT NULL,
    rebound_by   text        NOT NULL,
    rebound_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audience_rebind_audience_idx ON audience_rebind (audience_id, rebound_at DESC);
