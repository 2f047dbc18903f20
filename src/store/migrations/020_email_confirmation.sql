-- Email reminders go only to a confirmed address (the notifications target owns this): the user types back a
-- code mailed to it. The code is kept as a hash bound to the user and the address, with its wrong guesses.
--
-- Addresses saved before this stay confirmed: the rows there now take '-infinity', a constant default that
-- PostgreSQL records without rewriting the table (an UPDATE of every row would hold the table's lock while it
-- ran); rows written from now on start unconfirmed.
ALTER TABLE notification_preferences
  ADD COLUMN email_confirmed_at    timestamptz DEFAULT '-infinity',
  ADD COLUMN email_code_hash       text,
  ADD COLUMN email_code_expires_at timestamptz,
  ADD COLUMN email_code_attempts   integer NOT NULL DEFAULT 0;
ALTER TABLE notification_preferences ALTER COLUMN email_confirmed_at SET DEFAULT NULL;

-- A confirmation belongs to its address: whatever writes another one (this version, or a replica of the
-- previous one during a rolling upgrade, which knows nothing of these columns) leaves it unconfirmed. (The body
-- on one line: migrate.ts splits statements at semicolons that end a line.)
CREATE FUNCTION notification_email_changed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.email IS DISTINCT FROM OLD.email THEN NEW.email_confirmed_at := NULL; NEW.email_code_hash := NULL; NEW.email_code_attempts := 0; END IF; RETURN NEW; END $$;
CREATE TRIGGER notification_email_changed BEFORE UPDATE OF email ON notification_preferences
  FOR EACH ROW EXECUTE FUNCTION notification_email_changed();

-- Each code mailed, for the limits of any 24 hours: per user, and per recipient whatever the user (several
-- accounts naming one address). `recipient` is the SHA-256 of the lower-cased address. Rows older than a day
-- are deleted (the delivery loop's hourly prune).
CREATE TABLE email_code_sends (
  id        uuid PRIMARY KEY,
  user_id   text NOT NULL,
  recipient text NOT NULL,
  sent_at   timestamptz NOT NULL
);
CREATE INDEX email_code_sends_user ON email_code_sends (user_id, sent_at);
CREATE INDEX email_code_sends_recipient ON email_code_sends (recipient, sent_at);
CREATE INDEX email_code_sends_sent_at ON email_code_sends (sent_at);
