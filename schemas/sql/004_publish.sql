-- publish: what it needs per export run besides the staged IDs (publish_stage) and its ledgers.

-- The last batch says how many batches the run has and carries its totals; file_ts is the timestamp of
-- the run's inbound file names, fixed once chosen. It starts from the run's start (unix seconds) and is
-- unique per DPID, because the name holds nothing else: two runs of one data source starting in the same
-- second would otherwise write the same names and replace each other's files.
CREATE TABLE publish_run (
    run_id     uuid        PRIMARY KEY,
    last_seq   integer     CHECK (last_seq >= 0),
    totals     jsonb,
    dpid       bigint,
    file_ts    bigint,
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (dpid, file_ts)
);
