-- What writing a recipient cost (issue 18's recipient_changes benchmark: a stream of upserts), removed.

-- 1. ab_declared_key could not be inlined: convert_to() is STABLE, the function is declared IMMUTABLE, and
--    Postgres runs a SQL function whose body is more volatile than its declaration through the SQL-function
--    executor, once per call (~5 µs; both stored keys of every inserted or updated recipient, ~60% of an
--    upsert's cost with the indexes). The same bytes without convert_to: in a UTF8 database a text already is
--    its UTF-8 bytes, and decode(…, 'escape') returns them once every backslash is doubled (the only byte it
--    reads specially). Every part is IMMUTABLE, so the body is inlined into the generated columns, the
--    expression indexes and the queries. Same results: tests/integration/test_declared_keys.py compares
--    both bodies. In a database of another encoding the function is left as it was (convert_to is needed).
DO $migration$
BEGIN
    IF current_setting('server_encoding') = 'UTF8' THEN
        CREATE OR REPLACE FUNCTION ab_declared_key(value text, transform text) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT CASE
                WHEN nullif(btrim(value, E' \t\n\r\f\v'), '') IS NULL THEN NULL
                WHEN transform = 'none' THEN btrim(value, E' \t\n\r\f\v')
                WHEN transform = 'sha256'
                    THEN encode(sha256(decode(replace(lower(btrim(value, E' \t\n\r\f\v')), E'\\', E'\\\\'), 'escape')),
                                'hex')
            END
        $$;
    END IF;
END
$migration$;

-- 2. recipient (crm_id) served no query: matching and exports read key_crm_id_none (its own index). Every
--    recipient insert and every change of crm_id paid for it.
DROP INDEX IF EXISTS recipient_crm_id_idx;

-- 3. Room left in each page of recipient_version: a recipient's next change rewrites its row in the same page
--    (a HOT update, no new index entry). The benchmark's second changes were half HOT at 70%, none at 100%.
--    Pages written from now on (the whole table when it is created empty by 015 just before).
ALTER TABLE recipient_version SET (fillfactor = 70);
