-- The broadcaster's per-user counter: task.changed events carry a gap-free per-user `sequence`, incremented
-- in the same transaction as the outbox append and the processed-event record.
CREATE TABLE broadcaster_sequences (
  user_id  text PRIMARY KEY,
  last_seq bigint NOT NULL
);
