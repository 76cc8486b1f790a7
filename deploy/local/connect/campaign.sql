-- The campaign database's recipient table, as Debezium's connector reads it (deploy/local/connect.sh runs this
-- at every start; it changes nothing the second time). The columns are the bridge's own `recipient` columns, so the
-- mapping is one to one (README "Change data capture (Debezium)").
CREATE TABLE IF NOT EXISTS recipient (
    recipient_id bigint      PRIMARY KEY,
    email        text,
    crm_id       text,
    first_name   text,
    last_name    text,
    opted_out    boolean     NOT NULL DEFAULT false,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
-- A delete's (and an update's) change event carries the whole previous row, not only the key.
ALTER TABLE recipient REPLICA IDENTITY FULL;
SELECT format('CREATE PUBLICATION %I FOR TABLE recipient', :'publication')
 WHERE NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = :'publication') \gexec
