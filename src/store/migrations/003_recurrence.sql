-- The recurrence target owns these: per-series state and the occurrence ledger.

-- One row per recurring series (series_id = the id of its first task). `anchor` is DTSTART of `rule`: the
-- first due date under that rule (or the first completion time when the task had no due date). When a
-- completed or skipped task carries a different rule (the user edited it), the series is re-anchored at that
-- task's due date and `occurrences` restarts at 1: an edit applies to future occurrences only.
CREATE TABLE recurrence_series (
  series_id   uuid PRIMARY KEY,
  user_id     text NOT NULL,
  rule        jsonb NOT NULL,
  anchor      timestamptz NOT NULL,
  -- Occurrences used so far under `rule`, created or skipped, including the current one (checked against COUNT).
  occurrences integer NOT NULL DEFAULT 1,
  -- Due dates that were skipped (POST /api/tasks/:id/skip).
  skipped     timestamptz[] NOT NULL DEFAULT '{}',
  -- Set when a completion found no further occurrence (COUNT or UNTIL exhausted): the series has ended.
  ended_at    timestamptz,
  ended_by    uuid,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX recurrence_series_user ON recurrence_series (user_id);

-- The occurrence ledger: the n-th task of a series. Written in the same transaction as the task it records,
-- so one completion creates at most one next occurrence: the (series_id, occurrence_index) key and the
-- unique source_task_id (each task has at most one successor) make duplicates, and complete -> reopen ->
-- complete of the same occurrence, no-ops.
CREATE TABLE recurrence_occurrences (
  series_id        uuid NOT NULL,
  occurrence_index integer NOT NULL,
  task_id          uuid NOT NULL UNIQUE,
  source_task_id   uuid UNIQUE,
  due_date         timestamptz,
  created_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (series_id, occurrence_index)
);
