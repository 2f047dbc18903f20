-- One message of a conversation answered at a time (POST /api/chat): the turn in progress holds the
-- conversation until it ends or this time passes (a replica that died mid-turn lets go). Two turns at once read
-- the same history and interleaved their messages.
ALTER TABLE chat_conversations ADD COLUMN turn_until timestamptz;
