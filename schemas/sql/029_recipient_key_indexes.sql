-- The stored declared keys' indexes only for the keys data sources use (issue 18's recipient_changes benchmark).
--
-- Each index is an entry written per recipient inserted, and per change of its key: the hashed e-mail's a
-- random insertion into a tree of SHA-256 hex. And while any index reads the hashed e-mail (its key index, or
-- the predicate of recipient_without_email_sha256), a change of e-mail can never be a HOT update (the row's
-- new version in the same page, no index entry at all): every index of recipient gets a new entry.
--
-- Matching an imported declared ID probes the index of its data source's key, and an export of a hashed-e-mail
-- data source counts the recipients without one through recipient_without_email_sha256; nothing else needs
-- them (exports and re-matching read the stored columns of known recipients). A data source added later makes
-- its key's indexes (services/reconcile/catalog.py ensure_declared_key_index, as for the keys that are not
-- stored), the same as 005 made. The generated columns stay: exports read them.
DO $migration$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM data_source WHERE reconciliation_key = 'email' AND key_transform = 'sha256') THEN
        DROP INDEX IF EXISTS recipient_key_email_sha256;
        DROP INDEX IF EXISTS recipient_without_email_sha256;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM data_source WHERE reconciliation_key = 'crm_id' AND key_transform = 'none') THEN
        DROP INDEX IF EXISTS recipient_key_crm_id_none;
    END IF;
END
$migration$;

-- Room in each page for a recipient's next version (a HOT update when no indexed column changes: a change of
-- name or consent, a position moved, an e-mail while no index reads it). Pages written from now on.
ALTER TABLE recipient SET (fillfactor = 85);
