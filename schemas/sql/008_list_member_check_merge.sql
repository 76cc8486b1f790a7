-- list_member's reference check (007) reads the statement's new rows against recipient's primary key.
--
-- Applying a full snapshot, reconcile turns nested loops off for its transaction (the staged tables'
-- statistics cannot be trusted). The check then hashed the whole recipient table to look up the new rows:
-- 0.6-0.7 s for a 450,000-member snapshot over 900,000 recipients. Without hash joins it merges the rows,
-- which arrive sorted, with the primary key's index instead: 0.15-0.2 s. Small statements (nested loops on)
-- keep probing the index row by row. The setting holds while the function runs, nowhere else.
ALTER FUNCTION ab_list_member_check_refs() SET enable_hashjoin = off;
