-- Throughput: what a 1M-recipient export and a 1M-ID import spent their time on, removed.

-- 1. The usual declared keys are stored, not recomputed. Exporting a list reads every member's key:
--    computed on the fly (SHA-256 of the normalised e-mail, plus the checks), it cost ~20 µs a recipient;
--    stored, it is a column read. Import keeps probing an index, now a plain one on the column. The
--    values are the very same expression, so nothing changes for matching. Other key/transform
--    combinations stay expressions with an expression index created on demand (services/reconcile/keys.py).
ALTER TABLE recipient
    ADD COLUMN key_email_sha256 text GENERATED ALWAYS AS (ab_declared_key(email, 'sha256')) STORED,
    ADD COLUMN key_crm_id_none  text GENERATED ALWAYS AS (ab_declared_key(crm_id, 'none')) STORED;
DROP INDEX IF EXISTS recipient_key_email_sha256;
DROP INDEX IF EXISTS recipient_key_crm_id_none;
-- INCLUDE recipient_id: matching an imported ID is then an index-only probe, no visit to the table.
CREATE INDEX recipient_key_email_sha256 ON recipient (key_email_sha256) INCLUDE (recipient_id);
CREATE INDEX recipient_key_crm_id_none ON recipient (key_crm_id_none) INCLUDE (recipient_id);
-- Recipients without the key: an export counts them as excluded by walking these few rows, not the list.
CREATE INDEX recipient_without_email_sha256 ON recipient (recipient_id) WHERE key_email_sha256 IS NULL;

-- 2. publish stages a batch as one row, not one row per ID: staging 1M IDs was 1M index insertions;
--    now it is ~100 rows. A batch's IDs are kept as one text of lines (IDs never hold a line break),
--    the cheapest form to write, to read back and to turn into file lines; SQL reads them with
--    string_to_table. Stored uncompressed (EXTERNAL): hashed and numeric IDs barely compress, and
--    compressing them cost more than writing them.
CREATE TABLE publish_stage_batch (
    run_id       uuid    NOT NULL,
    seq          integer NOT NULL,
    adds         text    NOT NULL,  -- the IDs to add, one per line ('' when none)
    removes      text    NOT NULL,  -- the IDs to remove, likewise
    adds_n       integer NOT NULL CHECK (adds_n >= 0),
    removes_n    integer NOT NULL CHECK (removes_n >= 0),
    max_id_bytes integer NOT NULL,
    PRIMARY KEY (run_id, seq)
);
ALTER TABLE publish_stage_batch ALTER COLUMN adds SET STORAGE EXTERNAL;
ALTER TABLE publish_stage_batch ALTER COLUMN removes SET STORAGE EXTERNAL;

-- Runs staged by an earlier version and not finished yet keep their IDs.
INSERT INTO publish_stage_batch (run_id, seq, adds, removes, adds_n, removes_n, max_id_bytes)
SELECT run_id, seq,
       coalesce(string_agg(id, E'\n' ORDER BY id) FILTER (WHERE is_add), ''),
       coalesce(string_agg(id, E'\n' ORDER BY id) FILTER (WHERE NOT is_add), ''),
       count(*) FILTER (WHERE is_add),
       count(*) FILTER (WHERE NOT is_add),
       max(octet_length(id))
  FROM (SELECT DISTINCT run_id, seq, id, is_add FROM publish_stage) s
 GROUP BY run_id, seq;
DROP TABLE publish_stage;

-- 3. exported_member compares IDs byte-wise. IDs are ASCII tokens: a linguistic collation bought
--    nothing and made every comparison of its primary key (1M per large run) a strcoll() call.
ALTER TABLE exported_member ALTER COLUMN id TYPE text COLLATE "C";

-- 4. import_stage loses its foreign key to run: the trigger it fires per staged row cost more than
--    matching the ID did, for rows that live only until their run ends (apply_full_snapshot deletes
--    them; runs are never deleted). Its primary key stays: it de-duplicates the snapshot, and applying
--    the snapshot probes it (without it the planner, blind to the table's size, nested-loops over it).
ALTER TABLE import_stage DROP CONSTRAINT import_stage_run_id_fkey;
