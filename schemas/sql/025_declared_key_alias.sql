-- ab_declared_key, the former name of ab_key (017), is the same rule on every database. On a database created
-- after 017, 023 (applied after it) had defined it again with the collation's lower(), while an upgraded one
-- (023 applied before 017) had it as an alias: a query written against the old name gave keys that depended on
-- when the database was created. The bridge itself uses ab_key only.
CREATE OR REPLACE FUNCTION ab_declared_key(value text, transform text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT ab_key(value, transform) $$;
