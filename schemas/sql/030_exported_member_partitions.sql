-- exported_member partitioned by audience, so that a run's whole recorded set can be prepared while the platform
-- processes its files and swapped in whole once the receipts say they were applied (issue 20).
--
-- Recording a 1M-ID run into the live table cost ~4 s after the receipts: a million heap and index inserts, each
-- WAL-logged (2M WAL records, ~290 MB), plus the sort of the staged text. The same rows loaded into a table of
-- their own, then indexed in one sorted build, cost a third of that, and off the critical path: publish builds
-- the set (exported_member_prepare) between writing the files and marking the run uploaded, and the run's last
-- transaction only attaches it (exported_member_swap), which is catalogue work.
--
-- Layout: one LIST partition per audience whose set was swapped in (named in exported_member_partition), and a
-- DEFAULT partition for every other audience's rows (incremental runs of an audience that has no partition yet,
-- rows written by other means). Queries and writes keep naming exported_member.
--
-- Lock levels: ATTACH PARTITION takes SHARE UPDATE EXCLUSIVE on exported_member (reads and writes go on) and
-- ACCESS EXCLUSIVE on the default partition while it checks that the default holds none of the audience's rows
-- (kept small: an audience swapped in once has its own partition from then on). DETACH of an audience's previous
-- partition (a full run replacing it) takes ACCESS EXCLUSIVE on exported_member: publish runs the swap under a
-- lock_timeout and falls back to the row-by-row recording when it cannot have the locks soon.

ALTER TABLE exported_member RENAME TO exported_member_before_030;
ALTER INDEX exported_member_pkey RENAME TO exported_member_before_030_pkey;

CREATE TABLE exported_member (
    audience_id text        NOT NULL,
    id          text        COLLATE "C" NOT NULL,
    run_id      uuid        NOT NULL,
    exported_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (audience_id, id)
) PARTITION BY LIST (audience_id);
CREATE TABLE exported_member_default PARTITION OF exported_member DEFAULT;

-- The audiences with a partition of their own, and its table.
CREATE TABLE exported_member_partition (
    audience_id text        PRIMARY KEY,
    table_name  text        NOT NULL UNIQUE,
    run_id      uuid,       -- the run whose set it is (NULL: converted by this migration)
    attached_at timestamptz NOT NULL DEFAULT now()
);

-- Recorded sets prepared for runs awaiting their receipts: a standalone table each, not part of exported_member
-- (invisible to every reader) until the run's receipts say its files were applied.
CREATE TABLE export_prepared_set (
    run_id      uuid        PRIMARY KEY,
    audience_id text        NOT NULL,
    table_name  text        NOT NULL UNIQUE,
    ids         bigint      NOT NULL,
    prepared_at timestamptz NOT NULL DEFAULT now()
);

-- The existing rows, each audience into a partition of its own (the default stays empty).
DO $migration$
DECLARE
    aud text;
    tbl text;
BEGIN
    FOR aud IN SELECT DISTINCT audience_id FROM exported_member_before_030 LOOP
        tbl := 'exported_member_a' || md5(aud);
        EXECUTE format('CREATE TABLE %I (LIKE exported_member INCLUDING DEFAULTS)', tbl);
        EXECUTE format('INSERT INTO %I SELECT * FROM exported_member_before_030 WHERE audience_id = %L ORDER BY id',
                       tbl, aud);
        EXECUTE format('ALTER TABLE %I ADD PRIMARY KEY (audience_id, id), ADD CONSTRAINT %I CHECK (audience_id = %L)',
                       tbl, tbl || '_audience', aud);
        EXECUTE format('ALTER TABLE exported_member ATTACH PARTITION %I FOR VALUES IN (%L)', tbl, aud);
        INSERT INTO exported_member_partition (audience_id, table_name) VALUES (aud, tbl);
    END LOOP;
END
$migration$;
DROP TABLE exported_member_before_030;

-- The DDL publish runs (services/publish/recorded_set.py): identifiers quoted here (%I), every value a parameter;
-- the bookkeeping rows (export_prepared_set, exported_member_partition) are publish's own statements. Only the
-- tables these functions made (exported_member_r<run>, exported_member_a<md5>) are ever dropped or detached.

-- A run's recorded set, prepared: its distinct adds, sorted, in a new table (exported_member's columns), indexed
-- in one build, with the CHECK that lets ATTACH skip scanning it. Returns the IDs it holds. The caller sets
-- work_mem / maintenance_work_mem for the sort and the index build.
CREATE FUNCTION exported_member_prepare(p_table text, p_run uuid, p_audience text) RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    n bigint;
BEGIN
    IF p_table !~ '^exported_member_r[0-9a-f]{32}$' THEN
        RAISE EXCEPTION 'not a recorded set''s table name: %', p_table;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE exported_member INCLUDING DEFAULTS)', p_table);
    EXECUTE format($q$
        INSERT INTO %I (audience_id, id, run_id, exported_at)
        SELECT $1, a.id, $2, now()
          FROM (SELECT DISTINCT ON (s.id COLLATE "C") s.id COLLATE "C" AS id
                  FROM publish_stage_batch b, string_to_table(b.adds, E'\n') AS s(id)
                 WHERE b.run_id = $2 AND b.adds_n > 0
                 ORDER BY s.id COLLATE "C") a$q$, p_table) USING p_audience, p_run;
    GET DIAGNOSTICS n = ROW_COUNT;
    EXECUTE format('ALTER TABLE %I ADD PRIMARY KEY (audience_id, id), ADD CONSTRAINT %I CHECK (audience_id = %L)',
                   p_table, p_table || '_audience', p_audience);
    EXECUTE format('ANALYZE %I', p_table);
    RETURN n;
END
$fn$;

-- A recorded set's table, its own or an audience's partition until now, is dropped (detached first if attached).
CREATE FUNCTION exported_member_drop_table(p_table text) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    IF p_table !~ '^exported_member_[ar][0-9a-f]{32}$' THEN
        RAISE EXCEPTION 'not a recorded set''s table name: %', p_table;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass(quote_ident(p_table))) THEN
        EXECUTE format('ALTER TABLE exported_member DETACH PARTITION %I', p_table);
    END IF;
    EXECUTE format('DROP TABLE IF EXISTS %I', p_table);
END
$fn$;

-- A prepared set's table becomes the audience's partition.
CREATE FUNCTION exported_member_attach(p_table text, p_audience text) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    IF p_table !~ '^exported_member_r[0-9a-f]{32}$' THEN
        RAISE EXCEPTION 'not a recorded set''s table name: %', p_table;
    END IF;
    EXECUTE format('ALTER TABLE exported_member ATTACH PARTITION %I FOR VALUES IN (%L)', p_table, p_audience);
END
$fn$;
