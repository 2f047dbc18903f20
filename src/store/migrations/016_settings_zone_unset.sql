-- A user who never chose a time zone follows the deployment's DEFAULT_TIMEZONE (null here): a settings change
-- of the default reminders alone stored the default zone of that day, which a later DEFAULT_TIMEZONE no longer
-- reached.
ALTER TABLE user_settings ALTER COLUMN timezone DROP NOT NULL;
ALTER TABLE user_settings ALTER COLUMN timezone DROP DEFAULT;
