-- Full snapshots are staged as the platform's IDs, as they arrive, and matched once, whole, when the run's
-- last batch is in (one hash join, as Postgres alone would do it) instead of batch by batch through index
-- probes: matching was most of an import's time.
--
-- No index: a batch is appended with COPY; the run's rows are read once (a sequential scan of the runs in
-- flight) when it ends, or when an operator releases it. Logged, not UNLOGGED: a crash of Postgres must not
-- lose IDs whose batches applied_batch already records.
CREATE TABLE import_stage_id (
    run_id uuid NOT NULL,
    id     text NOT NULL
);
-- Rows live for the length of a run: vacuuming after inserts (for append-only tables) would only compete
-- with the import for the CPU. Vacuum after the run's rows are deleted is kept.
ALTER TABLE import_stage_id SET (autovacuum_vacuum_insert_threshold = -1);

-- Runs staged by the old layout (matched recipients) keep their members: each recipient is staged again as
-- one of its IDs of the run's kind, which matches it back when the run ends. (A recipient whose identity
-- went away since is left out: matched today, it would not be either.)
INSERT INTO import_stage_id (run_id, id)
SELECT s.run_id, v.ecid
  FROM import_stage s
  JOIN run r ON r.run_id = s.run_id AND r.id_type = 'ecid'
  JOIN LATERAL (SELECT min(ecid) AS ecid FROM visitor_link WHERE recipient_id = s.recipient_id) v ON v.ecid IS NOT NULL;

INSERT INTO import_stage_id (run_id, id)
SELECT s.run_id, k.id
  FROM import_stage s
  JOIN run r ON r.run_id = s.run_id AND r.id_type = 'declared'
  JOIN data_source ds ON ds.data_source_id = r.data_source_id
  JOIN recipient rc ON rc.recipient_id = s.recipient_id
  CROSS JOIN LATERAL (
      SELECT ab_declared_key(CASE ds.reconciliation_key
                                 WHEN 'recipient_id' THEN rc.recipient_id::text
                                 WHEN 'email' THEN rc.email
                                 WHEN 'crm_id' THEN rc.crm_id
                             END, ds.key_transform) AS id
  ) k
 WHERE k.id IS NOT NULL;

DROP TABLE import_stage;
