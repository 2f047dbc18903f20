-- Whether the user chose their time zone. One who never did follows the deployment's DEFAULT_TIMEZONE: a
-- settings change of the default reminders alone stored the default zone of that day, which a later
-- DEFAULT_TIMEZONE no longer reached. `timezone` keeps a value (the default) for processes of the version before
-- this one, which read it as it is during a rolling upgrade; rows from before are taken as chosen.
ALTER TABLE user_settings ADD COLUMN timezone_set boolean NOT NULL DEFAULT true;
