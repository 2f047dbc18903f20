-- Email reminders go only to a confirmed address (the notifications target owns this): the user types back a
-- code mailed to it. The code is kept as a hash bound to the user and the address; wrong guesses and the
-- codes mailed in the last 24 hours are counted. Addresses saved before this existed stay confirmed: their
-- reminders keep arriving after an upgrade.
ALTER TABLE notification_preferences
  ADD COLUMN email_confirmed_at    timestamptz,
  ADD COLUMN email_code_hash       text,
  ADD COLUMN email_code_expires_at timestamptz,
  ADD COLUMN email_code_attempts   integer NOT NULL DEFAULT 0,
  ADD COLUMN email_codes_since     timestamptz,
  ADD COLUMN email_codes_sent      integer NOT NULL DEFAULT 0;
UPDATE notification_preferences SET email_confirmed_at = updated_at WHERE email IS NOT NULL;
