-- A full snapshot's batches are staged one row per batch (its valid IDs as one array), no longer one row per ID
-- (006). What a run's end paid per staged ID, and paid again for the other runs staged side by side: its scan
-- read every run's rows (a 10,000,000-ID import staged 10M rows, more than shared_buffers, read whole by each
-- of its two runs), and its DELETE wrote a WAL record and dirtied a page per ID (a full-page image each after a
-- checkpoint), then left 5M dead rows to vacuum. Now a run's end reads its own rows through the key (one per
-- 10,000 IDs) and deletes them (hundreds of rows, their out-of-line values with them).
--
-- Logged, like the table it replaces: a crash of Postgres must not lose IDs whose batches applied_batch records.
CREATE TABLE import_stage_batch (
    run_id uuid    NOT NULL,
    seq    integer NOT NULL,
    ids    text[]  NOT NULL,
    PRIMARY KEY (run_id, seq)
);
-- Out of line and uncompressed: a batch's IDs are read once or twice and deleted within the run's life;
-- compressing them would cost the CPU the import needs (hashed e-mails barely compress anyway).
ALTER TABLE import_stage_batch ALTER COLUMN ids SET STORAGE EXTERNAL;
-- Rows live for the length of a run: vacuuming after inserts would only compete with the import for the CPU.
ALTER TABLE import_stage_batch SET (autovacuum_vacuum_insert_threshold = -1);

-- Runs staged by the old layout (in flight, or held back) keep their IDs, 10,000 to a row as the bridge stages
-- them, under negative numbers: a run in flight goes on staging its next batches under their own (from 0).
INSERT INTO import_stage_batch (run_id, seq, ids)
SELECT run_id, -1 - (n - 1) / 10000, array_agg(id ORDER BY n)
  FROM (SELECT run_id, id, row_number() OVER (PARTITION BY run_id) AS n FROM import_stage_id) s
 GROUP BY run_id, (n - 1) / 10000;

DROP TABLE import_stage_id;

-- What was staged, an ID a row, as the old table showed it: to read (operators, checks), never written.
CREATE VIEW import_stage_id AS
SELECT b.run_id, u.id FROM import_stage_batch b CROSS JOIN LATERAL unnest(b.ids) AS u(id);
