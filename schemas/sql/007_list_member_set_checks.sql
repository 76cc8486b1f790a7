-- list_member's references are checked per statement instead of per row.
--
-- A foreign key checks every inserted row on its own (a trigger call and a key-share lock of the row it
-- refers to): applying a 900,000-member snapshot spent 11 of its 16 s in the two foreign keys of
-- list_member, against 5 s for the insert itself. The same guarantees, set-wise:
--
-- * rows added or changed must name an existing recipient and list: one anti-join per statement, over the
--   statement's new rows (a transition table), raising foreign_key_violation like the key did;
-- * deleting recipients or lists deletes their memberships (ON DELETE CASCADE did): one join per statement.
--   The deleting transaction first takes a SHARE lock on list_member, so it waits for transactions adding
--   members to finish, and holds new ones back until it commits: no member of a deleted recipient can slip
--   in between (which the foreign key's row lock prevented);
-- * the key of a recipient or list that has members cannot change (the foreign key's NO ACTION on update).
ALTER TABLE list_member DROP CONSTRAINT list_member_list_id_fkey;
ALTER TABLE list_member DROP CONSTRAINT list_member_recipient_id_fkey;

CREATE FUNCTION ab_list_member_check_refs() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    missing bigint;
BEGIN
    SELECT n.recipient_id INTO missing FROM new_rows n
     WHERE NOT EXISTS (SELECT 1 FROM recipient r WHERE r.recipient_id = n.recipient_id) LIMIT 1;
    IF FOUND THEN
        RAISE foreign_key_violation USING
            MESSAGE = format('list_member refers to recipient %s, which does not exist', missing),
            TABLE = 'list_member', CONSTRAINT = 'list_member_recipient_id_fkey';
    END IF;
    SELECT n.list_id INTO missing FROM new_rows n
     WHERE NOT EXISTS (SELECT 1 FROM list l WHERE l.list_id = n.list_id) LIMIT 1;
    IF FOUND THEN
        RAISE foreign_key_violation USING
            MESSAGE = format('list_member refers to list %s, which does not exist', missing),
            TABLE = 'list_member', CONSTRAINT = 'list_member_list_id_fkey';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER list_member_check_refs_insert AFTER INSERT ON list_member
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ab_list_member_check_refs();
CREATE TRIGGER list_member_check_refs_update AFTER UPDATE ON list_member
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ab_list_member_check_refs();

CREATE FUNCTION ab_list_member_cascade_recipients() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE list_member IN SHARE MODE;
    DELETE FROM list_member lm USING old_rows o WHERE lm.recipient_id = o.recipient_id;
    RETURN NULL;
END
$$;

CREATE FUNCTION ab_list_member_cascade_lists() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE list_member IN SHARE MODE;
    DELETE FROM list_member lm USING old_rows o WHERE lm.list_id = o.list_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER recipient_cascade_list_member AFTER DELETE ON recipient
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION ab_list_member_cascade_recipients();
CREATE TRIGGER list_cascade_list_member AFTER DELETE ON list
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION ab_list_member_cascade_lists();

CREATE FUNCTION ab_recipient_keep_key() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM list_member WHERE recipient_id = OLD.recipient_id LIMIT 1;
    IF FOUND THEN
        RAISE foreign_key_violation USING
            MESSAGE = format('recipient %s has list memberships: its key cannot change', OLD.recipient_id),
            TABLE = 'list_member', CONSTRAINT = 'list_member_recipient_id_fkey';
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION ab_list_keep_key() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM list_member WHERE list_id = OLD.list_id LIMIT 1;
    IF FOUND THEN
        RAISE foreign_key_violation USING
            MESSAGE = format('list %s has members: its key cannot change', OLD.list_id),
            TABLE = 'list_member', CONSTRAINT = 'list_member_list_id_fkey';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER recipient_keep_key BEFORE UPDATE OF recipient_id ON recipient
    FOR EACH ROW WHEN (OLD.recipient_id IS DISTINCT FROM NEW.recipient_id) EXECUTE FUNCTION ab_recipient_keep_key();
CREATE TRIGGER list_keep_key BEFORE UPDATE OF list_id ON list
    FOR EACH ROW WHEN (OLD.list_id IS DISTINCT FROM NEW.list_id) EXECUTE FUNCTION ab_list_keep_key();
