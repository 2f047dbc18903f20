-- The audit trail (the audit target owns these): one append-only record per event, hash-chained per user.
-- hash = sha256(prev_hash || canonical JSON of the record); see src/services/audit/chain.ts.
CREATE TABLE audit_log (
  id          bigserial PRIMARY KEY,
  event_id    text NOT NULL UNIQUE,
  user_id     text NOT NULL,
  user_seq    bigint NOT NULL, -- position in the user's chain, 1, 2, 3...
  task_id     text,
  operation   text NOT NULL,   -- the event type, e.g. task.updated, reminder.triggered
  occurred_at timestamptz NOT NULL,
  recorded_at timestamptz NOT NULL,
  change      jsonb NOT NULL,  -- { before, after } of the changed fields only
  trace_id    text,
  client_ip   text,
  user_agent  text,
  prev_hash   text NOT NULL,
  hash        text NOT NULL,
  UNIQUE (user_id, user_seq)
);
CREATE INDEX audit_log_user_id ON audit_log (user_id, id);
CREATE INDEX audit_log_user_task ON audit_log (user_id, task_id, id);
CREATE INDEX audit_log_occurred ON audit_log (occurred_at);

-- The end of each user's chain: its row lock serializes appends of one user, and `verify` compares the last
-- record with it (so removing records at the end is detected too).
CREATE TABLE audit_chain_heads (
  user_id   text PRIMARY KEY,
  last_seq  bigint NOT NULL,
  last_hash text NOT NULL
);

-- After a retention purge: the last purged record of each user, so the remaining chain still verifies.
CREATE TABLE audit_anchors (
  user_id        text PRIMARY KEY,
  seq            bigint NOT NULL,
  hash           text NOT NULL,
  purged_records bigint NOT NULL DEFAULT 0,
  purged_at      timestamptz NOT NULL
);
