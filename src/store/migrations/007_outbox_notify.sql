-- Wakes a relay in another process (LISTEN taskflow_outbox) as soon as events commit, instead of at its next
-- poll: once per statement that appends to the outbox; PostgreSQL sends it at commit and folds the duplicates
-- of one transaction. (One line: migrate.ts splits statements at semicolons that end a line.)
CREATE FUNCTION taskflow_outbox_appended() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('taskflow_outbox', ''); RETURN NULL; END $$;
CREATE TRIGGER outbox_appended AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION taskflow_outbox_appended();
