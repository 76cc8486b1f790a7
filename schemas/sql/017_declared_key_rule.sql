-- One rule for declared keys, the same in Python (shared/ids.py declared_key) and in SQL (issue 18): trim the
-- ASCII whitespace (space, \t, \n, \r, \f, \v) at both ends; `none` keeps the trimmed text; `sha256` is the
-- lower-case hex SHA-256 of its UTF-8 bytes with the ASCII letters A-Z lower-cased and every other character
-- kept as it is. Before, Python also trimmed Unicode whitespace and lower-cased every script (full Unicode
-- case mapping), and SQL's lower() followed the database's collation (glibc's tables: 'İ' -> 'i' where Python
-- gives 'i̇'), so a key could differ between an import's match and an export. ASCII-only is the one rule both
-- sides compute exactly, whatever the collation or the Unicode version. And SQL trimmed the letter v: Postgres's
-- E'' strings know no \v escape (E'\v' is 'v'), so 'vivian@example.dev' was keyed as 'ivian@example.de'.
-- The vertical tab is written \013 here.
--
-- The function is renamed ab_key: the stored keys (key_email_sha256, key_crm_id_none) and the expression indexes
-- refer to it by its identity, so they follow the rename. A new name because schemas/sql/023 (applied after
-- this on a new database) re-creates ab_declared_key with the collation's lower(); the bridge no longer uses
-- that name. The body is written without convert_to (STABLE) so it is inlined, as 023 explains.
ALTER FUNCTION ab_declared_key(text, text) RENAME TO ab_key;

DO $migration$
BEGIN
    IF current_setting('server_encoding') = 'UTF8' THEN
        CREATE OR REPLACE FUNCTION ab_key(value text, transform text) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT CASE
                WHEN nullif(btrim(value, E' \t\n\r\f\013'), '') IS NULL THEN NULL
                WHEN transform = 'none' THEN btrim(value, E' \t\n\r\f\013')
                WHEN transform = 'sha256'
                    THEN encode(sha256(decode(replace(lower(btrim(value, E' \t\n\r\f\013') COLLATE "C"), E'\\',
                                                      E'\\\\'), 'escape')), 'hex')
            END
        $$;
    ELSE
        CREATE OR REPLACE FUNCTION ab_key(value text, transform text) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT CASE
                WHEN nullif(btrim(value, E' \t\n\r\f\013'), '') IS NULL THEN NULL
                WHEN transform = 'none' THEN btrim(value, E' \t\n\r\f\013')
                WHEN transform = 'sha256'
                    THEN encode(sha256(convert_to(lower(btrim(value, E' \t\n\r\f\013') COLLATE "C"), 'UTF8')), 'hex')
            END
        $$;
    END IF;
END
$migration$;

-- Replacing a body recomputes nothing stored: the recipients whose key changes (a non-ASCII letter, a v at
-- either end) are rewritten, which recomputes their generated columns, and the expression indexes created on
-- demand (services/reconcile/catalog.py) are rebuilt. A new database has none of either.
UPDATE recipient SET email = email
 WHERE key_email_sha256 IS DISTINCT FROM ab_key(email, 'sha256')
    OR key_crm_id_none IS DISTINCT FROM ab_key(crm_id, 'none');

-- Dropped and created again, not REINDEXed: a session keeps an index's expressions with the function bodies
-- inlined as they were when it first read them, and REINDEX builds from those (a migration's connection that
-- had planned a query on recipient rebuilt the index with the old rule).
DO $migration$
DECLARE
    index_name text;
    definition text;
BEGIN
    FOR index_name, definition IN
        SELECT indexname, indexdef FROM pg_indexes
         WHERE schemaname = current_schema() AND tablename = 'recipient' AND indexdef LIKE '%ab_key(%'
    LOOP
        EXECUTE format('DROP INDEX %I', index_name);
        EXECUTE definition;
    END LOOP;
END
$migration$;

-- The former name, for queries written against it: the same rule (on a database created after this, 023
-- defines it again with the collation's lower(); use ab_key).
CREATE FUNCTION ab_declared_key(value text, transform text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT ab_key(value, transform) $$;
