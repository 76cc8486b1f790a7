-- The segment-event ledger's keys compare byte-wise (services/ingest/event_ledger.py). Event ids, segment ids,
-- data source names and IDs are ASCII tokens: the database's collation bought nothing and made every comparison
-- of the two primary keys (two probes per event claimed, 20,000 events/s from a real-time feed) a strcoll()
-- call; a linguistic collation (en_US.UTF-8, common on production servers) costs more still. As
-- exported_member.id since schema 5. A claim of 5,000 events into tables of 300,000 rows, alone on the local
-- cluster (C.UTF-8): 14.0 and 13.6 us of the server's CPU an event before, 12.5 and 12.5 after.
-- Only the collation changes: no table rewrite, the two primary keys are rebuilt.
ALTER TABLE segment_event_seen ALTER COLUMN event_id TYPE text COLLATE "C";
ALTER TABLE segment_member_latest
    ALTER COLUMN segment_id TYPE text COLLATE "C",
    ALTER COLUMN data_source TYPE text COLLATE "C",
    ALTER COLUMN id TYPE text COLLATE "C";
