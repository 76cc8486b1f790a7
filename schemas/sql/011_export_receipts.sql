-- An export is done when the platform has applied it: runs wait in `uploaded` for the platform's processing
-- receipts of their files, and end `succeeded`, `partial` or `failed` by what the receipts say.

-- 1. The run states publish adds. The list names every state any migration adds ('cancelled' too), so
--    whichever of the migrations that redefine this constraint runs last keeps them all.
ALTER TABLE run DROP CONSTRAINT IF EXISTS run_state_check;
ALTER TABLE run ADD CONSTRAINT run_state_check
    CHECK (state IN ('started', 'progress', 'uploaded', 'succeeded', 'partial', 'failed', 'blocked', 'cancelled'));
DROP INDEX IF EXISTS run_state_idx;
CREATE INDEX run_state_idx ON run (state) WHERE state IN ('started', 'progress', 'uploaded', 'blocked');

-- 2. Each uploaded file: which lines of its file set it holds (to name the IDs of a rejected line), and
--    what the platform's receipt said of it. Until its receipt is in, a file's IDs are pending: they stay
--    staged (publish_stage_batch) and are neither in exported_member nor sent again.
ALTER TABLE published_file
    ADD COLUMN file_set       text CHECK (file_set IN ('sync', 'overwrite')),
    ADD COLUMN first_line     bigint CHECK (first_line >= 0),
    ADD COLUMN receipt_status text CHECK (receipt_status IN ('applied', 'partial', 'rejected', 'timed_out')),
    ADD COLUMN lines_applied  bigint,
    ADD COLUMN lines_rejected bigint,
    ADD COLUMN rejected_by    jsonb,   -- rejected lines per reason (the receipt's counters)
    ADD COLUMN rejected_lines jsonb,   -- [[line, reason], ...] when the receipt names every rejected line
    ADD COLUMN receipt_reason text,
    ADD COLUMN receipt_at     timestamptz;

-- 3. IDs a run sent that the platform did not apply (a rejected file, rejected lines), per reason: not
--    counted as shared, so the next diff sends them again. Kept for the operator until the audience's next
--    run ends (publish replaces an audience's rows then).
CREATE TABLE export_rejected_id (
    audience_id text        NOT NULL,
    id          text        COLLATE "C" NOT NULL,
    is_add      boolean     NOT NULL,
    run_id      uuid        NOT NULL,
    file        text        NOT NULL,
    reason      text        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (audience_id, id, is_add)
);
CREATE INDEX export_rejected_id_run_idx ON export_rejected_id (run_id);
