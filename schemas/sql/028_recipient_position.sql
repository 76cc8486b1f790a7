-- A recipient's source position on its own row (issue 18's recipient_changes benchmark: the write of a change).
--
-- Until now every change also wrote a row of recipient_version (its position): a second heap row and index
-- entry per recipient, ~5 µs of Postgres per change, and two more statements per batch. The position of the
-- change last applied to a live recipient now is a column of its row, written by the same UPDATE or INSERT
-- that writes its values (a change that leaves the values as they are still moves it: a HOT update, no new
-- index entry: no index reads the column). NULL: no change of the stream applied yet (a CSV load), any change
-- is newer.
--
-- A deleted or forgotten recipient has no row: its tombstone (the position of its delete) is in
-- recipient_tombstone, so that a replayed or late upsert cannot bring it back; a newer one can, and then its
-- tombstone stays behind as a lower bound (the row's position is the newer). A change is applied only when it
-- is newer than both. No foreign key: a tombstone outlives its recipient on purpose.
ALTER TABLE recipient ADD COLUMN position bigint;

CREATE TABLE recipient_tombstone (
    recipient_id bigint      PRIMARY KEY,
    position     bigint      NOT NULL,
    deleted_at   timestamptz NOT NULL DEFAULT now()
);

UPDATE recipient r SET position = v.position FROM recipient_version v
 WHERE v.recipient_id = r.recipient_id AND NOT v.deleted;
INSERT INTO recipient_tombstone (recipient_id, position, deleted_at)
SELECT recipient_id, position, applied_at FROM recipient_version WHERE deleted;

DROP TABLE recipient_version;

-- The former table, as a view for the queries written against it (the same rows: a live recipient's last
-- position, or a deleted one's tombstone). The bridge itself reads the column and the tombstones.
CREATE VIEW recipient_version AS
SELECT recipient_id, position, false AS deleted, updated_at AS applied_at FROM recipient WHERE position IS NOT NULL
UNION ALL
SELECT t.recipient_id, t.position, true, t.deleted_at FROM recipient_tombstone t
 WHERE NOT EXISTS (SELECT 1 FROM recipient r WHERE r.recipient_id = t.recipient_id);
